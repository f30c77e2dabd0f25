"""The driver writes every trial's MLflow run from Tune's events: the one writer of a search's
tracking store (issue: on a cluster, trial processes on other hosts never open it).

A trial reports each epoch's metrics to Tune (`trainables.tune_session.report`); its first report
carries the run's params, tags and datasets (`RUN_INFO`); it writes its evaluation files to the run
directory (shared storage). `TrialTracking`, a `tune.Callback` on the stage's Tuner, hands each of
those to `TrialRuns` (MLflow, keyed get-or-create): per-epoch metrics as they arrive, the
evaluation files and the end state when the trial completes or fails.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from doktra_tune.metrics import SEARCH_METRIC
from doktra_tune.tracking import SearchTracker
from doktra_tune.tracking.runs import TrialRuns
from trainables.tune_session import GPU_IDS, RUN_INFO

# report keys that are bookkeeping, not the trial run's metrics
NOT_METRICS = frozenset({*AUTO_RESULT_KEYS, RUN_INFO, GPU_IDS, SEARCH_METRIC, "node_id", "trial_id", "done",
                         "experiment_tag", "should_checkpoint"})


def epoch_metrics(result: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """(the run's metrics of one Tune result, its step: the epoch, else Tune's iteration)."""
    metrics = {k: v for k, v in result.items() if k not in NOT_METRICS and not k.startswith("config")}
    step = int(result.get("epoch") or result.get("training_iteration") or 1)
    return metrics, max(step, 1)


class TrialTracking(tune.Callback):
    """Writes the MLflow runs of one Tuner's trials (`handle`: `SearchTracker.trial_tracking`)."""

    def __init__(self, tracker: SearchTracker, handle: Mapping[str, Any]) -> None:
        self.runs: TrialRuns | None = TrialRuns(tracker, handle)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment's state file: the live MLflow client stays out
        return {"runs": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.runs is None:
            return
        raw = result.get(RUN_INFO)
        metrics, step = epoch_metrics(result)
        self.runs.result(trial.trial_id, metrics, step, json.loads(raw) if isinstance(raw, str) else None)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.runs is not None:
            self.runs.complete(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.runs is not None:
            self.runs.error(trial.trial_id)
