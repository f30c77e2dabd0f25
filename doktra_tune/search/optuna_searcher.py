"""One stage's Optuna study driven by Tune: a `Searcher` on Optuna's public ask/tell API.

Ray's `OptunaSearch` builds its study with a hard-coded `NopPruner` and keeps the study and its
trials in private attributes, so a pruner (and a PRUNED end state) needs its internals. This
searcher owns its study instead and speaks to it through Optuna's public API only:
`optuna.create_study`, `study.enqueue_trial`, `study.ask(fixed_distributions)`,
`trial.report`, `study.tell`, `optuna.trial.create_trial` + `study.add_trial`. It tells Optuna
exactly what Ray's `OptunaSearch` (ray 2.60) told it: the same asks, reports and tells, in the
same order, so the study sees the same trials, values and states.

On top of Ray's behaviour:

* the study has a real pruner (`pruner`); `doktra_tune.search.pruning` asks it from a scheduler;
* reports are idempotent per step (a scheduler reports a result before Tune hands it to the
  searcher; the second report of the same step is a no-op);
* a trial marked pruned (`mark_pruned`) ends as `TrialState.PRUNED`, not COMPLETE/FAIL; the set of
  pruned trial ids is part of the searcher's saved state, so it survives `Tuner.restore`;
* a trial Tune ends without a result (a scheduler stopped it while paused at its final rung) is
  COMPLETE with the last value it reported.

This module names no private Ray/Optuna attribute and is what the default path (`pruner=none`)
loads; the pruners live in `doktra_tune.search.pruning`, imported only when one is configured.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import pickle
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune import Tuner
from ray.tune.search import Searcher

logger = logging.getLogger(__name__)

TIME_ATTR = "training_iteration"  # one Tune result per epoch: the Optuna step is the epoch


@dataclass
class PriorTrial:
    """A trial finished before an interruption, as the resumed study sees it."""

    params: dict[str, Any]
    curve: dict[int, float]  # epoch -> the metric reported then
    state: str  # completed | pruned | errored


class PrunableOptunaSearch(Searcher):
    """Tune searcher over an Optuna study with a real pruner and a PRUNED end state.

    `space`: Optuna distributions by parameter name; `points_to_evaluate` are enqueued in order
    (grid mode enqueues every grid point, so trial k runs point k); `sampler` picks the rest."""

    def __init__(
        self, space: dict[str, optuna.distributions.BaseDistribution], *, metric: str, mode: str,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        sampler: optuna.samplers.BaseSampler | None = None, study_name: str | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space = dict(space)
        self.study = optuna.create_study(
            sampler=sampler, pruner=pruner or optuna.pruners.NopPruner(), study_name=study_name or "optuna",
            direction="minimize" if mode == "min" else "maximize",
        )
        for point in points_to_evaluate or []:
            self.study.enqueue_trial(point)
        self.trials: dict[str, optuna.Trial] = {}  # Tune trial id -> the Optuna trial asked for it
        self.completed: set[str] = set()  # Tune trial ids already told to Optuna
        self.pruned: set[str] = set()  # Tune trial ids stopped by a pruner
        self.reported: dict[str, dict[int, float]] = {}  # trial id -> step -> value told to Optuna

    @property
    def pruned_trials(self) -> set[str]:
        """Tune trial ids stopped by a pruner."""
        return set(self.pruned)

    def mark_pruned(self, trial_id: str) -> None:
        """Record that a scheduler stopped `trial_id` early; it ends as `TrialState.PRUNED`."""
        self.pruned.add(trial_id)

    def add_prior_trial(self, prior: PriorTrial, distributions: dict[str, Any]) -> None:
        """Add a finished trial (params, per-epoch values, end state) to the study, as Ray's
        `add_evaluated_point` did. Its intermediate values are indexed by step from 0; the steps
        here are epochs from 1, so step 0 holds NaN (never compared: no trial reports step 0)."""
        params = {k: prior.params[k] for k in distributions if k in prior.params}
        if len(params) != len(distributions):
            return  # not a point of this space (e.g. the grid was edited): nothing to compare with
        steps = {int(k): float(v) for k, v in prior.curve.items() if v is not None and math.isfinite(v)}
        state = prior.state if prior.state in ("completed", "pruned") else "errored"
        if state == "completed" and not steps:
            state = "errored"
        values = [steps.get(step, math.nan) for step in range(max(steps) + 1)] if steps else None
        ot_state = {"completed": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
                    "errored": optuna.trial.TrialState.FAIL}[state]
        self.study.add_trial(optuna.trial.create_trial(
            state=ot_state, value=steps[max(steps)] if state == "completed" else None, params=params,
            distributions=self.space, intermediate_values=dict(enumerate(values)) if values else None,
        ))

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self.trials:
            self.trials[trial_id] = self.study.ask(fixed_distributions=self.space)
        return dict(self.trials[trial_id].params)

    def report(self, trial_id: str, result: dict) -> optuna.Trial | None:
        """Report `result[metric]` at `result[training_iteration]` once per step (idempotent).

        Returns the Optuna trial, or None when the result carries no value for this trial."""
        if trial_id in self.completed:
            return None
        ot_trial = self.trials.get(trial_id)
        value = result.get(self.metric)
        step = result.get(TIME_ATTR)
        if ot_trial is None or value is None or step is None:
            return None
        reported = self.reported.setdefault(trial_id, {})
        if int(step) not in reported:
            ot_trial.report(float(value), int(step))
            reported[int(step)] = float(value)
        return ot_trial

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.completed:
            return
        if trial_id in self.pruned:
            if result:
                self.report(trial_id, result)
            self._tell(trial_id, None, optuna.trial.TrialState.PRUNED)
            return
        if not error:
            result = self._with_last_value(trial_id, result)
        value = result.get(self.metric) if result else None
        if value is not None:
            state = optuna.trial.TrialState.COMPLETE
        else:  # what Ray's OptunaSearch tells for a trial that ended without a value
            state = optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.PRUNED
        self._tell(trial_id, value, state)

    def _tell(self, trial_id: str, value: float | None, state: optuna.trial.TrialState) -> None:
        try:
            self.study.tell(self.trials[trial_id], value, state=state)
        except Exception as exc:  # noqa: BLE001 - e.g. a NaN value; Ray's OptunaSearch logs and goes on likewise
            logger.warning("could not tell Optuna how trial %s ended: %s", trial_id, exc)
        self.completed.add(trial_id)

    def _with_last_value(self, trial_id: str, result: dict | None) -> dict | None:
        """`result`, or its last reported value when Tune ends a trial without one.

        A trial that a scheduler stops while it is paused (synchronous halving stops the trials
        waiting at the final rung) ends with no result; Ray's OptunaSearch would tell Optuna it was
        PRUNED. It finished its epochs: it is COMPLETE with the last value it reported."""
        if result and result.get(self.metric) is not None:
            return result
        values = self.reported.get(trial_id)
        if not values:
            return result
        return {**(result or {}), self.metric: values[max(values)]}

    def save(self, checkpoint_path: str) -> None:
        """Tune saves the searcher with the experiment (`Searcher.save_to_dir`): the whole state,
        study and pruned set included."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__.copy(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def saved_pruned_trials(experiment_path: str) -> set[str]:
    """The pruned set in the newest searcher state Tune saved under `experiment_path` (the file
    `Searcher.save_to_dir` writes, named by `Searcher.CKPT_FILE_TMPL`; empty without one)."""
    paths = glob.glob(os.path.join(experiment_path, Searcher.CKPT_FILE_TMPL.format("*")))
    if not paths:
        return set()
    with open(max(paths), "rb") as f:  # the names end in the session's start time: max is the newest
        state = pickle.load(f)
    return set(state.get("pruned", set())) if isinstance(state, dict) else set()


def pruned_trial_ids(scheduler: Any) -> set[str]:
    """Tune trial ids the scheduler stopped early (tag them "pruned", not "failed").

    Pass the scheduler `build_search` returned; after `Tuner.restore(...).fit()` pass the restored
    Tuner instead: the pruned set is then read from the searcher state Tune saved with the
    experiment, which includes trials pruned before the interruption."""
    if isinstance(scheduler, Tuner):
        return saved_pruned_trials(scheduler.get_results().experiment_path)
    return set(getattr(scheduler, "pruned_trials", set()))
