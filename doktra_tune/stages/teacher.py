"""The frozen teacher's side of distillation: its cached [CLS] vectors and logits on a stage's splits,
and the map of those vectors to the student's width (Sec. 4.2), for training and for evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from doktra_tune.config import DataConfig
from doktra_tune.device import Runtime, resolve_runtime
from doktra_tune.losses import TeacherProjection, resolve_projection
from doktra_tune.models import is_checkpoint, read_meta
from doktra_tune.stages.checkpointing import PROJECTION_FILE
from doktra_tune.stages.splits import SplitData
from doktra_tune.tasks import TaskSpec
from doktra_tune.teacher_cache import teacher_outputs


@dataclass
class TeacherFeatures:
    """The teacher's outputs on each split, in the split's example order."""

    cls: dict[str, torch.Tensor]  # split -> [N, H_teacher] [CLS] vectors, on the stage's device
    logits: dict[str, np.ndarray]  # split -> [N, L] logits (the KD loss of Table 6 reads train's)

    @property
    def width(self) -> int:
        """H_teacher."""
        return int(next(iter(self.cls.values())).shape[1])


def teacher_features(
    teacher_checkpoint: str | Path, task: TaskSpec, splits: Sequence[SplitData], data: DataConfig,
    rt: Runtime, *, batch_size: int,
) -> TeacherFeatures:
    """The teacher's [CLS] vectors and logits on ``splits`` (from the teacher cache, computed on a miss)."""
    teacher_rt = teacher_runtime(teacher_checkpoint, rt)
    cls: dict[str, torch.Tensor] = {}
    logits: dict[str, np.ndarray] = {}
    for split in splits:
        outs = teacher_outputs(
            teacher_checkpoint, task, split.name, split.examples,
            max_len=data.max_len, cache_dir=data.cache_dir, device=rt.device,
            amp_dtype=teacher_rt.amp_dtype, tf32=teacher_rt.tf32, batch_size=batch_size,
        )
        cls[split.name] = torch.from_numpy(outs.cls).to(rt.device)
        logits[split.name] = outs.logits
    return TeacherFeatures(cls, logits)


def teacher_runtime(teacher_checkpoint: str | Path, rt: Runtime) -> Runtime:
    """The frozen teacher runs (for its cached [CLS]/logits) in the precision it was trained in
    (its checkpoint's config: autocast dtype and TF32), on this stage's device; checkpoints without
    one use the stage's."""
    meta = read_meta(teacher_checkpoint) if is_checkpoint(teacher_checkpoint) else {}
    precision = (meta.get("config") or {}).get("precision")
    if not precision:
        return rt
    return resolve_runtime(str(rt.device), str(precision))


def build_projection(
    requested: str, teacher_dim: int, student_dim: int, seed: int
) -> tuple[str, TeacherProjection | None]:
    """The projection mode ``requested`` resolves to and its map (None for identity: equal widths)."""
    mode = resolve_projection(requested, teacher_dim, student_dim)
    if mode == "identity":
        return mode, None
    return mode, TeacherProjection(teacher_dim, student_dim, mode=mode, seed=seed)


def projected_once(cls: dict[str, torch.Tensor], projection: TeacherProjection | None) -> dict[str, torch.Tensor]:
    """Per split, the teacher [CLS] a fixed map turns into the student's width, projected once; the raw
    vectors for identity and for a learned map (whose weights change: projected per batch)."""
    if projection is None or projection.trainable:
        return cls
    with torch.no_grad():
        return {name: projection(vecs).float() for name, vecs in cls.items()}


def projection_from_meta(
    ckpt: Path, meta: dict[str, Any], teacher_dim: int, student_dim: int
) -> TeacherProjection | None:
    """The teacher map a distilled student was trained against (None: identity)."""
    info = meta.get("projection") or {}
    _, projection = build_projection(str(info.get("mode", "fixed_random")), teacher_dim, student_dim,
                                     int(info.get("seed", 0)))
    if projection is None:
        return None
    weights = ckpt / PROJECTION_FILE
    if weights.is_file():
        projection.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    projection.eval()
    return projection
