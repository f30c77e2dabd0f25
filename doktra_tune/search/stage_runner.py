"""One stage = one Tuner: fit it, resume it after an interruption, collect its trials.

A `StageSpec` says what to run (trainable, its fixed kwargs, the param space, searcher and
scheduler, trial count). The runner builds specs through a `SpecBuilder`, called with the trials
an interrupted run of the same stage already finished (none the first time), so the builder decides
what is left to run (the missing grid points, the rest of a TPE budget, the missing run specs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ray import tune

from doktra_tune.cluster.ray_session import RAY_SETTINGS, Resources
from doktra_tune.search.progress import StageProgress
from doktra_tune.search.trial_tracking import TrialTracking
from doktra_tune.search.trials import (
    TrialRecord,
    collect_trials,
    experiment_trial_states,
)
from doktra_tune.stages.checkpointing import TRAINING_STATE_FILE
from doktra_tune.tracking import SearchTracker

log = logging.getLogger(__name__)


@dataclass
class StageSpec:
    name: str  # Tune experiment name (ray/<name>)
    trainable: Callable[..., None]
    trainable_kwargs: dict[str, Any]
    param_space: dict[str, Any]
    max_t: int  # epochs of a full trial
    search_alg: Any = None
    scheduler: Any = None
    num_samples: int = 1
    pruner_on: bool = False  # a trial that ran fewer epochs than its horizon was pruned
    keep: str = "last"  # the checkpoint Tune keeps per trial: "last" (its model) or "best" (by dev F1)


SpecBuilder = Callable[[list[TrialRecord]], StageSpec]
_REGISTRY_LOCK = threading.Lock()  # Tune's trainable registry, shared by the Tuners of one process
CANCELLED_FILE = "cancelled_trials.json"  # in an experiment's folder: trials stopped by a cancel, not finished


class Cancel(tune.Stopper):
    """Stops a Tuner's trials once `event` is set (the driver cancels a Tuner it runs beside another).
    `finished`: the trials that ended before the cancel; every other trial the Tuner started is
    cancelled, so a resumed stage runs it again (Tune marks a stopped trial TERMINATED, as it does a
    finished one, and a trial stopped before its first result has no metrics at all)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.started: set[str] = set()
        self.finished: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles its stopper with the experiment: a restored one never cancels

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.event, self.started, self.finished = threading.Event(), set(), set()

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.event.is_set()

    def cancelled(self) -> list[str]:
        """The trials the cancel stopped (none if it never came)."""
        return sorted(self.started - self.finished) if self.event.is_set() else []


class WatchCancel(tune.Callback):
    """Tells `Cancel` which trials started and which ended before the cancel."""

    def __init__(self, cancel: Cancel) -> None:
        self.cancel = cancel

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.cancel.started.add(str(trial.trial_id))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.cancel.event.is_set():
            self.cancel.finished.add(str(trial.trial_id))

    on_trial_error = on_trial_complete


class DropTrainingState(tune.Callback):
    """A trial that has ended never resumes: its checkpoint's training state (optimizer moments, RNG;
    twice the model's size) goes at once, so a stage holds at most one per running trial."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.path:
            for state in Path(trial.path).glob(f"checkpoint_*/{TRAINING_STATE_FILE}"):
                state.unlink(missing_ok=True)


def checkpoint_config(keep: str) -> tune.CheckpointConfig:
    """One checkpoint per trial: the latest ("last": the trial's model after its last epoch) or the
    best by dev F1 ("best"). Tune also keeps the latest while a trial runs, so it can resume."""
    if keep == "best":
        return tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="dev_f1", checkpoint_score_order="max")
    return tune.CheckpointConfig(num_to_keep=1)


class StageRunner:
    """Runs stage Tuners under `<run_dir>/ray/` with the session's resources and settings."""

    def __init__(
        self, run_dir: Path, resources: Resources, tracker: SearchTracker, *, max_failures: int,
    ) -> None:
        self.storage = run_dir / "ray"
        self.resources = resources
        self.tracker = tracker
        self.max_failures = max_failures

    def _trainable(self, spec: StageSpec) -> str:
        """The stage's trainable, registered under the name Tune would give it. Registered here, under
        a lock, because Tune's registry is not thread-safe and two Tuners start in one process when the
        final runs go beside ABD (`final.beside_abd`); a Tuner given the name registers nothing."""
        trainable = tune.with_resources(
            tune.with_parameters(spec.trainable, **spec.trainable_kwargs), self.resources.per_trial
        )
        name = tune.Experiment.get_trainable_name(trainable)
        with _REGISTRY_LOCK:
            tune.register_trainable(name, trainable)
        return name

    def run(self, label: str, build: SpecBuilder, *, cancel: threading.Event | None = None,
            continues: str | None = None) -> list[TrialRecord]:
        """Run stage `label`; after an interruption, keep the finished trials and run the rest.
        `cancel`: once set, the Tuner stops (its unfinished trials run again on a resume);
        `continues`: what an earlier experiment of the same name was, when it is expected (the
        final stage's teacher and student runs, run beside ABD), for the line that keeps its trials.

        Resume: `Tuner.can_restore` finds the interrupted experiment, `Tuner.restore(...,
        resume_errored=False, restart_errored=False).get_results()` reads its trials; trials that
        had finished (TERMINATED or ERROR in the experiment state) are kept as they are, and a new
        experiment `<stage>-resume<k>` runs only what `build(finished trials)` says is missing.
        Restarting the interrupted experiment itself with `fit()` is avoided: with a searcher,
        Ray 2.60 re-suggests the unfinished trial's point and then waits forever on the stale one.
        """
        spec = build([])
        prior: list[TrialRecord] = []
        name, attempt = spec.name, 0
        while tune.Tuner.can_restore(str(self.storage / name)):
            prior += self._finished_trials(self.storage / name, spec)
            attempt += 1
            name = f"{spec.name}-resume{attempt}"
        if attempt:
            log.info(
                f"[{label}] {continues or 'resuming the interrupted stage'} from {self.storage / spec.name}: "
                f"{len(prior)} finished trial(s) kept"
            )
            spec = dataclasses.replace(build(prior), name=name)
        records, cancelled = list(prior), []
        if spec.num_samples > 0:
            fitted, cancelled = self._fit(spec, label, cancel)
            records += fitted
        self.tracker.record_outcomes(label, {**{r.trial_id: r.status for r in records},
                                             **{trial_id: "cancelled" for trial_id in cancelled}})
        return records

    def _fit(self, spec: StageSpec, label: str,
             cancel_event: threading.Event | None = None) -> tuple[list[TrialRecord], list[str]]:
        """The stage's trials (a cancelled Tuner's: those that finished before the cancel) and the ids
        of the trials the cancel stopped."""
        # A scheduler that pauses trials must not be capped by max_concurrent_trials (Tune's
        # ConcurrencyLimiter counts paused trials as running); the per-trial resources bound it.
        pauses = bool(getattr(spec.scheduler, "pauses_trials", False))  # SynchronousHalvingScheduler
        cancel = Cancel(cancel_event) if cancel_event is not None else None
        tuner = tune.Tuner(
            self._trainable(spec),
            param_space=spec.param_space,
            tune_config=tune.TuneConfig(
                search_alg=spec.search_alg, scheduler=spec.scheduler, num_samples=spec.num_samples,
                max_concurrent_trials=None if pauses else self.resources.max_concurrent,
                **RAY_SETTINGS.tune_config_kwargs(),
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=str(self.storage),
                checkpoint_config=checkpoint_config(spec.keep),
                failure_config=tune.FailureConfig(max_failures=self.max_failures),
                stop=cancel,
                **RAY_SETTINGS.run_config_kwargs([
                    *self._tracking(spec), StageProgress(label, spec.scheduler), DropTrainingState(),
                    *([WatchCancel(cancel)] if cancel else [])]),
            ),
        )
        results = tuner.fit()
        cancelled = cancel.cancelled() if cancel is not None else []
        if cancel is not None and cancel.event.is_set():  # keep only what ended before the cancel
            (self.storage / spec.name / CANCELLED_FILE).write_text(json.dumps(cancelled))
            results = [r for r in results if str((r.metrics or {}).get("trial_id", "")) in cancel.finished]
        pruned: set[str] = set()
        if spec.pruner_on:  # the pruners' own record (the Optuna bridge is loaded only with a pruner)
            from doktra_tune.search.optuna_searcher import pruned_trial_ids

            pruned = pruned_trial_ids(spec.scheduler)
        return collect_trials(results, spec.max_t, pruned, spec.pruner_on), cancelled

    def _tracking(self, spec: StageSpec) -> list[TrialTracking]:
        """The callback that writes the trials' MLflow runs (the driver is the only writer)."""
        handle = spec.trainable_kwargs.get("tracking")
        return [TrialTracking(self.tracker, handle)] if handle is not None else []

    def _finished_trials(self, exp_path: Path, spec: StageSpec) -> list[TrialRecord]:
        tuner = tune.Tuner.restore(
            str(exp_path), trainable=self._trainable(spec), resume_errored=False, restart_errored=False
        )
        try:
            results = tuner.get_results()
        except RuntimeError:  # Tune could not read the experiment (killed before a trial had a result): none finished
            return []
        states = experiment_trial_states(exp_path)
        cancelled = set(json.loads((exp_path / CANCELLED_FILE).read_text())) if (exp_path / CANCELLED_FILE).is_file() else set()
        done = [r for r in results if str((r.metrics or {}).get("trial_id", "")) not in cancelled
                and states.get(str((r.metrics or {}).get("trial_id", ""))) in ("TERMINATED", "ERROR")]
        return collect_trials(done, spec.max_t, set(), spec.pruner_on)
