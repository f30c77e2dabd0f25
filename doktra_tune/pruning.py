"""Optuna sampling *and pruning* inside Ray Tune: the bridge Ray's `OptunaSearch` lacks.

Ray's `OptunaSearch` (ray 2.60) creates its study with `optuna.pruners.NopPruner`, reports every
result to the Optuna trial (`trial.report(value, training_iteration)`), but nothing ever asks the
pruner, and a trial Tune stops early is told to Optuna as COMPLETE. The bridge:

* `PrunableOptunaSearch`: an `OptunaSearch` whose study has a real pruner (Median,
  SuccessiveHalving, Hyperband). Reports are idempotent per step, and a trial marked pruned is
  told to Optuna as `TrialState.PRUNED` (not COMPLETE/FAIL). The set of pruned trial ids is part of
  the searcher's state, so it survives `Tuner.restore`.
* `OptunaPrunerScheduler`: a FIFO Tune scheduler that, on every result, makes sure the value is
  reported to the Optuna trial (Tune calls the scheduler *before* the searcher, and skips the
  searcher when the scheduler says STOP), asks `should_prune()`, and returns STOP (recording the
  trial as pruned) when the pruner says so.
* `RecordingASHAScheduler`: Tune's ASHA as the alternative pruner, recording the trials it stops
  early so they too are tagged "pruned" (and told to Optuna as PRUNED).
* `SynchronousHalvingScheduler`: successive halving with synchronous rungs on Ray's HyperBand
  machinery: trials pause at a rung until all have reached it, then the best resume from their
  checkpoints. No trial runs on just for starting first, which is what keeps small grids cheap.
* `build_search` turns a `SearchSpace` into (searcher, scheduler, num_samples): an Optuna
  `GridSampler` over the full product (the paper's exhaustive protocol, Section 4.2) or a seeded
  `TPESampler` with a trial budget.
* `tuned_run_settings` holds the Ray settings that bring the per-trial overhead below 1 s here.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from ray.tune import Tuner
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, HyperBandScheduler, TrialScheduler
from ray.tune.schedulers.hyperband import _Bracket
from ray.tune.search.optuna import OptunaSearch

from doktra_tune.errors import ConfigError
from doktra_tune.search_space import SearchSpace

logger = logging.getLogger(__name__)

PRUNERS = ("median", "successive_halving", "synchronous_halving", "hyperband", "asha", "none")
# Pruners whose scheduler pauses trials at a rung and resumes them later from their checkpoint:
# their trials save the training state with every checkpoint (StageConfig.save_training_state).
PAUSING_PRUNERS = ("synchronous_halving",)
MODES = ("grid", "tpe")
TIME_ATTR = "training_iteration"  # one Tune result per epoch: the Optuna step is the epoch
# What the searcher (TPE) and the pruners rank trials on, reported by the trainables every epoch:
# dev F1 with exact ties broken by the lower dev loss. Small-data runs sit on the same majority-class
# F1 for their first epochs; with plain F1 no pruner can tell those trials apart and none is pruned
# (bench_pruned_vs_grid.py measured 0 of 12). Winners are still chosen on dev F1 (and ECE) by
# analysis.selection, and Tune keeps the best-dev-F1 checkpoint.
SEARCH_METRIC = "search_score"
TIE_BREAK_WEIGHT = 1e-6  # x dev_loss: far below any F1 difference two different predictions make


def search_score(metrics: dict[str, float]) -> float | None:
    """dev_f1 - TIE_BREAK_WEIGHT * dev_loss (None without dev_f1; plain dev_f1 without dev_loss)."""
    f1 = metrics.get("dev_f1")
    if f1 is None or not math.isfinite(f1):
        return None
    loss = metrics.get("dev_loss")
    if loss is None or not math.isfinite(loss):
        return float(f1)
    return float(f1) - TIE_BREAK_WEIGHT * float(loss)


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


@dataclass
class PriorTrial:
    """A trial finished before an interruption, as the resumed study sees it."""

    params: dict[str, Any]
    curve: dict[int, float]  # epoch -> the metric reported then
    state: str  # completed | pruned | errored


class PrunableOptunaSearch(OptunaSearch):
    """`OptunaSearch` with a real Optuna pruner and a PRUNED end state for stopped trials."""

    def __init__(self, *args: Any, pruner: optuna.pruners.BasePruner | None = None, **kwargs: Any):
        self._pruner = pruner or optuna.pruners.NopPruner()
        self._pruned_trials: set[str] = set()
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode: str | list) -> None:
        super()._setup_study(mode)
        # Ray hard-codes NopPruner in `_setup_study`; `trial.should_prune()` reads `study.pruner`.
        self._ot_study.pruner = self._pruner

    @property
    def study(self) -> optuna.Study:
        """The Optuna study (trial states, intermediate values) behind this searcher."""
        return self._ot_study

    @property
    def pruned_trials(self) -> set[str]:
        """Tune trial ids stopped by a pruner."""
        return set(self._pruned_trials)

    def add_prior_trial(self, prior: PriorTrial, distributions: dict[str, Any]) -> None:
        """Add a finished trial (params, per-epoch values, end state) to the study."""
        params = {k: prior.params[k] for k in distributions if k in prior.params}
        if len(params) != len(distributions):
            return  # not a point of this space (e.g. the grid was edited): nothing to compare with
        steps = {int(k): float(v) for k, v in prior.curve.items() if v is not None and math.isfinite(v)}
        state = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(prior.state, TrialState.FAIL)
        if state == TrialState.COMPLETE and not steps:
            state = TrialState.FAIL
        value = steps[max(steps)] if state == TrialState.COMPLETE else None
        self._ot_study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params}, value=value,
            intermediate_values=steps, state=state,
        ))

    def mark_pruned(self, trial_id: str) -> None:
        """Record that a scheduler stopped `trial_id` early; it ends as `TrialState.PRUNED`."""
        self._pruned_trials.add(trial_id)

    def report(self, trial_id: str, result: dict) -> optuna.Trial | None:
        """Report `result[metric]` at `result[training_iteration]` once per step (idempotent).

        Returns the Optuna trial, or None when the result carries no value for this trial."""
        if isinstance(self.metric, list) or trial_id in self._completed_trials:
            return None
        ot_trial = self._ot_trials.get(trial_id)
        value = result.get(self.metric)
        step = result.get(TIME_ATTR)
        if ot_trial is None or value is None or step is None:
            return None
        if step not in ot_trial.storage.get_trial(ot_trial._trial_id).intermediate_values:
            ot_trial.report(float(value), int(step))
        return ot_trial

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.report(trial_id, result)

    def _with_last_value(self, trial_id: str, result: dict | None) -> dict | None:
        """`result`, or its last reported value when Tune ends a trial without one.

        A trial that a scheduler stops while it is paused (synchronous halving stops the trials
        waiting at the final rung) ends with no result; Ray's OptunaSearch would tell Optuna it was
        PRUNED. It finished its epochs: it is COMPLETE with the last value it reported."""
        if isinstance(self.metric, list) or (result and result.get(self.metric) is not None):
            return result
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return result
        values = ot_trial.storage.get_trial(ot_trial._trial_id).intermediate_values
        if not values:
            return result
        return {**(result or {}), self.metric: values[max(values)]}

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._pruned_trials or trial_id in self._completed_trials:
            if not error and trial_id not in self._completed_trials:
                result = self._with_last_value(trial_id, result)
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        ot_trial = self._ot_trials[trial_id]
        if result:
            self.report(trial_id, result)
        try:
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        except Exception as exc:  # noqa: BLE001 - Ray's own handler logs and goes on likewise
            logger.warning("could not tell Optuna that trial %s was pruned: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


class OptunaPrunerScheduler(FIFOScheduler):
    """Tune scheduler that stops a trial when the searcher's Optuna pruner says so.

    Tune calls `scheduler.on_trial_result` before `searcher.on_trial_result` (and not the latter
    at all on STOP), so the value is reported here first; the searcher's own report of the same
    step is then a no-op. No trial is pruned at or after `max_t` (nothing left to save) or on its
    final (`done`) result."""

    def __init__(self, searcher: PrunableOptunaSearch, max_t: int | None = None):
        super().__init__()
        self.searcher = searcher
        self.max_t = max_t

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        ot_trial = self.searcher.report(trial.trial_id, result)
        if ot_trial is None or result.get("done"):
            return TrialScheduler.CONTINUE
        if self.max_t is not None and result[TIME_ATTR] >= self.max_t:
            return TrialScheduler.CONTINUE
        if ot_trial.should_prune():
            logger.info(
                "pruning trial %s at step %s (%s=%s)",
                trial.trial_id, result[TIME_ATTR], self.searcher.metric,
                result.get(self.searcher.metric),
            )
            self.searcher.mark_pruned(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    @property
    def pruned_trials(self) -> set[str]:
        return self.searcher.pruned_trials

    def debug_string(self) -> str:
        return f"Using Optuna pruner {type(self.searcher.study.pruner).__name__}: " \
               f"{len(self.searcher.pruned_trials)} pruned"


class RecordingASHAScheduler(AsyncHyperBandScheduler):
    """`AsyncHyperBandScheduler` that records the trials it stops before `max_t` as pruned
    (and marks them on the searcher, so Optuna sees them as PRUNED)."""

    def __init__(self, *args: Any, searcher: PrunableOptunaSearch | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.searcher = searcher
        self._pruned_trials: set[str] = set()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        stopped_early = (
            decision == TrialScheduler.STOP
            and not result.get("done")
            and result.get(self._time_attr, self._max_t) < self._max_t
        )
        if stopped_early:
            self._pruned_trials.add(trial.trial_id)
            if self.searcher is not None:
                self.searcher.mark_pruned(trial.trial_id)
        return decision

    @property
    def pruned_trials(self) -> set[str]:
        if self.searcher is not None:
            return self._pruned_trials | self.searcher.pruned_trials
        return set(self._pruned_trials)


class _RecordingBracket(_Bracket):
    """Ray's HyperBand bracket that tells `on_pruned` which trials each halving drops."""

    def __init__(self, *args: Any, on_pruned: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_pruned = on_pruned

    def successive_halving(self, metric: str, metric_op: float) -> tuple[list, list]:
        good, bad = super().successive_halving(metric, metric_op)
        for trial in bad:
            self._on_pruned(trial.trial_id)
        return good, bad


class SynchronousHalvingScheduler(HyperBandScheduler):
    """Successive halving with synchronous rungs (Jamieson & Talwalkar, 2016), on Ray's HyperBand.

    One bracket holds every trial of the stage. Rungs sit at grace_period * reduction_factor**k
    epochs, the last one at max_t. A trial reaching a rung pauses (Tune keeps its checkpoint) until
    every trial has reached it; then the best 1/reduction_factor (by `metric`) resume from their
    checkpoints and the rest stop, recorded as pruned. Unlike the asynchronous pruners (Optuna's
    SuccessiveHalving, ASHA, median), no trial goes on just because it started first, so the first
    trials of a grid do not run to the end: 12 trials x 10 epochs with grace 1 and factor 4 cost
    12 + 3 * 3 + 1 * 6 = 27 epochs (22.5 % of the grid). Trials must resume from a checkpoint
    (the stages do, with `save_training_state`), and the Tuner must not cap concurrency with
    `max_concurrent_trials` (paused trials would hold the cap); resources bound it instead."""

    def __init__(
        self, searcher: PrunableOptunaSearch | None, *, num_trials: int, max_t: int, grace_period: int,
        reduction_factor: int, metric: str, mode: str,
    ):
        super().__init__(
            time_attr=TIME_ATTR, metric=metric, mode=mode, max_t=max_t,
            reduction_factor=reduction_factor, stop_last_trials=True,
        )
        self.searcher = searcher
        self._pruned_trials: set[str] = set()
        self._num_trials = num_trials
        self._grace_period = grace_period
        halvings, rung = 0, grace_period
        while rung < max_t:
            rung *= reduction_factor
            halvings += 1
        self._halvings = halvings
        self._hyperbands = [[]]

    def _new_bracket(self) -> _Bracket:
        return _RecordingBracket(
            time_attr=self._time_attr, max_trials=self._num_trials, init_t_attr=self._grace_period,
            max_t_attr=self._max_t_attr, eta=self._eta, s=self._halvings, stop_last_trials=True,
            on_pruned=self._record_pruned,
        )

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if not self._metric or not self._metric_op:
            raise ValueError(f"{type(self).__name__} needs metric and mode")
        band = self._hyperbands[0]
        if not band or band[-1].filled():
            band.append(self._new_bracket())  # more trials than announced: a further bracket
        band[-1].add_trial(trial)
        self._trial_info[trial] = band[-1], 0

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        value = result.get(self._metric)
        if value is None or not math.isfinite(float(value)):  # no score (e.g. NaN dev F1): ranks last
            result = {**result, self._metric: -math.inf * self._metric_op}
        return super().on_trial_result(tune_controller, trial, result)

    def _record_pruned(self, trial_id: str) -> None:
        self._pruned_trials.add(trial_id)
        if self.searcher is not None:
            self.searcher.mark_pruned(trial_id)

    @property
    def pruned_trials(self) -> set[str]:
        return set(self._pruned_trials)

    def debug_string(self) -> str:
        return f"Synchronous successive halving: {len(self._pruned_trials)} pruned"


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
    """
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
    distributions = {
        name: CategoricalDistribution(list(values)) for name, values in space.params.items()
    }
    grid_size = math.prod(len(values) for values in space.params.values())
    if mode == "grid":
        if num_samples is not None and num_samples != grid_size:
            logger.info(
                "mode=grid runs all %d points of the %s grid; num_samples=%s is ignored "
                "(use mode=tpe for a budget)", grid_size, space.stage, num_samples,
            )
        sampler: optuna.samplers.BaseSampler = _TuneGridSampler(
            {name: list(values) for name, values in space.params.items()}, seed=seed
        )
        num_samples = grid_size
    else:
        if num_samples is None or num_samples < 1:
            raise ConfigError(
                f"mode=tpe needs a trial budget, got num_samples={num_samples}; "
                "set num_samples to an integer >= 1"
            )
        sampler = optuna.samplers.TPESampler(seed=seed)

    if points is not None:
        num_samples = len(points)
    searcher = PrunableOptunaSearch(
        distributions,
        metric=metric,
        mode=mode_opt,
        points_to_evaluate=list(points) if points else None,
        sampler=sampler,
        study_name=f"doktra-{space.stage}",
        pruner=make_pruner(
            pruner, max_t=max_t, grace_period=grace_period,
            n_startup_trials=n_startup_trials, reduction_factor=reduction_factor,
        ),
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
            reduction_factor=reduction_factor, metric=metric, mode=mode_opt,
        )
    elif pruner == "none":
        scheduler = FIFOScheduler()
    else:
        scheduler = OptunaPrunerScheduler(searcher, max_t=max_t)
    return searcher, scheduler, num_samples


def pruned_trial_ids(scheduler: TrialScheduler | Tuner) -> set[str]:
    """Tune trial ids the scheduler stopped early (tag them "pruned", not "failed").

    Pass the scheduler `build_search` returned; after `Tuner.restore(...).fit()` pass the restored
    Tuner instead: Tune then runs the scheduler/searcher unpickled from the experiment, whose
    pruned set (kept in the searcher's saved state) includes trials pruned before the interruption.
    """
    if isinstance(scheduler, Tuner):
        # Tuner keeps the live TuneConfig on its local tuner (no public accessor in ray 2.60).
        local = getattr(scheduler, "_local_tuner", None)
        config = getattr(local, "_tune_config", None)
        scheduler = getattr(config, "scheduler", None)
    return set(getattr(scheduler, "pruned_trials", set()))


def tuned_run_settings(num_cpus: int | None = None) -> dict[str, dict[str, Any]]:
    """Ray settings that cut the per-trial overhead of short trials (bench_ray_overhead.py).

    Returns {"env": environment variables to set before `Tuner.fit` (best: before importing ray),
    "init": `ray.init` keyword arguments, "tune_config": `tune.TuneConfig` keyword arguments,
    "run_config": `tune.RunConfig` keyword arguments}.

    * reuse_actors: one trial actor runs trial after trial instead of a new process each time.
    * TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1 + callbacks=[JsonLoggerCallback()]: of Tune's three
      default per-trial loggers only the JSON one is kept (its result.json backs
      `Result.metrics_dataframe`, the per-epoch history); no CSV, no TensorBoard. Add your own
      callbacks to that list, do not replace it. RAY_AIR_NEW_OUTPUT=0 + verbose=0: no console
      reporter work.
    * TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0: no warning each time
      `CheckpointConfig(num_to_keep=1)` forces an experiment snapshot (expected here).
    * TUNE_MAX_PENDING_TRIALS_PG=1: no placement groups requested ahead for trials that cannot run.
    * TUNE_GLOBAL_CHECKPOINT_S is left at "auto" on purpose: a longer period measured no faster
      here, and Tune does not save the experiment state when a trial ends, so a long period could
      lose finished trials on `kill -9` before `Tuner.restore`.
    * ray.init: dashboard and usage stats off, worker logs not streamed to the driver.
    """
    init: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if num_cpus is not None:
        init["num_cpus"] = num_cpus
    return {
        "env": {
            "RAY_AIR_NEW_OUTPUT": "0",
            "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
            "TUNE_MAX_PENDING_TRIALS_PG": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
        },
        "init": init,
        "tune_config": {"reuse_actors": True},
        "run_config": {"verbose": 0, "callbacks": [JsonLoggerCallback()]},
    }
