"""Epoch checkpoints: what is saved, which are kept, and resuming a run from one.

Every epoch is saved as ``output_dir/epoch_<k>`` (model, tokenizer, ``doktra_meta.json``; a learned
teacher map as ``teacher_projection.pt``); with ``save_training_state`` also ``training_state.pt``
(AdamW state, LR schedule, RNG, best-so-far, history), which ``resume_from`` reads back so that the
remaining epochs equal those of an uninterrupted run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from doktra_tune.config import DistillConfig, StageConfig, StageResult
from doktra_tune.errors import ConfigError
from doktra_tune.models import hidden_size, load_checkpoint, read_meta, save_checkpoint
from doktra_tune.stages.state import StageState
from doktra_tune.switch import PREFIX_FREE_FIELDS, switch_epoch

log = logging.getLogger(__name__)

PROJECTION_FILE = "teacher_projection.pt"
TRAINING_STATE_FILE = "training_state.pt"  # optimizer, LR schedule, RNG, best-so-far: resume_from

# Fields that may differ between the run that wrote a checkpoint and the one resuming from it.
RESUME_FREE_FIELDS = ("output_dir", "resume_from", "save_training_state", "torch_threads", "device",
                      "stop_after_epoch")
# PREFIX_FREE_FIELDS (doktra_tune.switch): a run may resume from another's checkpoint of an epoch
# before both runs' switches -- the shared prefix of an ABD grid.


def save_epoch(state: StageState, out_dir: Path, epoch: int, metrics: dict[str, float]) -> Path:
    """Save the model after ``epoch`` as ``out_dir/epoch_<epoch>`` with its metadata."""
    meta = {
        "task": state.task.name,
        "labels": list(state.task.labels),
        "multi_label": state.task.multi_label,
        **({"hoc_head": state.task.hoc_head} if state.task.hoc_head is not None else {}),
        "model_spec": state.model_spec,
        "hidden_size": hidden_size(state.model),
        "epoch": epoch,
        "metrics": metrics,
        "stage": state.name,
        "seed": state.cfg.seed,
        "config": state.cfg.to_dict(),
        **state.extra_meta,
    }
    path = save_checkpoint(state.model, state.tokenizer, out_dir / f"epoch_{epoch}", meta)
    if state.projection is not None and state.projection.trainable:
        torch.save(state.projection.state_dict(), path / PROJECTION_FILE)
    return path


def save_training_state(
    ckpt_dir: Path, epoch: int, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, best_f1: float, result: StageResult,
) -> None:
    """Write what ``resume`` needs beyond the weights into ``ckpt_dir``."""
    torch.save({
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "best_f1": best_f1,
        "best_epoch": result.best_epoch,
        "history": result.history,
    }, ckpt_dir / TRAINING_STATE_FILE)


def keep_set(mode: str, best_epoch: int, epoch: int) -> set[int]:
    """The epochs whose checkpoints ``keep_checkpoints=mode`` keeps after ``epoch``."""
    keep: set[int] = set()
    if mode in ("best", "best_and_last"):
        keep.add(best_epoch)
    if mode in ("last", "best_and_last"):
        keep.add(epoch)
    return keep


def resume(
    state: StageState, ckpt: Path, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, result: StageResult,
) -> tuple[int, float]:
    """Load `ckpt`'s weights and training state into this run; returns (epochs done, best dev F1).

    The checkpoint must come from this stage with the same configuration (output_dir, threads and
    device aside): the resumed epochs then equal those of an uninterrupted run."""
    state_file = ckpt / TRAINING_STATE_FILE
    if not state_file.is_file():
        raise ConfigError(
            f"resume_from={ckpt} holds no {TRAINING_STATE_FILE}; resume from a checkpoint written "
            "with save_training_state=True, or drop resume_from"
        )
    meta = read_meta(ckpt)
    training = torch.load(state_file, map_location="cpu", weights_only=False)
    _check_resumable(state, ckpt, meta, int(training["epoch"]))
    saved_model, _, _ = load_checkpoint(ckpt)
    state.model.load_state_dict(saved_model.state_dict())
    if state.projection is not None and state.projection.trainable:
        state.projection.load_state_dict(torch.load(ckpt / PROJECTION_FILE, map_location=state.rt.device))
    optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    torch.set_rng_state(training["torch_rng"])
    if training.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(training["cuda_rng"])
    result.history = list(training["history"])
    result.best_epoch = int(training["best_epoch"])
    log.info("[%s] resumed from %s after epoch %d", state.name, ckpt, training["epoch"])
    return int(training["epoch"]), float(training["best_f1"])


def _check_resumable(state: StageState, ckpt: Path, meta: dict[str, Any], epoch: int) -> None:
    """A one-line ConfigError unless `ckpt` (written after `epoch`) is this stage's with this configuration."""
    free = resume_free_fields(state.cfg, dict(meta.get("config", {})), epoch)
    theirs = {k: v for k, v in dict(meta.get("config", {})).items() if k not in free}
    ours = {k: v for k, v in state.cfg.to_dict().items() if k not in free}
    if meta.get("stage") != state.name or theirs != ours:
        changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise ConfigError(
            f"resume_from={ckpt} was written by stage {meta.get('stage')!r} with a different "
            f"configuration ({', '.join(changed) or 'stage'}); resume with the same settings or drop resume_from"
        )


def resume_free_fields(cfg: StageConfig, theirs: dict[str, Any], epoch: int) -> set[str]:
    """The config fields a run resuming after `epoch` may have changed: bookkeeping always; for ABD
    also beta and gamma when `epoch` is before both runs' switch (neither acted yet)."""
    free = set(RESUME_FREE_FIELDS)
    if isinstance(cfg, DistillConfig) and {"epochs", "gamma"} <= set(theirs):
        theirs_switch = switch_epoch(int(theirs["epochs"]), float(theirs["gamma"]))
        if epoch <= min(switch_epoch(cfg.epochs, cfg.gamma), theirs_switch):
            free |= set(PREFIX_FREE_FIELDS)
    return free
