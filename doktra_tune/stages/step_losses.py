"""The loss of one training step, per stage and phase, and the gamma switch between ABD's phases.

A step loss maps (batch, student [CLS], logits) to (loss, per-example Eq. 4 counts or None):

* ``cpl_step_loss`` -- Eq. 2, L_cls = CE - beta * H: teacher (beta1), student (beta = 0), refinement (beta2);
* ``abd_step_loss`` -- Eq. 5 against the frozen teacher's projected [CLS] (Alg. 1 lines 4-6);
* ``kd_step_loss`` -- Table 6's KL-divergence alternative on the cached teacher logits;
* ``distill_phases`` -- Alg. 1 line 3: the distillation step before ``switch_epoch``, refinement from it on.
"""

from __future__ import annotations

from typing import Callable

import torch

from doktra_tune.encoding import Batch
from doktra_tune.losses import activation_boundary_loss, activation_transfer_count, confidence_penalty_loss, kd_kl_loss
from doktra_tune.switch import switch_epoch

# step_loss(batch, student_cls, logits) -> (loss, per-example L_AT counts or None)
StepLoss = Callable[[Batch, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
# 0-based epoch -> (its step loss, its phase: None for one-phase stages, 0 ABD, 1 refinement)
EpochLosses = Callable[[int], tuple[StepLoss, float | None]]

ABD_PHASE = 0.0  # the "phase" metric of an epoch before the switch
REFINE_PHASE = 1.0  # ... and of one from the switch on


def cpl_step_loss(beta: float, multi_label: bool, pairs: bool = False) -> StepLoss:
    """Eq. 2: L_cls = CE - beta * H (beta = 0: plain CE); ``pairs``: HoC's 20-output head (TaskSpec.pair_outputs)."""

    def step_loss(batch: Batch, cls: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, None]:
        labels = batch.labels.to(logits.device, non_blocking=True)
        return confidence_penalty_loss(logits, labels, beta, multi_label, pairs), None

    return step_loss


def abd_step_loss(teacher_cls_for: Callable[[Batch], torch.Tensor], margin: float) -> StepLoss:
    """Eq. 5 against ``teacher_cls_for(batch)`` (the projected teacher [CLS] [B, H_student]); also Eq. 4 counts."""

    def step_loss(batch: Batch, cls: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = teacher_cls_for(batch)
        return activation_boundary_loss(cls, t, margin=margin), activation_transfer_count(cls, t)

    return step_loss


def kd_step_loss(teacher_logits: torch.Tensor, temperature: float, multi_label: bool) -> StepLoss:
    """Table 6's KD row: KL divergence to the cached teacher logits of the batch's examples."""

    def step_loss(batch: Batch, cls: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, None]:
        idx = batch.indices.to(teacher_logits.device, non_blocking=True)
        return kd_kl_loss(logits, teacher_logits[idx], temperature, multi_label), None

    return step_loss


def one_phase(step_loss: StepLoss) -> EpochLosses:
    """Every epoch trains on ``step_loss`` (teacher and student fine-tuning); no phase metric."""
    return lambda epoch0: (step_loss, None)


def distill_phases(distill_step: StepLoss, refine_step: StepLoss, epochs: int, gamma: float) -> EpochLosses:
    """Alg. 1 lines 3-10: 0-based epochs < int(epochs * gamma) distil, the rest refine."""
    switch = switch_epoch(epochs, gamma)

    def losses_for_epoch(epoch0: int) -> tuple[StepLoss, float]:
        return (distill_step, ABD_PHASE) if epoch0 < switch else (refine_step, REFINE_PHASE)

    return losses_for_epoch
