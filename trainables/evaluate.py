"""Ray Tune trainable that scores an existing checkpoint: the final runs of `final.protocol=winners`
report the search's own teacher and student (the models DoKTra starts from) on dev and test."""

from __future__ import annotations

from typing import Any, Mapping

from doktra_tune.config import StageConfig
from doktra_tune.models import read_meta
from doktra_tune.run_spec import RunSpec
from doktra_tune.stages import evaluate_checkpoint
from doktra_tune.stages.splits import evaluated_splits
from doktra_tune.tracking.datasets import dataset_inputs
from trainables.evaluations import write_evaluations
from trainables import tune_session
from trainables.trial import run_info, trial_files


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
    report (step = the checkpoint's epoch), recorded by the driver like a trained trial's last epoch."""
    spec = RunSpec.of_trial(config)
    cfg = spec.stage_config(base)
    meta = read_meta(cfg.model)
    trained = dict(meta.get("config") or {})
    epoch = int(meta.get("epoch", 0))
    params = {"model": cfg.model, "seed": trained.get("seed", cfg.seed), "epoch": epoch,
              **{k: trained[k] for k in ("lr", "beta", "epochs", "gamma") if k in trained}}
    tags = {"doktra.seed": str(params["seed"]), **spec.tags()}
    trial_id, files_dir = trial_files(tracking)
    info = run_info(params, tags, dataset_inputs(cfg.data, evaluated_splits(cfg))) if tracking is not None else None
    evaluations = {
        split: evaluate_checkpoint(
            cfg.model, cfg.data, split, teacher_checkpoint=meta.get("teacher_checkpoint"),
            ece_bins=cfg.ece_bins, device=cfg.device, precision=str(trained.get("precision", cfg.precision)),
            batch_size=cfg.eval_batch_size,
        )
        for split in evaluated_splits(cfg)
    }
    metrics: dict[str, float] = {"epoch": float(epoch)}
    for split, ev in evaluations.items():
        metrics.update({f"{split}_{k}": float(v) for k, v in ev.metrics.items()})
    if files_dir is not None:
        write_evaluations(cfg.data.task, evaluations, files_dir)
    payload: dict[str, Any] = dict(tune_session.with_search_score(metrics))
    if info is not None:
        payload[tune_session.RUN_INFO] = info
    report(payload, None)
    return metrics
