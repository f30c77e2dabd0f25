"""Ray Tune function trainables, one per DoKTra stage, plus the final-run dispatcher.

`final_trainable` runs one final run spec (`config["run"]`: variant, seed, `stage` naming the
stage function -- or `evaluate`, scoring an existing checkpoint -- and the hyperparameter
overrides), so a single Tuner can `tune.grid_search` over every (variant x seed) of a final wave.
"""

from __future__ import annotations

from pathlib import Path

from trainables.abd import abd_trainable, abd_trunk_trainable
from trainables.ctt import ctt_trainable
from trainables.evaluate import evaluate_trainable
from trainables.run_spec import STAGE_KEY
from trainables.student import student_trainable

STAGE_TRAINABLES = {"ctt": ctt_trainable, "student": student_trainable, "abd": abd_trainable}
FINAL_TRAINABLES = {**STAGE_TRAINABLES, "evaluate": evaluate_trainable}


def final_trainable(config: dict, bases: dict, tracking: dict | None = None, models_dir: str | None = None) -> None:
    """One final run: `bases[stage]` with `config["run"]` applied (stage = run["stage"]); a run that
    `publish`es its model copies it to `<models_dir>/<name>` for the runs that read it."""
    run = config.get("run") or {}
    stage = run.get(STAGE_KEY)
    if stage not in FINAL_TRAINABLES:
        raise ValueError(f"final run spec needs {STAGE_KEY} in {sorted(FINAL_TRAINABLES)}, got {stage!r}")
    if run.get("publish"):
        if models_dir is None:
            raise ValueError("a final run that publishes its model needs models_dir")
        STAGE_TRAINABLES[stage](config, bases[stage], tracking, publish_to=Path(models_dir) / run["publish"])
    else:
        FINAL_TRAINABLES[stage](config, bases[stage], tracking)


__all__ = ["abd_trainable", "abd_trunk_trainable", "ctt_trainable", "evaluate_trainable", "final_trainable",
           "student_trainable"]
