"""The three DoKTra training stages (Algorithm 1), each a recipe for the shared stage loop.

* ``train_teacher`` -- calibrated teacher training (Alg. 1 line 1, Sec. 3.2): L_cls = CE - beta1 * H.
* ``train_student`` -- student fine-tuning (Alg. 1 line 2): plain CE (beta = 0); a beta > 0 gives the
  "ft + CPL" row of Table 6.
* ``distill`` -- activation boundary distillation (Alg. 1 lines 3-10, Sec. 3.3): epochs (0-based)
  ``< int(epochs * gamma)`` train on Eq. 5 against the frozen teacher's cached, projected [CLS]
  vectors; the rest refine with L_cls = CE - beta2 * H. ``distill_loss="kld"`` swaps Eq. 5 for the
  KL-divergence of Table 6 on the cached teacher logits.

The teacher stays in eval mode (its outputs are cached once, ``teacher_cache``); [CLS] =
``hidden_states[-1][:, 0]``. The step losses and the gamma switch are in ``step_losses``.
"""

from __future__ import annotations

from typing import Any

import torch

from doktra_tune.config import DistillConfig, EpochCallback, StageConfig, StageResult
from doktra_tune.device import apply_torch_threads, resolve_runtime
from doktra_tune.encoding import Batch
from doktra_tune.errors import ConfigError
from doktra_tune.models import hidden_size, is_checkpoint, load_checkpoint, load_classifier, read_meta
from doktra_tune.stages.loop import run_stage
from doktra_tune.stages.splits import evaluated_splits, load_encoded
from doktra_tune.stages.state import StageState
from doktra_tune.stages.step_losses import (
    StepLoss,
    abd_step_loss,
    cpl_step_loss,
    distill_phases,
    kd_step_loss,
    one_phase,
    switch_epoch,
)
from doktra_tune.stages.teacher import build_projection, projected_once, teacher_features
from doktra_tune.tasks import TaskSpec, check_checkpoint_head, check_checkpoint_task, task_of


def train_teacher(cfg: StageConfig, on_epoch: EpochCallback | None = None) -> StageResult:
    """Calibrated teacher training (Alg. 1 line 1, Sec. 3.2): fine-tune with L_cls = CE - beta1 * H (Eq. 2)."""
    return _fine_tune("ctt", cfg, on_epoch)


def train_student(cfg: StageConfig, on_epoch: EpochCallback | None = None) -> StageResult:
    """Student fine-tuning (Alg. 1 line 2): L_CE (beta = 0); beta > 0 is Table 6's "ft + CPL" variant."""
    return _fine_tune("student", cfg, on_epoch)


def _fine_tune(name: str, cfg: StageConfig, on_epoch: EpochCallback | None) -> StageResult:
    apply_torch_threads(cfg.torch_threads)
    rt = resolve_runtime(cfg.device, cfg.precision)
    task = task_of(cfg.data)
    model, tokenizer = load_classifier(cfg.model, task, seed=cfg.seed)
    model.to(rt.device)
    train = load_encoded(cfg.data, "train", tokenizer)
    evals = {s: load_encoded(cfg.data, s, tokenizer) for s in evaluated_splits(cfg)}
    state = StageState(
        name=name, cfg=cfg, task=task, model=model, tokenizer=tokenizer, model_spec=cfg.model,
        train=train, evals=evals, params=[p for p in model.parameters() if p.requires_grad], rt=rt,
        losses_for_epoch=one_phase(cpl_step_loss(cfg.beta, task.multi_label, task.pair_outputs)),
    )
    return run_stage(state, on_epoch)


def distill(cfg: DistillConfig, on_epoch: EpochCallback | None = None) -> StageResult:
    """Activation boundary distillation + refinement (Alg. 1 lines 3-10).

    Epochs (0-based) < int(epochs * gamma) train the student on Eq. 5 (margin mu) against the cached
    frozen-teacher [CLS] of each example (looked up by ``Batch.indices``, projected to the student's
    width by ``TeacherProjection``); ``distill_loss="kld"`` uses the KL divergence to the cached
    teacher logits there instead (Table 6). Later epochs refine with L_cls = CE - beta2 * H.
    Reports ``dev_lat`` (mean Eq. 4 count on dev), ``train_lat`` (ABD epochs) and ``phase`` per epoch,
    and ``dev_lat_start`` / ``dev_lat_switch`` (dev L_AT before training and at the switch; stages.loop).
    """
    if not cfg.teacher_checkpoint:
        raise ConfigError("distill needs teacher_checkpoint; set teacher_checkpoint=<ctt output_dir>/epoch_<k>")
    if not is_checkpoint(cfg.teacher_checkpoint):
        read_meta(cfg.teacher_checkpoint)  # raises the one-line ConfigError
    apply_torch_threads(cfg.torch_threads)
    rt = resolve_runtime(cfg.device, cfg.precision)
    task = task_of(cfg.data)
    model, tokenizer, model_spec = _load_student(cfg, task)
    model.to(rt.device)
    train = load_encoded(cfg.data, "train", tokenizer)
    evals = {s: load_encoded(cfg.data, s, tokenizer) for s in evaluated_splits(cfg)}
    teacher = teacher_features(cfg.teacher_checkpoint, task, [train, *evals.values()], cfg.data, rt,
                               batch_size=cfg.eval_batch_size)
    projection_seed = cfg.seed if cfg.projection_seed is None else cfg.projection_seed
    params = [p for p in model.parameters() if p.requires_grad]
    mode, projection = build_projection(cfg.projection, teacher.width, hidden_size(model), projection_seed)
    if projection is not None:
        projection.to(rt.device)
    learned = projection if projection is not None and projection.trainable else None
    if learned is not None:
        params += list(learned.parameters())
    teacher_cls = projected_once(teacher.cls, projection)

    def teacher_cls_for(batch: Batch) -> torch.Tensor:
        t = teacher_cls["train"][batch.indices.to(rt.device, non_blocking=True)]
        return learned(t) if learned is not None else t

    if cfg.distill_loss == "abd":
        distill_step = abd_step_loss(teacher_cls_for, cfg.margin)
    else:
        distill_step = _kd_step(cfg, task, torch.from_numpy(teacher.logits["train"]).to(rt.device))
    refine_step = cpl_step_loss(cfg.beta, task.multi_label, task.pair_outputs)
    state = StageState(
        name="abd", cfg=cfg, task=task, model=model, tokenizer=tokenizer, model_spec=model_spec,
        train=train, evals=evals, params=params, rt=rt,
        losses_for_epoch=distill_phases(distill_step, refine_step, cfg.epochs, cfg.gamma),
        teacher_cls={k: v for k, v in teacher_cls.items() if k != "train"},
        projection=learned,
        switch_epoch=switch_epoch(cfg.epochs, cfg.gamma),
        extra_meta={
            "teacher_checkpoint": str(cfg.teacher_checkpoint),
            "init_checkpoint": str(cfg.model),
            "projection": {"mode": mode, "seed": projection_seed},
        },
    )
    return run_stage(state, on_epoch)


def _kd_step(cfg: DistillConfig, task: TaskSpec, train_logits: torch.Tensor) -> StepLoss:
    """Table 6's KL-divergence step against the teacher's cached logits (the heads must match)."""
    if train_logits.shape[1] != task.num_outputs:
        raise ConfigError(
            f"distill_loss=kld needs the teacher's outputs to match the student's: teacher "
            f"{cfg.teacher_checkpoint!r} has {train_logits.shape[1]}, the student {task.num_outputs}; use a "
            "teacher trained with the same head"
        )
    return kd_step_loss(train_logits, cfg.kd_temperature, task.multi_label)


def _load_student(cfg: DistillConfig, task: TaskSpec) -> tuple[torch.nn.Module, Any, str]:
    """The student to distil into (a fine-tuned checkpoint, Alg. 1 line 2, or a fresh model) and its spec."""
    if is_checkpoint(cfg.model):
        model, tokenizer, student_meta = load_checkpoint(cfg.model)
        check_checkpoint_task(student_meta, task, cfg.model)
        check_checkpoint_head(student_meta, task, cfg.model, num_outputs=int(model.config.num_labels))
        return model, tokenizer, str(student_meta.get("model_spec", cfg.model))
    model, tokenizer = load_classifier(cfg.model, task, seed=cfg.seed)
    return model, tokenizer, cfg.model
