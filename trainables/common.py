"""Shared adapter between Ray Tune and the method core (docs/DESIGN.md, "Trainable contract").

One trial = one call of a core stage function (`train_teacher`, `train_student`, `distill`) with the
trial's config merged into the stage's base config. Every epoch the stage's checkpoint goes to
Tune (`tune.report(..., checkpoint=tune.Checkpoint.from_directory(...))`) and the metrics to the
trial's MLflow run; after the stage, the stage's own evaluation of the epoch Tune keeps (the last,
else the best) on each of `eval_splits` is logged: metrics, reliability diagram and confusion matrix.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import ray
import torch
from ray import tune

from analysis.plots import plot_confusion, plot_reliability
from doktra_tune.config import DistillConfig, EpochReport, StageConfig, StageResult
from doktra_tune.errors import NonFiniteLossError
from doktra_tune.metrics import SEARCH_METRIC, search_score
from doktra_tune.models import copy_checkpoint, read_meta
from doktra_tune.stages import evaluate_checkpoint
from doktra_tune.stages.checkpointing import TRAINING_STATE_FILE
from doktra_tune.stages.evaluation import EvaluationResult
from doktra_tune.stages.splits import evaluated_splits
from doktra_tune.tracking import trial_run
from doktra_tune.tracking.datasets import dataset_inputs

# Keys of a final run spec that describe the run rather than configure it: MLflow tags of its run.
RUN_TAGS = {"variant": "doktra.variant", "fold": "doktra.fold", "origin": "doktra.origin",
            "teacher": "doktra.teacher", "student": "doktra.student_init"}
# Keys of a final run spec that only order the runs (`DependentRuns`): the model a run publishes and
# the models it needs. The trainable publishes; neither is part of the stage config.
RUN_ORDERING = ("publish", "needs")
RESERVED_KEYS = ("run", *RUN_TAGS, *RUN_ORDERING)
STAGE_KEY = "stage"  # inside a final run spec: which stage function runs it (ctt | student | abd | evaluate)
STAGE_OUTPUT = "stage_output"  # the stage's own output_dir inside the trial's scratch directory
SHARED_METRIC = "shared_prefix"  # 1 on the epochs a branch took from its ABD trunk (search.trials reads it)


def preload() -> None:
    """Ray worker setup hook: import the heavy modules (torch, transformers' BERT/ALBERT/RoBERTa,
    the stages, MLflow, matplotlib) when a worker process starts, not when a trial starts."""
    import importlib

    for name in ("doktra_tune.stages", "doktra_tune.tracking", "analysis.plots",
                 "transformers.models.bert.modeling_bert", "transformers.models.albert.modeling_albert",
                 "transformers.models.roberta.modeling_roberta"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional module only costs time later
            pass


def merge_config(base: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """`base` with the trial's overrides applied: plain keys first, then the `run` dict.

    The run-describing keys (`variant`, `fold`, `origin`, `teacher`, `student`; in `run` or at the
    top level) are returned separately as MLflow tags (`RUN_TAGS`); a `data` override dict updates
    the nested data config field by field.
    """
    merged = copy.deepcopy(dict(base))
    overrides = {k: v for k, v in config.items() if k not in RESERVED_KEYS}
    run = dict(config.get("run") or {})
    tags: dict[str, str] = {}
    for key, tag in RUN_TAGS.items():
        value = run.pop(key, None)
        value = config.get(key) if value is None else value
        if value is not None:
            tags[tag] = str(value)
    run.pop(STAGE_KEY, None)
    for key in RUN_ORDERING:
        run.pop(key, None)
    overrides.update(run)
    for key, value in overrides.items():
        if key == "data" and isinstance(value, Mapping):
            merged["data"] = {**merged.get("data", {}), **value}
        else:
            merged[key] = value
    return merged, tags


def _node_id() -> str:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - not inside Ray
        return ""


def _report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
    payload: dict[str, Any] = dict(metrics)
    payload["node_id"] = _node_id()
    if checkpoint_dir is not None:
        tune.report(payload, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
    else:
        tune.report(payload)


def _restored_checkpoint(dest: Path) -> Path | None:
    """The checkpoint Tune hands a resumed trial, copied to `dest`, if it holds a training state."""
    try:
        checkpoint = tune.get_checkpoint()
    except Exception:  # noqa: BLE001 - not inside a Tune trial
        return None
    if checkpoint is None:
        return None
    path = Path(checkpoint.to_directory(str(dest)))
    return path if (path / TRAINING_STATE_FILE).is_file() else None


@dataclass
class Sharing:
    """How a trial shares an ABD grid's activation-boundary phase (issue 10): `prefix`, a trunk
    checkpoint to start from (its epochs are reported as this trial's, marked shared); or
    `publish_epochs`, where the trunk copies its checkpoint (training state included) of each
    switch epoch some gamma of the grid needs."""

    prefix: Path | None = None
    publish_epochs: dict[int, Path] = field(default_factory=dict)


def run_trial(
    stage: str,
    stage_fn: Callable[..., StageResult],
    config: Mapping[str, Any],
    base: Mapping[str, Any],
    tracking: dict | None,
    *,
    report: Callable[[dict[str, float], Path | None], None] = _report,
    restored_checkpoint: Callable[[Path], Path | None] = _restored_checkpoint,
    publish_to: Path | None = None,
    sharing: Sharing | None = None,
) -> StageResult:
    """Run one trial of `stage` (ctt | student | abd) and log it; see the module docstring.

    A trial Tune resumes (synchronous halving pauses trials at its rungs; a lost worker's trial is
    retried) goes on from the epoch after its checkpoint when that checkpoint holds the training
    state (save_training_state). `publish_to`: where the trial's model (its kept checkpoint) is
    copied when it ends well, for the runs that read it (the final runs' chain). `sharing`: an ABD
    trunk, or a branch of one (`Sharing`)."""
    merged, run_tags = merge_config(base, config)
    # The stage's own epoch checkpoints live in a node-local scratch dir, not in the trial dir:
    # Tune syncs the trial dir to storage, and the copies Tune keeps come from `tune.report`.
    work = Path(tempfile.mkdtemp(prefix=f"doktra_{stage}_", dir=os.environ.get("DOKTRA_SCRATCH_DIR")))
    try:
        result = _run_in(stage, stage_fn, merged, run_tags, work, tracking, report, restored_checkpoint,
                         sharing or Sharing())
        model = result.last_checkpoint or result.best_checkpoint
        if publish_to is not None and model is not None:
            copy_checkpoint(model, publish_to, leave_out=(TRAINING_STATE_FILE,))  # no optimizer moments
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def shared_history(prefix: Path) -> list[dict[str, float]]:
    """The per-epoch metrics of the run that wrote trunk checkpoint `prefix`, up to its epoch."""
    training = torch.load(prefix / TRAINING_STATE_FILE, map_location="cpu", weights_only=False)
    return [dict(row) for row in training["history"]]


def _run_in(
    stage: str,
    stage_fn: Callable[..., StageResult],
    merged: dict[str, Any],
    run_tags: dict[str, str],
    work: Path,
    tracking: dict | None,
    report: Callable[[dict[str, float], Path | None], None],
    restored_checkpoint: Callable[[Path], Path | None],
    sharing: Sharing,
) -> StageResult:
    merged["output_dir"] = str(work / STAGE_OUTPUT)
    resume = restored_checkpoint(work / "resume")
    replay: list[dict[str, float]] = []
    if resume is not None:  # Tune resumes a paused (or retried) trial: go on from its checkpoint
        merged["resume_from"] = str(resume)
    elif sharing.prefix is not None:  # a branch: the trunk's epochs are this trial's first ones
        merged["resume_from"] = str(sharing.prefix)
        replay = shared_history(sharing.prefix)
    cfg_cls = DistillConfig if stage == "abd" else StageConfig
    cfg = cfg_cls.from_dict(merged)
    tags = {"doktra.seed": str(cfg.seed), **run_tags}
    if replay and sharing.prefix is not None:
        tags["doktra.shared_prefix"] = f"{sharing.prefix.parent.name}, epochs 1-{len(replay)}"
    with trial_run(tracking, _params(cfg.to_dict()), tags) as logger:
        logger.log_datasets(dataset_inputs(cfg.data, ["train", *evaluated_splits(cfg)]))

        def report_epoch(epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
            logger.log_epoch(metrics, step=epoch)
            score = search_score(metrics)
            report({**metrics, SEARCH_METRIC: score} if score is not None else metrics, checkpoint)

        for epoch, metrics in enumerate(replay, start=1):  # the shared epochs, reported as this trial's, marked
            report_epoch(epoch, {**metrics, SHARED_METRIC: 1.0}, sharing.prefix if epoch == len(replay) else None)

        def on_epoch(rep: EpochReport) -> None:
            metrics = {k: float(v) for k, v in rep.metrics.items()}
            bad = [k for k in ("train_loss",) if k in metrics and not math.isfinite(metrics[k])]
            if bad:
                raise NonFiniteLossError(f"{stage}: non-finite {bad[0]} at epoch {rep.epoch}")
            if rep.epoch in sharing.publish_epochs and rep.checkpoint_dir is not None:
                copy_checkpoint(rep.checkpoint_dir, sharing.publish_epochs[rep.epoch])  # state included: branches resume
            report_epoch(rep.epoch, metrics, rep.checkpoint_dir)

        result = stage_fn(cfg, on_epoch=on_epoch)
        # the epoch whose checkpoint Tune keeps as the trial's result: the last one, else the best
        evaluations = result.last_evaluations if result.last_checkpoint else result.best_evaluations
        _log_evaluations(cfg, evaluations, work / "evaluation", logger)
    return result


def run_evaluation(
    config: Mapping[str, Any],
    base: Mapping[str, Any],
    tracking: dict | None,
    *,
    report: Callable[[dict[str, float], Path | None], None] = _report,
) -> dict[str, float]:
    """Score an existing checkpoint (`model` of the merged config: the search's winner of the final
    runs' `winners` protocol) on dev and `eval_splits`, in the precision it was trained in; one
    report (step = the checkpoint's epoch), logged like a trained trial's last epoch."""
    merged, run_tags = merge_config(base, config)
    cfg = StageConfig.from_dict({**merged, "output_dir": ""})
    meta = read_meta(cfg.model)
    trained = dict(meta.get("config") or {})
    epoch = int(meta.get("epoch", 0))
    params = {"model": cfg.model, "seed": trained.get("seed", cfg.seed), "epoch": epoch,
              **{k: trained[k] for k in ("lr", "beta", "epochs", "gamma") if k in trained}}
    tags = {"doktra.seed": str(params["seed"]), **run_tags}
    work = Path(tempfile.mkdtemp(prefix="doktra_evaluate_", dir=os.environ.get("DOKTRA_SCRATCH_DIR")))
    try:
        with trial_run(tracking, params, tags) as logger:
            logger.log_datasets(dataset_inputs(cfg.data, evaluated_splits(cfg)))
            evaluations = {
                split: evaluate_checkpoint(
                    cfg.model, cfg.data, split, teacher_checkpoint=meta.get("teacher_checkpoint"),
                    ece_bins=cfg.ece_bins, device=cfg.device, precision=str(trained.get("precision", cfg.precision)),
                    batch_size=cfg.eval_batch_size,
                )
                for split in evaluated_splits(cfg)
            }
            metrics = {"epoch": float(epoch)}
            for split, ev in evaluations.items():
                metrics.update({f"{split}_{k}": float(v) for k, v in ev.metrics.items()})
            logger.log_epoch(metrics, step=max(epoch, 1))
            score = search_score(metrics)
            report({**metrics, SEARCH_METRIC: score} if score is not None else metrics, None)
            _log_evaluations(cfg, evaluations, work / "evaluation", logger)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return metrics


def _params(values: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(values)
    out.pop("output_dir", None)
    return out


def _log_evaluations(cfg: StageConfig, evaluations: Mapping[str, EvaluationResult], out: Path, logger: Any) -> None:
    """Log each split's reliability/confusion/metrics (JSON + PNG) from the stage's own last evaluation."""
    out.mkdir(parents=True, exist_ok=True)
    for split, ev in evaluations.items():
        rel_json = out / f"reliability_{split}.json"
        rel_json.write_text(json.dumps(ev.reliability.to_dict(), indent=1))
        conf_json = out / f"confusion_{split}.json"
        conf_json.write_text(json.dumps(ev.confusion_dict(), indent=1))
        metrics_json = out / f"metrics_{split}.json"
        metrics_json.write_text(json.dumps(ev.metrics, indent=1))
        title = f"{cfg.data.task} {split}"
        rel_png = out / f"reliability_{split}.png"
        plot_reliability({title: ev.reliability}, rel_png, title=f"reliability: {title}")
        conf_png = out / f"confusion_{split}.png"
        plot_confusion(ev.confusion, list(ev.label_names), conf_png)
        for path in (rel_json, rel_png, conf_json, conf_png, metrics_json):
            logger.log_artifact(path)
