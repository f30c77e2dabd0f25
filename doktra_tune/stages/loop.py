"""The stage loop shared by the three stages: epoch after epoch, train, evaluate, save, report, prune.

Every epoch: train on the epoch's step loss (``StageState.losses_for_epoch``), evaluate on dev (and
``eval_splits``; with ``eval_every_epoch=False`` those only after the last epoch), save
``output_dir/epoch_<k>``, call ``on_epoch(EpochReport)``, then prune checkpoints per
``keep_checkpoints``. The best epoch is the one of the highest dev F1 (the first on ties).

ABD also reports, in every epoch's metrics, two fixed points of its dev L_AT (Eq. 4) curve:
``dev_lat_start``, the student it starts from against the (projected) teacher before any training
(the pre-ABD baseline), and, in the refinement epochs, ``dev_lat_switch``, dev L_AT after the last
activation-boundary epoch (the switch, Alg. 1 line 3), which refinement starts from.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

import torch

from doktra_tune.config import EpochCallback, EpochReport, StageResult
from doktra_tune.device import matmul_precision
from doktra_tune.encoding import make_batches
from doktra_tune.stages.checkpointing import keep_set, resume, save_epoch, save_training_state
from doktra_tune.stages.epoch import build_optimizer, epoch_batch_seed, seed_everything, train_epoch
from doktra_tune.stages.evaluation import EvaluationResult, evaluation_result, predict_split
from doktra_tune.stages.state import StageState

log = logging.getLogger(__name__)


def run_stage(state: StageState, on_epoch: EpochCallback | None) -> StageResult:
    """Train ``state``'s model for ``cfg.epochs`` (or up to ``stop_after_epoch``; from ``resume_from``),
    its fp32 matmuls in TF32 when its precision says so (``device.matmul_precision``)."""
    with matmul_precision(state.rt.tf32):
        return _run_stage(state, on_epoch)


def _run_stage(state: StageState, on_epoch: EpochCallback | None) -> StageResult:
    cfg = state.cfg
    out_dir = Path(cfg.output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = math.ceil(len(state.train.encoded) / cfg.batch_size)
    optimizer, scheduler = build_optimizer(state.params, cfg, steps_per_epoch * cfg.epochs)
    seed_everything(cfg.seed)
    result = StageResult()
    saved: dict[int, Path] = {}
    best_f1 = -math.inf
    start_epoch0 = 0
    if cfg.resume_from:
        start_epoch0, best_f1 = resume(state, Path(cfg.resume_from).expanduser(), optimizer, scheduler, result)
    lat_points = _lat_points(state, result.history)  # an evaluation: it draws no random numbers
    for epoch0 in range(start_epoch0, cfg.stop_after_epoch or cfg.epochs):
        epoch = epoch0 + 1
        metrics = _train(state, epoch0, optimizer, scheduler)
        eval_start = time.perf_counter()
        evaluations = _evaluate(state, epoch, metrics)
        metrics["eval_seconds"] = time.perf_counter() - eval_start
        metrics.update(lat_points)
        if "dev_lat" in metrics and epoch == state.switch_epoch:  # the refinement epochs after it carry it
            lat_points["dev_lat_switch"] = metrics["dev_lat"]
        result.history.append(metrics)
        best_f1 = _track_best(result, epoch, cfg.epochs, metrics, evaluations, best_f1)
        keep = keep_set(cfg.keep_checkpoints, result.best_epoch, epoch)
        ckpt_dir: Path | None = None
        if on_epoch is not None or epoch in keep:
            ckpt_dir = save_epoch(state, out_dir, epoch, metrics)
            saved[epoch] = ckpt_dir
            if cfg.save_training_state:
                save_training_state(ckpt_dir, epoch, optimizer, scheduler, best_f1, result)
        _log_epoch(state.name, epoch, cfg.epochs, metrics)
        if on_epoch is not None:
            on_epoch(EpochReport(epoch=epoch, metrics=dict(metrics), checkpoint_dir=ckpt_dir))
        for old in sorted(saved):
            if old not in keep:
                shutil.rmtree(saved.pop(old), ignore_errors=True)
    result.best_checkpoint = saved.get(result.best_epoch)
    result.last_checkpoint = saved.get(cfg.stop_after_epoch or cfg.epochs)
    return result


def _lat_points(state: StageState, history: list[dict[str, float]]) -> dict[str, float]:
    """ABD's ``dev_lat_start`` (the starting student's dev L_AT, measured here unless a resumed run's
    history has it) and ``dev_lat_switch`` once the history holds the switch epoch."""
    dev_teacher = state.teacher_cls.get("dev")
    if dev_teacher is None or state.switch_epoch is None:
        return {}
    points = {k: v for k, v in (history[-1] if history else {}).items() if k in ("dev_lat_start", "dev_lat_switch")}
    if "dev_lat_start" not in points:
        dev = state.evals["dev"]
        pred = predict_split(state.model, dev.encoded, state.task, state.tokenizer.pad_token_id,
                             batch_size=state.cfg.eval_batch_size, rt=state.rt, teacher_cls=dev_teacher,
                             projection=state.projection)
        assert pred.lat is not None
        points["dev_lat_start"] = float(pred.lat.mean()) if pred.lat.size else 0.0
    if len(history) >= state.switch_epoch > 0 and "dev_lat_switch" not in points:
        points["dev_lat_switch"] = float(history[state.switch_epoch - 1]["dev_lat"])
    return points


def _train(
    state: StageState, epoch0: int, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, float]:
    """Train the 0-based epoch ``epoch0`` on its step loss; its training metrics."""
    cfg = state.cfg
    step_loss, phase = state.losses_for_epoch(epoch0)
    batches = make_batches(
        state.train.encoded,
        cfg.batch_size,
        shuffle=True,
        seed=epoch_batch_seed(cfg.seed, epoch0),
        batching=cfg.batching,
    )
    stats = train_epoch(
        state.model, state.train.encoded, batches, state.tokenizer.pad_token_id, step_loss, optimizer, scheduler,
        state.params, max_grad_norm=cfg.max_grad_norm, rt=state.rt,
    )
    metrics: dict[str, float] = {
        "epoch": float(epoch0 + 1),
        "train_loss": stats.loss,
        "epoch_seconds": stats.seconds,
        "epoch_cpu_seconds": stats.cpu_seconds,
    }
    if phase is not None:
        metrics["phase"] = float(phase)
    if stats.lat is not None:
        metrics["train_lat"] = stats.lat
    metrics["lr"] = float(scheduler.get_last_lr()[0])
    return metrics


def _evaluate(state: StageState, epoch: int, metrics: dict[str, float]) -> dict[str, EvaluationResult]:
    """Evaluate after 1-based ``epoch`` on the splits due; adds ``<split>_<metric>`` to ``metrics``."""
    cfg = state.cfg
    evaluations: dict[str, EvaluationResult] = {}
    for split_name, split in state.evals.items():
        if split_name != "dev" and not cfg.eval_every_epoch and epoch < cfg.epochs:
            continue
        pred = predict_split(
            state.model, split.encoded, state.task, state.tokenizer.pad_token_id, batch_size=cfg.eval_batch_size,
            rt=state.rt, teacher_cls=state.teacher_cls.get(split_name), projection=state.projection,
        )
        evaluations[split_name] = evaluation_result(state.task, split_name, split, pred, cfg.ece_bins)
        for key, value in evaluations[split_name].metrics.items():
            metrics[f"{split_name}_{key}"] = value
    return evaluations


def _track_best(
    result: StageResult, epoch: int, epochs: int, metrics: dict[str, float],
    evaluations: dict[str, EvaluationResult], best_f1: float,
) -> float:
    """Update ``result``'s best epoch (highest dev F1) and evaluations after ``epoch``; the best dev F1."""
    f1 = metrics.get("dev_f1", math.nan)
    if not math.isnan(f1) and f1 > best_f1:
        best_f1 = f1
        result.best_epoch = epoch
    if result.best_epoch == 0:
        result.best_epoch = 1  # every dev F1 NaN so far: the first epoch stands
    if result.best_epoch == epoch:
        result.best_evaluations = evaluations
    if epoch == epochs:
        result.last_evaluations = evaluations
    return best_f1


def _log_epoch(stage: str, epoch: int, epochs: int, m: dict[str, float]) -> None:
    parts = [f"[{stage}] epoch {epoch}/{epochs}", f"train_loss={m['train_loss']:.4f}"]
    if "phase" in m:
        parts.append(f"phase={int(m['phase'])}")
    if "train_lat" in m:
        parts.append(f"train_lat={m['train_lat']:.1f}")
    for key in ("dev_f1", "dev_ece", "dev_loss", "dev_lat", "test_f1"):
        if key in m:
            parts.append(f"{key}={m[key]:.4f}" if key != "dev_lat" else f"{key}={m[key]:.1f}")
    parts.append(f"({m['epoch_seconds']:.1f}s train, {m['eval_seconds']:.1f}s eval)")
    log.info(" ".join(parts))
