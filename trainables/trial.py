"""One trial of a training stage (docs/DESIGN.md, "Trainable contract"): the frame around one call of
a core stage function (`train_teacher`, `train_student`, `distill`), which a trainable writes as

    with StageTrial("ctt", RunSpec.of_trial(config), base, tracking) as trial:
        trial.finish(train_teacher(trial.stage_config, on_epoch=trial.on_epoch))

Entering applies the trial's `RunSpec` to the stage's base config (a checked `StageConfig`), picks up
the checkpoint of a trial Tune resumes (or the trunk checkpoint a shared-prefix branch starts
from, whose epochs it replays) and opens the trial's MLflow run. Every epoch the stage's
checkpoint goes to Tune (`tune_session.report`) and its metrics to the MLflow run; `finish` logs
the stage's own evaluation of the epoch Tune keeps (the last, else the best) on each of
`eval_splits`. Leaving closes the run, copies the model to `publish_to` when the trial ended well,
and removes the trial's scratch directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

from doktra_tune.config import EpochReport, StageConfig, StageResult
from doktra_tune.errors import NonFiniteLossError
from doktra_tune.metrics import SHARED_METRIC
from doktra_tune.models import copy_checkpoint
from doktra_tune.run_spec import RunSpec
from doktra_tune.stages.checkpointing import TRAINING_STATE_FILE
from doktra_tune.stages.splits import evaluated_splits
from doktra_tune.jsonable import jsonable
from doktra_tune.tracking.datasets import dataset_inputs
from trainables.evaluations import write_evaluations
from trainables import tune_session
from trainables.sharing import Sharing, shared_history

STAGE_OUTPUT = "stage_output"  # the stage's own output_dir inside the trial's scratch directory


def run_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """A trial run's MLflow params: its stage config without the scratch `output_dir`."""
    out = dict(values)
    out.pop("output_dir", None)
    return out


def trial_files(tracking: Mapping[str, Any] | None) -> tuple[str, Path | None]:
    """(this trial's id, the directory its evaluation files go to) from the stage's trial-files
    handle (`SearchTracker.trial_tracking`); no directory without a handle."""
    trial_id = str((tracking or {}).get("tags", {}).get("ray.trial_id") or tune_session.trial_id(uuid.uuid4().hex[:10]))
    if tracking is None or not tracking.get("files_dir"):
        return trial_id, None
    return trial_id, Path(tracking["files_dir"]) / trial_id


def run_info(params: Mapping[str, Any], tags: Mapping[str, str], datasets: list[dict[str, Any]]) -> str:
    """The trial run's params, tags and datasets as the JSON its first report carries (`RUN_INFO`)."""
    return json.dumps(jsonable({"params": dict(params), "tags": dict(tags), "datasets": datasets}))


def check_finite_loss(stage: str, metrics: Mapping[str, float], epoch: int) -> None:
    """NonFiniteLossError on a NaN/inf training loss, so that Ray marks the trial errored."""
    loss = metrics.get("train_loss")
    if loss is not None and not math.isfinite(loss):
        raise NonFiniteLossError(f"{stage}: non-finite train_loss at epoch {epoch}")


class StageTrial:
    """One trial of `stage` (ctt | student | abd); see the module docstring.

    A trial Tune resumes (synchronous halving pauses trials at its rungs; a lost worker's trial is
    retried) goes on from the epoch after its checkpoint when that checkpoint holds the training
    state (save_training_state). `publish_to`: where the trial's model (its kept checkpoint) is
    copied when it ends well, for the runs that read it (the final runs' chain). `sharing`: an ABD
    trunk, or a branch of one (`Sharing`). `report` and `restored_checkpoint` talk to Tune; tests
    pass their own."""

    def __init__(
        self,
        stage: str,
        spec: RunSpec,
        base: StageConfig,
        tracking: dict | None,
        *,
        report: tune_session.Report = tune_session.report,
        restored_checkpoint: tune_session.RestoredCheckpoint = tune_session.restored_checkpoint,
        publish_to: Path | None = None,
        sharing: Sharing | None = None,
    ) -> None:
        self.stage = stage
        self._spec = spec
        self._base = base
        self._tracking = tracking
        self._report = report
        self._restored_checkpoint = restored_checkpoint
        self._publish_to = publish_to
        self._sharing = sharing or Sharing()
        self._result: StageResult | None = None
        self._exits = ExitStack()

    def __enter__(self) -> StageTrial:
        with ExitStack() as exits:
            # The stage's own epoch checkpoints live in a node-local scratch dir, not in the trial dir:
            # Tune syncs the trial dir to storage, and the copies Tune keeps come from `tune.report`.
            self.work = Path(tempfile.mkdtemp(prefix=f"doktra_{self.stage}_", dir=os.environ.get("DOKTRA_SCRATCH_DIR")))
            exits.callback(shutil.rmtree, self.work, ignore_errors=True)
            exits.push(self._publish)  # runs after the MLflow run is closed
            resume_from, replay = self._start_point()
            self.stage_config: StageConfig = self._spec.stage_config(self._base)
            self.stage_config = dataclasses.replace(
                self.stage_config, output_dir=str(self.work / STAGE_OUTPUT), resume_from=resume_from)
            tags = {"doktra.seed": str(self.stage_config.seed), **self._spec.tags()}
            if replay and self._sharing.prefix is not None:
                tags["doktra.shared_prefix"] = f"{self._sharing.prefix.parent.name}, epochs 1-{len(replay)}"
            self.trial_id, self._files_dir = trial_files(self._tracking)
            self._run_info: str | None = None
            if self._tracking is not None:
                self._run_info = run_info(
                    run_params(self.stage_config.to_dict()), tags,
                    dataset_inputs(self.stage_config.data, ["train", *evaluated_splits(self.stage_config)]))
            for epoch, metrics in enumerate(replay, start=1):  # the shared epochs, reported as this trial's, marked
                checkpoint = self._sharing.prefix if epoch == len(replay) else None
                self._report_epoch(epoch, {**metrics, SHARED_METRIC: 1.0}, checkpoint)
            self._exits = exits.pop_all()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None,
    ) -> bool:
        return self._exits.__exit__(exc_type, exc, traceback)

    def _start_point(self) -> tuple[str | None, list[dict[str, float]]]:
        """(the checkpoint the stage resumes from, or None; the epochs to replay: a branch's trunk
        epochs, none otherwise)."""
        resume = self._restored_checkpoint(self.work / "resume")
        if resume is not None:  # Tune resumes a paused (or retried) trial: go on from its checkpoint
            return str(resume), []
        if self._sharing.prefix is not None:  # a branch: the trunk's epochs are this trial's first ones
            return str(self._sharing.prefix), shared_history(self._sharing.prefix)
        return self._base.resume_from, []

    def _report_epoch(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        payload: dict[str, Any] = dict(tune_session.with_search_score(metrics))
        if self._run_info is not None:  # the first report of this process: what the driver's MLflow run needs
            payload[tune_session.RUN_INFO], self._run_info = self._run_info, None
        self._report(payload, checkpoint)

    def on_epoch(self, rep: EpochReport) -> None:
        """The stage's per-epoch callback: the NaN guard, a trunk's switch-epoch checkpoint, the report."""
        metrics = {k: float(v) for k, v in rep.metrics.items()}
        check_finite_loss(self.stage, metrics, rep.epoch)
        if rep.epoch in self._sharing.publish_epochs and rep.checkpoint_dir is not None:
            copy_checkpoint(rep.checkpoint_dir, self._sharing.publish_epochs[rep.epoch])  # state included: branches resume
        self._report_epoch(rep.epoch, metrics, rep.checkpoint_dir)

    def finish(self, result: StageResult) -> StageResult:
        """Write the stage's own evaluation of the epoch whose checkpoint Tune keeps as the trial's
        result (the last one, else the best) for the driver to log; the trial publishes that model
        when it is left."""
        evaluations = result.last_evaluations if result.last_checkpoint else result.best_evaluations
        if self._files_dir is not None:
            write_evaluations(self.stage_config.data.task, evaluations, self._files_dir)
        self._result = result
        return result

    def _publish(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None,
    ) -> bool:
        if exc_type is not None or self._publish_to is None or self._result is None:
            return False
        model = self._result.last_checkpoint or self._result.best_checkpoint
        if model is not None:
            copy_checkpoint(model, self._publish_to, leave_out=(TRAINING_STATE_FILE,))  # no optimizer moments
        return False
