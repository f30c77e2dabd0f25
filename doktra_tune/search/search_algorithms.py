"""Searcher, scheduler and trial count of one stage's Tuner (Section 4.2's grid search and beyond).

The default, the paper's exhaustive grid without a pruner (`search.mode=grid`, `search.pruner=none`),
is plain Tune: every grid point a `RunSpec`, the points a `tune.grid_search` in order
(`specs.run_grid`), no searcher, Tune's FIFO scheduler; Optuna is not imported (`uses_optuna`). An
Optuna study exists only when a sampler (TPE) or a pruner is asked for: `build_search` then gives
the stage a study (every grid point enqueued in order, or a seeded `TPESampler` with a trial budget)
and the pruner the config names. `doktra_tune.search.pruning` (and through it
`doktra_tune.ray_compat`) is imported only when a pruner is configured."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from doktra_tune.errors import ConfigError
from doktra_tune.plan.schema import MODES, PRUNERS, check_schedule_grouping
from doktra_tune.search_space import SearchSpace
from doktra_tune.stages.step_losses import switch_epoch

if TYPE_CHECKING:
    import optuna

    from doktra_tune.search.optuna_searcher import PriorTrial, PrunableOptunaSearch

logger = logging.getLogger(__name__)


def uses_optuna(mode: str, pruner: str) -> bool:
    """Whether a stage needs an Optuna study: a sampler (TPE) or a pruner; the plain grid does not."""
    return mode != "grid" or pruner != "none"


def quiet_optuna() -> Any:
    """The `optuna` module, imported on first use, its per-trial INFO lines silenced."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def grid_queue(space: SearchSpace, points: list[dict[str, Any]] | None, num_samples: int | None) -> list[dict[str, Any]]:
    """The points a grid stage runs, in order: every point of the grid, or after an interruption the
    `points` still to run (a `num_samples` other than the grid size is ignored, and said so)."""
    if num_samples is not None and num_samples != space.grid_size:
        logger.info("mode=grid runs all %d points of the %s grid; num_samples=%s is ignored (use mode=tpe for a "
                    "budget)", space.grid_size, space.stage, num_samples)
    return list(points) if points is not None else space.points()

OPTUNA_PRUNERS = ("median", "successive_halving", "hyperband")  # the pruners the Optuna study itself runs


def make_pruner(
    name: str, *, max_t: int, grace_period: int = 1, n_startup_trials: int = 2,
    reduction_factor: int = 3,
) -> optuna.pruners.BasePruner:
    """The Optuna pruner called `name`; `grace_period` is the first step at which it may prune."""
    optuna = quiet_optuna()
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

    mode "grid": every point of the full product of `space.params`, in order; num_samples is the
    grid size (a given `num_samples` is ignored). mode "tpe": TPESampler(seed) with
    `num_samples` trials. `pruner` "median" | "successive_halving" | "hyperband" plug the Optuna
    pruner into the study and stop trials through `OptunaPrunerScheduler`; "asha" uses Tune's ASHA;
    "synchronous_halving" pauses trials at each rung (`SynchronousHalvingScheduler`: trials need
    save_training_state and no max_concurrent_trials); "none" runs every trial to the end. Pass
    `metric`/`mode_opt` here, not to `tune.TuneConfig` (Ray refuses both). `space.fixed` is not
    sampled: put it in the Tuner's `param_space`.

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
    sampler, num_samples, queue = _sampler(space, mode, num_samples, seed, points)
    searcher = _searcher(
        space, sampler, queue, prior_trials, metric=metric, mode_opt=mode_opt, pruner=pruner, group_key=group_key,
        optuna_pruner=make_pruner(pruner, max_t=max_t, grace_period=grace_period,
                                  n_startup_trials=n_startup_trials, reduction_factor=reduction_factor),
    )
    if pruner == "none":
        return searcher, FIFOScheduler(), num_samples
    from doktra_tune.search.pruning import (
        pruning_scheduler,  # the pruners: loaded only when one is on
    )

    scheduler = pruning_scheduler(
        pruner, searcher, max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor,
        metric=metric, mode=mode_opt, num_trials=num_samples, group_key=group_key,
        group_sizes=_group_sizes(space, group_key, points) if group_key and pruner == "synchronous_halving" else None,
    )
    return searcher, scheduler, num_samples


def _searcher(
    space: SearchSpace, sampler: optuna.samplers.BaseSampler, queue: list[dict[str, Any]] | None,
    prior_trials: list[PriorTrial] | None, *, metric: str, mode_opt: str, pruner: str, group_key: str | None,
    optuna_pruner: optuna.pruners.BasePruner,
) -> PrunableOptunaSearch:
    """The stage's Optuna study as a Tune searcher: `queue` enqueued, then `prior_trials` added."""
    from optuna.distributions import CategoricalDistribution

    from doktra_tune.search.optuna_searcher import PrunableOptunaSearch

    if group_key and pruner in OPTUNA_PRUNERS:
        from doktra_tune.search.pruning import study_pruner

        optuna_pruner = study_pruner(optuna_pruner, group_key)
    distributions = {name: CategoricalDistribution(list(values)) for name, values in space.params.items()}
    searcher = PrunableOptunaSearch(
        distributions, metric=metric, mode=mode_opt, points_to_evaluate=queue, sampler=sampler,
        study_name=f"doktra-{space.stage}", pruner=optuna_pruner,
    )
    for prior in prior_trials or []:
        searcher.add_prior_trial(prior, distributions)
    return searcher


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


def _sampler(
    space: SearchSpace, mode: str, num_samples: int | None, seed: int, points: list[dict[str, Any]] | None,
) -> tuple[optuna.samplers.BaseSampler, int, list[dict[str, Any]] | None]:
    """(sampler, trial count, points to enqueue). Grid: the whole grid enqueued in order (or, after
    an interruption, the `points` still to run), so trial k runs point k even when several run at
    once; its seeded `RandomSampler` is never asked, as Tune's num_samples ends the search with the
    queue. TPE: a seeded `TPESampler` with a budget (`points`, when given, enqueued first)."""
    optuna = quiet_optuna()
    if mode == "grid":
        queue = grid_queue(space, points, num_samples)
        return optuna.samplers.RandomSampler(seed=seed), len(queue), queue
    if num_samples is None or num_samples < 1:
        raise ConfigError(
            f"mode=tpe needs a trial budget, got num_samples={num_samples}; "
            "set num_samples to an integer >= 1"
        )
    return optuna.samplers.TPESampler(seed=seed), len(points) if points is not None else num_samples, \
        list(points) if points else None


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
