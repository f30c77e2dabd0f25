"""Ray Tune function trainables, one per DoKTra stage, plus the final-run dispatcher.

`final_trainable` runs one final run (`doktra_tune.run_spec.RunSpec`: its `stage` names the stage
function -- or `evaluate`, scoring an existing checkpoint -- its overrides, labels, and the model it
publishes), so a single Tuner runs every (variant x seed) of the final stage.
"""

from __future__ import annotations

from pathlib import Path

from doktra_tune.config import StageConfig
from doktra_tune.run_spec import RunSpec

from trainables.abd import abd_trainable, abd_trunk_trainable
from trainables.ctt import ctt_trainable
from trainables.evaluate import evaluate_trainable
from trainables.inputs import wait_for_models
from trainables.student import student_trainable

STAGE_TRAINABLES = {"ctt": ctt_trainable, "student": student_trainable, "abd": abd_trainable}
FINAL_TRAINABLES = {**STAGE_TRAINABLES, "evaluate": evaluate_trainable}


def final_trainable(
    config: dict, bases: dict[str, StageConfig], tracking: dict | None = None, models_dir: str | None = None,
) -> None:
    """One final run: `bases[spec.stage]` with the run's overrides applied; a run that `publish`es
    its model copies it to `<models_dir>/<name>` for the runs that read it."""
    spec = RunSpec.of_trial(config)
    stage = spec.stage
    if stage not in FINAL_TRAINABLES:
        raise ValueError(f"a final run needs a stage in {sorted(FINAL_TRAINABLES)}, got {stage!r}")
    if spec.needs:  # published by runs Tune saw complete; visible on this node within a bounded wait
        if models_dir is None:
            raise ValueError("a final run that reads published models needs models_dir")
        wait_for_models(Path(models_dir) / name for name in spec.needs)
    if spec.publish:
        if models_dir is None:
            raise ValueError("a final run that publishes its model needs models_dir")
        STAGE_TRAINABLES[stage](config, bases[stage], tracking, publish_to=Path(models_dir) / spec.publish)
    else:
        FINAL_TRAINABLES[stage](config, bases[stage], tracking)


__all__ = ["abd_trainable", "abd_trunk_trainable", "ctt_trainable", "evaluate_trainable", "final_trainable",
           "student_trainable"]
