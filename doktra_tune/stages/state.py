"""What the stage loop needs from a stage recipe: its model, data, parameters and per-epoch loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from doktra_tune.config import StageConfig
from doktra_tune.device import Runtime
from doktra_tune.losses import TeacherProjection
from doktra_tune.stages.splits import SplitData
from doktra_tune.stages.step_losses import EpochLosses
from doktra_tune.tasks import TaskSpec


@dataclass
class StageState:
    """Everything the generic epoch loop needs from a stage."""

    name: str  # "ctt", "student" or "abd": the checkpoints' stage
    cfg: StageConfig
    task: TaskSpec
    model: torch.nn.Module
    tokenizer: Any
    model_spec: str
    train: SplitData
    evals: dict[str, SplitData]
    params: list[torch.nn.Parameter]
    rt: Runtime
    losses_for_epoch: EpochLosses  # 0-based epoch -> (step loss, phase)
    teacher_cls: dict[str, torch.Tensor] = field(default_factory=dict)  # split -> projected teacher [CLS]
    projection: TeacherProjection | None = None  # a learned map, applied per batch
    extra_meta: dict[str, Any] = field(default_factory=dict)  # more doktra_meta.json fields
    switch_epoch: int | None = None  # ABD: the last activation-boundary epoch (1-based; 0: none)
