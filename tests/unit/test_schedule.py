"""The stages' linear LR schedule (transformers' get_linear_schedule_with_warmup) against the lambda it
replaced (doktra_tune/stages.py before issue 17): the same learning rate, bit for bit, at every step."""

from __future__ import annotations

import pytest
import torch

from doktra_tune.config import DataConfig, StageConfig
from doktra_tune.stages.epoch import build_optimizer


def _replaced_factor(total_steps: int, warmup: int):
    """The hand-written schedule factor the stages used until issue 17."""

    def factor(step: int) -> float:
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup)))

    return factor


def _lr_sequence(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


@pytest.mark.parametrize(
    ("lr", "warmup_ratio", "total_steps"),
    [(2e-5, 0.0, 40), (6e-6, 0.0, 7), (1e-5, 0.0, 1), (3e-4, 0.1, 40), (8e-6, 0.25, 13), (2e-5, 0.5, 9), (1e-3, 0.9, 6)],
)
def test_linear_schedule_matches_the_replaced_lambda(lr: float, warmup_ratio: float, total_steps: int) -> None:
    cfg = StageConfig(data=DataConfig(task="chemprot", data_dir="unused"), model="unused", output_dir="unused",
                      lr=lr, warmup_ratio=warmup_ratio)
    ours, ours_scheduler = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg, total_steps)
    reference = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr, eps=cfg.adam_eps, weight_decay=0.0)
    reference_scheduler = torch.optim.lr_scheduler.LambdaLR(
        reference, _replaced_factor(total_steps, int(warmup_ratio * total_steps)))
    steps = total_steps + 3  # past the end too: the factor stays 0
    assert _lr_sequence(ours, ours_scheduler, steps) == _lr_sequence(reference, reference_scheduler, steps)


def test_schedule_state_written_by_the_replaced_lambda_resumes() -> None:
    """A training_state.pt of a run before issue 17 (lambda schedule) resumes onto the same rates."""
    cfg = StageConfig(data=DataConfig(task="chemprot", data_dir="unused"), model="unused", output_dir="unused")
    reference = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    reference_scheduler = torch.optim.lr_scheduler.LambdaLR(reference, _replaced_factor(20, 0))
    _lr_sequence(reference, reference_scheduler, 8)
    ours, ours_scheduler = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg, 20)
    ours.load_state_dict(reference.state_dict())
    ours_scheduler.load_state_dict(reference_scheduler.state_dict())
    assert _lr_sequence(ours, ours_scheduler, 14) == _lr_sequence(reference, reference_scheduler, 14)
