"""Searcher, scheduler and trial count of one stage's Tuner (Section 4.2's grid search and beyond):
an Optuna `GridSampler` over the full product of the stage's grid (the paper's exhaustive protocol)
or a seeded `TPESampler` with a trial budget, and the pruner the config names."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from doktra_tune.errors import ConfigError
from doktra_tune.search.pruning import (
    TIME_ATTR,
    OptunaPrunerScheduler,
    PriorTrial,
    PrunableOptunaSearch,
    RecordingASHAScheduler,
    ScheduleGroupPruner,
    SynchronousHalvingScheduler,
)
from doktra_tune.search.schema import MODES, PRUNERS, check_schedule_grouping
from doktra_tune.search_space import SearchSpace
from doktra_tune.stages.step_losses import switch_epoch

logger = logging.getLogger(__name__)


class _TuneGridSampler(optuna.samplers.GridSampler):
    """`GridSampler` driven by Tune's ask/tell loop rather than `study.optimize`.

    Optuna's `after_trial` calls `study.stop()` once the grid is exhausted, which raises outside
    `study.optimize`; here Tune's `num_samples` (= the grid size) ends the search instead. Trial
    numbers below the grid size map to grid points in order, so the first `grid_size` trials visit
    every point exactly once, even when several run at the same time. The order is the plain
    product of the grids (parameters sorted by name, values as listed), not Optuna's seeded
    shuffle, so a grid search runs in the same order for every seed."""

    def __init__(self, search_space: dict[str, list], seed: int | None = None) -> None:
        super().__init__(search_space, seed=seed)
        self._all_grids = list(itertools.product(*self._search_space.values()))

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001
        return None


def make_pruner(
    name: str, *, max_t: int, grace_period: int = 1, n_startup_trials: int = 2,
    reduction_factor: int = 3,
) -> optuna.pruners.BasePruner:
    """The Optuna pruner called `name`; `grace_period` is the first step at which it may prune."""
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=n_startup_trials, n_warmup_steps=max(0, grace_period - 1)
        )
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=grace_period, reduction_factor=reduction_factor
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=grace_period, max_resource=max_t, reduction_factor=reduction_factor
        )
    if name in ("none", "asha", "synchronous_halving"):
        return optuna.pruners.NopPruner()  # a Tune scheduler prunes (ASHA, synchronous halving)
    raise ConfigError(f"unknown pruner {name!r}; use one of {', '.join(PRUNERS)}")


def build_search(
    space: SearchSpace,
    *,
    mode: str,
    num_samples: int | None,
    pruner: str,
    metric: str = "dev_f1",
    mode_opt: str = "max",
    max_t: int,
    seed: int,
    grace_period: int = 1,
    n_startup_trials: int = 2,
    reduction_factor: int = 3,
    points: list[dict[str, Any]] | None = None,
    prior_trials: list[PriorTrial] | None = None,
    group_key: str | None = None,
) -> tuple[PrunableOptunaSearch, TrialScheduler, int]:
    """Searcher, scheduler and trial count for one stage (Section 4.2's grid search and beyond).

    mode "grid": Optuna GridSampler over the full product of `space.params`; num_samples is the
    grid size (a given `num_samples` is ignored). mode "tpe": TPESampler(seed) with
    `num_samples` trials. `pruner` "median" | "successive_halving" | "hyperband" plug the Optuna
    pruner into the study and stop trials through `OptunaPrunerScheduler`; "asha" uses Tune's ASHA;
    "synchronous_halving" pauses trials at each rung (`SynchronousHalvingScheduler`: trials need
    save_training_state and no max_concurrent_trials); "none" runs every trial to the end. Pass `metric`/`mode_opt` here, not to `tune.TuneConfig`
    (Ray refuses both). `space.fixed` is not sampled: put it in the Tuner's `param_space`.

    Resuming an interrupted stage: `points` (grid points still to run) are enqueued and are the
    whole search (num_samples = len(points)); `prior_trials` (the trials finished before the
    interruption) are added to the study with their per-epoch values first, so the pruner compares
    the new trials with them (the median pruner fully; successive halving / hyperband rungs start
    empty, so they prune less, never more) and TPE learns from them.

    `group_key` (the student's `epochs` when e1 is searched): trials are compared only with trials
    of the same value, i.e. the same learning-rate schedule (`ScheduleGroupPruner`; synchronous
    halving runs one bracket per value). Hyperband and ASHA cannot be restricted that way.
    """
    _check_arguments(mode, pruner, mode_opt, max_t, grace_period)
    check_schedule_grouping(group_key, pruner, mode)
    distributions = {name: CategoricalDistribution(list(values)) for name, values in space.params.items()}
    sampler, num_samples = _sampler(space, mode, num_samples, seed)
    if points is not None:
        num_samples = len(points)
    optuna_pruner = make_pruner(
        pruner, max_t=max_t, grace_period=grace_period, n_startup_trials=n_startup_trials,
        reduction_factor=reduction_factor,
    )
    searcher = PrunableOptunaSearch(
        distributions,
        metric=metric,
        mode=mode_opt,
        points_to_evaluate=list(points) if points else None,
        sampler=sampler,
        study_name=f"doktra-{space.stage}",
        pruner=ScheduleGroupPruner(optuna_pruner, group_key) if group_key else optuna_pruner,
    )
    for prior in prior_trials or []:
        searcher.add_prior_trial(prior, distributions)
    scheduler: TrialScheduler
    if pruner == "asha":
        scheduler = RecordingASHAScheduler(
            time_attr=TIME_ATTR, metric=metric, mode=mode_opt, max_t=max_t,
            grace_period=grace_period, reduction_factor=reduction_factor, searcher=searcher,
        )
    elif pruner == "synchronous_halving":
        scheduler = SynchronousHalvingScheduler(
            searcher, num_trials=num_samples, max_t=max_t, grace_period=grace_period,
            reduction_factor=reduction_factor, metric=metric, mode=mode_opt, group_key=group_key,
            group_sizes=_group_sizes(space, group_key, points) if group_key else None,
        )
    elif pruner == "none":
        scheduler = FIFOScheduler()
    else:
        scheduler = OptunaPrunerScheduler(searcher, max_t=max_t, horizon_key=group_key)
    return searcher, scheduler, num_samples


def _group_sizes(space: SearchSpace, key: str, points: list[dict[str, Any]] | None) -> dict[Any, int]:
    """Trials per value of `key`: of the grid, or of the points still to run after a resume."""
    if points is not None:
        sizes: dict[Any, int] = {}
        for point in points:
            sizes[point[key]] = sizes.get(point[key], 0) + 1
        return sizes
    per_value = space.grid_size // len(space.params[key])
    return {value: per_value for value in space.params[key]}


def _check_arguments(mode: str, pruner: str, mode_opt: str, max_t: int, grace_period: int) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    if pruner not in PRUNERS:
        raise ConfigError(f"unknown pruner {pruner!r}; use one of {', '.join(PRUNERS)}")
    if mode_opt not in ("max", "min"):
        raise ConfigError(f"unknown optimisation mode {mode_opt!r}; use max or min")
    if not isinstance(max_t, int) or max_t < 1:
        raise ConfigError(f"max_t={max_t!r} must be an integer >= 1; pass the stage's epochs")
    if not isinstance(grace_period, int) or not 1 <= grace_period <= max_t:
        raise ConfigError(
            f"grace_period={grace_period!r} must be an integer in [1, max_t={max_t}]; "
            "use e.g. grace_period=1"
        )


def _sampler(space: SearchSpace, mode: str, num_samples: int | None, seed: int) -> tuple[optuna.samplers.BaseSampler, int]:
    """(sampler, trial count): the whole grid in order (mode grid), or TPE with a budget."""
    if mode == "grid":
        if num_samples is not None and num_samples != space.grid_size:
            logger.info(
                "mode=grid runs all %d points of the %s grid; num_samples=%s is ignored "
                "(use mode=tpe for a budget)", space.grid_size, space.stage, num_samples,
            )
        return _TuneGridSampler({name: list(values) for name, values in space.params.items()}, seed=seed), \
            space.grid_size
    if num_samples is None or num_samples < 1:
        raise ConfigError(
            f"mode=tpe needs a trial budget, got num_samples={num_samples}; "
            "set num_samples to an integer >= 1"
        )
    return optuna.samplers.TPESampler(seed=seed), num_samples


def pruning_grace_period(stage: str, grace_period: int, max_t: int, space: SearchSpace, base: dict[str, Any]) -> int:
    """First epoch at which a pruner may judge a trial of `stage` (search.grace_period, <= max_t).

    ABD trials fit Eq. 5 until epoch int(gamma * e2) and only then train the classifier on
    CE - beta2 * H (Algorithm 1 line 3). Until every gamma of the grid has switched, dev F1 compares
    trials in different phases and would prune the larger gammas for it, so ABD pruning starts at
    max over the grid of int(gamma * e2) + 1, the first epoch in which every trial refines."""
    grace = min(grace_period, max_t)
    if stage != "abd":
        return grace
    gammas = space.params.get("gamma") or [space.fixed.get("gamma", base.get("gamma", 1.0))]
    first_refining = max(switch_epoch(max_t, float(g)) for g in gammas) + 1
    return min(max(grace, first_refining), max_t)
