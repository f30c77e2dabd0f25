"""Ray Tune trainable for activation boundary distillation + refinement (Algorithm 1 lines 3-10).

`base` is a DistillConfig dict whose `model` is the fine-tuned student winner and whose
`teacher_checkpoint` is the CTT winner (both checkpoints on shared storage).
"""

from __future__ import annotations

from pathlib import Path

from doktra_tune.stages import distill
from trainables.common import run_trial


def abd_trainable(config: dict, base: dict, tracking: dict | None = None, publish_to: Path | None = None) -> None:
    """One ABD trial: `base` with `config` (e.g. {"lr": 1e-5, "beta": 0.5, "gamma": 0.9}) applied."""
    run_trial("abd", distill, config, base, tracking, publish_to=publish_to)
