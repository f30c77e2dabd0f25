"""Ray Tune trainable that scores an existing checkpoint: the final runs of `final.protocol=winners`
report the search's own teacher and student (the models DoKTra starts from) on dev and test."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from doktra_tune.config import StageConfig
from doktra_tune.models import read_meta
from doktra_tune.run_spec import RunSpec
from doktra_tune.stages import evaluate_checkpoint
from doktra_tune.stages.splits import evaluated_splits
from doktra_tune.tracking import trial_run
from doktra_tune.tracking.datasets import dataset_inputs
from doktra_tune.tracking.evaluations import log_evaluations
from trainables import tune_session


def evaluate_trainable(config: dict, base: StageConfig, tracking: dict | None = None) -> None:
    """One evaluation: `base` (a StageConfig: data, eval settings) with the run's `model`."""
    run_evaluation(config, base, tracking)


def run_evaluation(
    config: Mapping[str, Any],
    base: StageConfig,
    tracking: dict | None,
    *,
    report: tune_session.Report = tune_session.report,
) -> dict[str, float]:
    """Score an existing checkpoint (`model` of the merged config: the search's winner of the final
    runs' `winners` protocol) on dev and `eval_splits`, in the precision it was trained in; one
    report (step = the checkpoint's epoch), logged like a trained trial's last epoch."""
    spec = RunSpec.of_trial(config)
    cfg = spec.stage_config(base)
    meta = read_meta(cfg.model)
    trained = dict(meta.get("config") or {})
    epoch = int(meta.get("epoch", 0))
    params = {"model": cfg.model, "seed": trained.get("seed", cfg.seed), "epoch": epoch,
              **{k: trained[k] for k in ("lr", "beta", "epochs", "gamma") if k in trained}}
    tags = {"doktra.seed": str(params["seed"]), **spec.tags()}
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
            report(tune_session.with_search_score(metrics), None)
            log_evaluations(cfg.data.task, evaluations, work / "evaluation", logger)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return metrics
