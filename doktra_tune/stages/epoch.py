"""One training epoch: AdamW with the linear schedule, the seeds, and the pass over the batches.

Training recipe as in the authors' code: AdamW (eps 1e-8, no weight decay), linear schedule with 0
warm-up steps over all epochs, gradient-norm clipping at 1.0. Batches as ``StageConfig.batching`` says
(``encoding.make_batches``): random (the authors' RandomSampler) or length-bucketed, each padded to its longest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import get_linear_schedule_with_warmup

from doktra_tune.config import StageConfig
from doktra_tune.device import Runtime, autocast
from doktra_tune.encoding import EncodedSplit, collate
from doktra_tune.errors import NonFiniteLossError
from doktra_tune.models import forward_cls_logits
from doktra_tune.stages.step_losses import StepLoss

NAN_CHECK_EVERY = 16  # steps between (device-synchronising) finiteness checks of the running loss


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) for dropout; batch order is seeded separately (make_batches)."""
    torch.manual_seed(seed)


def epoch_batch_seed(seed: int, epoch: int) -> int:
    """Seed of the batch order of 0-based ``epoch`` (distinct per (seed, epoch))."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**32)


def build_optimizer(
    params: Sequence[torch.nn.Parameter], cfg: StageConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (eps=adam_eps, weight_decay) + linear decay with ``warmup_ratio`` warm-up (authors: 0).

    The schedule is transformers' ``get_linear_schedule_with_warmup``:
    the same factor, step for step, as the lambda it replaced (tests/unit/test_schedule.py)."""
    optimizer = torch.optim.AdamW(list(params), lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


@dataclass
class EpochStats:
    loss: float
    lat: float | None  # mean Eq. 4 count over the epoch's examples (ABD phase only)
    seconds: float  # wall clock
    steps: int
    cpu_seconds: float = 0.0  # process CPU time (all threads): robust to other load on the box


def train_epoch(
    model: torch.nn.Module,
    train: EncodedSplit,
    batches: list[list[int]],
    pad_token_id: int,
    step_loss: StepLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: Sequence[torch.nn.Parameter],
    *,
    max_grad_norm: float,
    rt: Runtime,
    pad_to: int | None = None,
) -> EpochStats:
    """One pass over ``batches``: forward ([CLS], logits), step_loss, backward, clip, AdamW, schedule.

    Batches are padded to their longest sequence (dynamic padding) unless ``pad_to`` is given.
    """
    model.train()
    start = time.perf_counter()
    cpu_start = time.process_time()
    running = torch.zeros((), device=rt.device, dtype=torch.float32)
    lat_sum = torch.zeros((), device=rt.device, dtype=torch.float32)
    lat_n = 0
    for step, indices in enumerate(batches, start=1):
        batch = collate(train, indices, pad_token_id, pad_to)
        with autocast(rt.device, rt.amp_dtype):
            cls, logits = forward_cls_logits(model, batch)
        loss, lat = step_loss(batch, cls.float(), logits.float())
        loss.backward()
        if max_grad_norm and max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.detach().float()
        if lat is not None:
            lat_sum += lat.sum()
            lat_n += int(lat.shape[0])
        if step % NAN_CHECK_EVERY == 0:
            check_finite(running, step)
    check_finite(running, len(batches))
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)
    steps = max(1, len(batches))
    return EpochStats(
        loss=float(running.item()) / steps,
        lat=float(lat_sum.item()) / lat_n if lat_n else None,
        seconds=time.perf_counter() - start,
        steps=len(batches),
        cpu_seconds=time.process_time() - cpu_start,
    )


def check_finite(running: torch.Tensor, step: int) -> None:
    """Raise ``NonFiniteLossError`` when the running loss is NaN or infinite."""
    if not bool(torch.isfinite(running)):
        raise NonFiniteLossError(
            f"training loss became non-finite by step {step}; lower the learning rate or use precision=fp32"
        )
