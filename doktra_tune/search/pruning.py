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
* `ScheduleGroupPruner`: an Optuna pruner that compares a trial only with trials of the same
  schedule (the student's e1 grid: runs of different length decay their learning rate at
  different speeds, so their epoch-t scores are not comparable).

`doktra_tune.search.search_algorithms.build_search` puts them together for one stage.
The private Ray/Optuna names this needs are wrapped in `doktra_tune.ray_compat`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune import Tuner
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from doktra_tune.ray_compat import ASHAWithAccessors, OneBracketHyperBand, OptunaSearchWithPruner, tuner_scheduler

logger = logging.getLogger(__name__)

TIME_ATTR = "training_iteration"  # one Tune result per epoch: the Optuna step is the epoch


@dataclass
class PriorTrial:
    """A trial finished before an interruption, as the resumed study sees it."""

    params: dict[str, Any]
    curve: dict[int, float]  # epoch -> the metric reported then
    state: str  # completed | pruned | errored


class PrunableOptunaSearch(OptunaSearchWithPruner):
    """`OptunaSearch` with a real Optuna pruner and a PRUNED end state for stopped trials."""

    def __init__(self, *args: Any, pruner: optuna.pruners.BasePruner | None = None, **kwargs: Any):
        self._pruned_trials: set[str] = set()
        self._reported: dict[str, dict[int, float]] = {}  # trial id -> step -> value told to Optuna
        super().__init__(*args, pruner=pruner, **kwargs)

    @property
    def pruned_trials(self) -> set[str]:
        """Tune trial ids stopped by a pruner."""
        return set(self._pruned_trials)

    def add_prior_trial(self, prior: PriorTrial, distributions: dict[str, Any]) -> None:
        """Add a finished trial (params, per-epoch values, end state) to the study, with Ray's public
        `add_evaluated_point`. Its intermediate values are indexed by step from 0; the steps here are
        epochs from 1, so step 0 holds NaN (never compared: no trial reports step 0)."""
        params = {k: prior.params[k] for k in distributions if k in prior.params}
        if len(params) != len(distributions):
            return  # not a point of this space (e.g. the grid was edited): nothing to compare with
        steps = {int(k): float(v) for k, v in prior.curve.items() if v is not None and math.isfinite(v)}
        state = prior.state if prior.state in ("completed", "pruned") else "errored"
        if state == "completed" and not steps:
            state = "errored"
        values = [steps.get(step, math.nan) for step in range(max(steps) + 1)] if steps else None
        self.add_evaluated_point(
            params, value=steps[max(steps)] if state == "completed" else None,
            error=state == "errored", pruned=state == "pruned", intermediate_values=values,
        )

    def mark_pruned(self, trial_id: str) -> None:
        """Record that a scheduler stopped `trial_id` early; it ends as `TrialState.PRUNED`."""
        self._pruned_trials.add(trial_id)

    def report(self, trial_id: str, result: dict) -> optuna.Trial | None:
        """Report `result[metric]` at `result[training_iteration]` once per step (idempotent).

        Returns the Optuna trial, or None when the result carries no value for this trial."""
        if isinstance(self.metric, list) or self.is_completed(trial_id):
            return None
        ot_trial = self.optuna_trial(trial_id)
        value = result.get(self.metric)
        step = result.get(TIME_ATTR)
        if ot_trial is None or value is None or step is None:
            return None
        reported = self._reported.setdefault(trial_id, {})
        if int(step) not in reported:
            ot_trial.report(float(value), int(step))
            reported[int(step)] = float(value)
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
        values = self._reported.get(trial_id)
        if not values:
            return result
        return {**(result or {}), self.metric: values[max(values)]}

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._pruned_trials or self.is_completed(trial_id):
            if not error and not self.is_completed(trial_id):
                result = self._with_last_value(trial_id, result)
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        if result:
            self.report(trial_id, result)
        try:
            self.tell_pruned(trial_id)
        except Exception as exc:  # noqa: BLE001 - Ray's own handler logs and goes on likewise
            logger.warning("could not tell Optuna that trial %s was pruned: %s", trial_id, exc)


class _GroupView:
    """A study seen through one schedule group: `get_trials` returns the group's trials only."""

    def __init__(self, study: optuna.Study, key: str, value: Any) -> None:
        self._study = study
        self._key = key
        self._value = value

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[optuna.trial.FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if t.params.get(self._key) == self._value]

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class ScheduleGroupPruner(optuna.pruners.BasePruner):
    """`pruner` judging each trial against the trials that share its `key` (e.g. `epochs`: the same
    linear schedule), never across groups. Works with pruners that read the study's trials through
    `study.get_trials` (Median/Percentile, SuccessiveHalving)."""

    def __init__(self, pruner: optuna.pruners.BasePruner, key: str) -> None:
        self.pruner = pruner
        self.key = key

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        view = _GroupView(study, self.key, trial.params.get(self.key))
        return self.pruner.prune(view, trial)  # type: ignore[arg-type]


class OptunaPrunerScheduler(FIFOScheduler):
    """Tune scheduler that stops a trial when the searcher's Optuna pruner says so.

    Tune calls `scheduler.on_trial_result` before `searcher.on_trial_result` (and not the latter
    at all on STOP), so the value is reported here first; the searcher's own report of the same
    step is then a no-op. No trial is pruned at or after `max_t` (nothing left to save) or on its
    final (`done`) result."""

    def __init__(self, searcher: PrunableOptunaSearch, max_t: int | None = None, horizon_key: str | None = None):
        super().__init__()
        self.searcher = searcher
        self.max_t = max_t
        self.horizon_key = horizon_key  # a config key holding the trial's own horizon (e.g. its e1)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        ot_trial = self.searcher.report(trial.trial_id, result)
        if ot_trial is None or result.get("done"):
            return TrialScheduler.CONTINUE
        horizon = (trial.config or {}).get(self.horizon_key, self.max_t) if self.horizon_key else self.max_t
        if horizon is not None and result[TIME_ATTR] >= horizon:
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


class RecordingASHAScheduler(ASHAWithAccessors):
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
            and result.get(self.time_attr, self.max_t) < self.max_t
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


class SynchronousHalvingScheduler(OneBracketHyperBand):
    """Successive halving with synchronous rungs (Jamieson & Talwalkar, 2016), on Ray's HyperBand.

    One bracket holds every trial of the stage. Rungs sit at grace_period * reduction_factor**k
    epochs, the last one at max_t. A trial reaching a rung pauses (Tune keeps its checkpoint) until
    every trial has reached it; then the best 1/reduction_factor (by `metric`) resume from their
    checkpoints and the rest stop, recorded as pruned. With `group_key` (the student's e1 grid) each
    group of trials sharing that value is its own bracket, with its own horizon (the value). Unlike the asynchronous pruners (Optuna's
    SuccessiveHalving, ASHA, median), no trial goes on just because it started first, so the first
    trials of a grid do not run to the end: 12 trials x 10 epochs with grace 1 and factor 4 cost
    12 + 3 * 3 + 1 * 6 = 27 epochs (22.5 % of the grid). Trials must resume from a checkpoint
    (the stages do, with `save_training_state`), and the Tuner must not cap concurrency with
    `max_concurrent_trials` (paused trials would hold the cap); resources bound it instead."""

    def __init__(
        self, searcher: PrunableOptunaSearch | None, *, num_trials: int, max_t: int, grace_period: int,
        reduction_factor: int, metric: str, mode: str, group_key: str | None = None,
        group_sizes: dict[Any, int] | None = None,
    ):
        super().__init__(
            num_trials=num_trials, max_t=max_t, grace_period=grace_period,
            reduction_factor=reduction_factor, metric=metric, mode=mode, time_attr=TIME_ATTR,
            group_key=group_key, group_sizes=group_sizes,
        )
        self.searcher = searcher
        self._pruned_trials: set[str] = set()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        value = result.get(self.metric_name)
        if value is None or not math.isfinite(float(value)):  # no score (e.g. NaN dev F1): ranks last
            result = {**result, self.metric_name: -math.inf * self.metric_sign}
        return super().on_trial_result(tune_controller, trial, result)

    def on_pruned(self, trial_id: str) -> None:
        self._pruned_trials.add(trial_id)
        if self.searcher is not None:
            self.searcher.mark_pruned(trial_id)

    @property
    def pruned_trials(self) -> set[str]:
        return set(self._pruned_trials)

    def debug_string(self) -> str:
        return f"Synchronous successive halving: {len(self._pruned_trials)} pruned"


def pruned_trial_ids(scheduler: TrialScheduler | Tuner) -> set[str]:
    """Tune trial ids the scheduler stopped early (tag them "pruned", not "failed").

    Pass the scheduler `build_search` returned; after `Tuner.restore(...).fit()` pass the restored
    Tuner instead: Tune then runs the scheduler/searcher unpickled from the experiment, whose
    pruned set (kept in the searcher's saved state) includes trials pruned before the interruption.
    """
    if isinstance(scheduler, Tuner):
        scheduler = tuner_scheduler(scheduler)
    return set(getattr(scheduler, "pruned_trials", set()))
