"""Optuna pruning inside Ray Tune: the bridge Ray's `OptunaSearch` lacks.

Ray's `OptunaSearch` (ray 2.60) creates its study with `optuna.pruners.NopPruner`, reports every
result to the Optuna trial, but nothing ever asks the pruner, and a trial Tune stops early is told
to Optuna as COMPLETE. The bridge, loaded only when `search.pruner` is not `none`
(`build_search` imports it inside the function):

* `PrunableOptunaSearch` (`doktra_tune.search.optuna_searcher`, re-exported here): the stage's
  searcher, an Optuna study with a real pruner on Optuna's public ask/tell API; a trial marked
  pruned ends as `TrialState.PRUNED`.
* `OptunaPrunerScheduler`: a FIFO Tune scheduler that, on every result, makes sure the value is
  reported to the Optuna trial (Tune calls the scheduler *before* the searcher, and skips the
  searcher when the scheduler says STOP), asks `should_prune()`, and returns STOP (recording the
  trial as pruned) when the pruner says so. Pruners "median", "successive_halving", "hyperband".
* `RecordingASHAScheduler`: Tune's `ASHAScheduler` as the alternative pruner ("asha"), recording
  the trials it stops early so they too are tagged "pruned" (and told to Optuna as PRUNED).
* `SynchronousHalvingScheduler` (`doktra_tune.search.synchronous_halving`, re-exported here):
  successive halving with synchronous rungs ("synchronous_halving").
* `ScheduleGroupPruner`: an Optuna pruner that compares a trial only with trials of the same
  schedule (the student's e1 grid: runs of different length decay their learning rate at
  different speeds, so their epoch-t scores are not comparable).

Private Ray/Optuna names: this module uses none. What the whole bridge still needs (3 internal
Ray names, all for synchronous halving) is wrapped in `doktra_tune.ray_compat`, whose docstring
lists them with the reason each stays; `tests/unit/test_ray_compat.py` checks they exist and that no
other module names them.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from doktra_tune.search.optuna_searcher import TIME_ATTR, PriorTrial, PrunableOptunaSearch, pruned_trial_ids
from doktra_tune.search.synchronous_halving import SynchronousHalvingScheduler

__all__ = [
    "OptunaPrunerScheduler", "PriorTrial", "PrunableOptunaSearch", "RecordingASHAScheduler", "ScheduleGroupPruner",
    "SynchronousHalvingScheduler", "TIME_ATTR", "pruned_trial_ids", "pruning_scheduler",
]

logger = logging.getLogger(__name__)


class _GroupView:
    """A study seen through one schedule group: `get_trials` returns the group's trials only; every
    other attribute is the study's (Optuna's SuccessiveHalvingPruner reads its own `_storage`)."""

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


class RecordingASHAScheduler(ASHAScheduler):
    """Tune's `ASHAScheduler` that records the trials it stops before `max_t` as pruned
    (and marks them on the searcher, so Optuna sees them as PRUNED)."""

    def __init__(
        self, *, time_attr: str = TIME_ATTR, max_t: int, searcher: PrunableOptunaSearch | None = None, **kwargs: Any,
    ):
        super().__init__(time_attr=time_attr, max_t=max_t, **kwargs)
        self.time_attr = time_attr  # Ray keeps both in private attributes: our own copies
        self.max_t = max_t
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


def study_pruner(pruner: optuna.pruners.BasePruner, group_key: str | None) -> optuna.pruners.BasePruner:
    """`pruner`, judging each trial only within its schedule group when `group_key` is given."""
    return ScheduleGroupPruner(pruner, group_key) if group_key else pruner


def pruning_scheduler(
    pruner: str, searcher: PrunableOptunaSearch, *, max_t: int, grace_period: int, reduction_factor: int,
    metric: str, mode: str, num_trials: int, group_key: str | None = None,
    group_sizes: dict[Any, int] | None = None,
) -> TrialScheduler:
    """The Tune scheduler that prunes for `pruner` (any but "none")."""
    if pruner == "asha":
        return RecordingASHAScheduler(
            time_attr=TIME_ATTR, metric=metric, mode=mode, max_t=max_t,
            grace_period=grace_period, reduction_factor=reduction_factor, searcher=searcher,
        )
    if pruner == "synchronous_halving":
        return SynchronousHalvingScheduler(
            searcher, num_trials=num_trials, max_t=max_t, grace_period=grace_period,
            reduction_factor=reduction_factor, metric=metric, mode=mode, group_key=group_key,
            group_sizes=group_sizes,
        )
    return OptunaPrunerScheduler(searcher, max_t=max_t, horizon_key=group_key)
