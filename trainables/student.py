"""Ray Tune trainable for the initial student fine-tuning (Algorithm 1 line 2).

Every trial runs the longest e₁ considered and reports dev F1 per epoch; the search driver reads
e₁ as the best epoch of the winning trial (its best checkpoint is the one Tune keeps).
"""

from __future__ import annotations

from pathlib import Path

from doktra_tune.stages import train_student
from doktra_tune.config import StageConfig
from doktra_tune.run_spec import RunSpec
from trainables.trial import StageTrial


def student_trainable(config: dict, base: StageConfig, tracking: dict | None = None, publish_to: Path | None = None) -> None:
    """One student fine-tuning trial: `base` (a StageConfig) with `config` (e.g. {"lr": 1e-5})."""
    with StageTrial("student", RunSpec.of_trial(config), base, tracking, publish_to=publish_to) as trial:
        trial.finish(train_student(trial.stage_config, on_epoch=trial.on_epoch))
