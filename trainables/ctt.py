"""Ray Tune trainable for calibrated teacher training (CTT, Algorithm 1 line 1; Eq. 2 with β₁)."""

from __future__ import annotations

from pathlib import Path

from doktra_tune.stages import train_teacher
from doktra_tune.config import StageConfig
from doktra_tune.run_spec import RunSpec
from trainables.trial import StageTrial


def ctt_trainable(config: dict, base: StageConfig, tracking: dict | None = None, publish_to: Path | None = None) -> None:
    """One CTT trial: `base` (a StageConfig) with `config` (e.g. {"beta": 0.3}) applied."""
    with StageTrial("ctt", RunSpec.of_trial(config), base, tracking, publish_to=publish_to) as trial:
        trial.finish(train_teacher(trial.stage_config, on_epoch=trial.on_epoch))
