"""Ray Tune trainable for calibrated teacher training (CTT, Algorithm 1 line 1; Eq. 2 with β₁)."""

from __future__ import annotations

from pathlib import Path

from doktra_tune.stages import train_teacher
from trainables.trial import StageTrial


def ctt_trainable(config: dict, base: dict, tracking: dict | None = None, publish_to: Path | None = None) -> None:
    """One CTT trial: `base` (a StageConfig dict) with `config` (e.g. {"beta": 0.3}) applied."""
    with StageTrial("ctt", config, base, tracking, publish_to=publish_to) as trial:
        trial.finish(train_teacher(trial.stage_config, on_epoch=trial.on_epoch))
