"""Ray Tune function trainables, one per DoKTra stage, plus the final-run dispatcher.

`final_trainable` runs one final run spec (`config["run"]`: variant, seed, `stage` naming the
stage function and the hyperparameter overrides), so a single Tuner can `tune.grid_search` over
every (variant x seed) of the final runs.
"""

from __future__ import annotations

from trainables.abd import abd_trainable
from trainables.common import STAGE_KEY
from trainables.ctt import ctt_trainable
from trainables.student import student_trainable

STAGE_TRAINABLES = {"ctt": ctt_trainable, "student": student_trainable, "abd": abd_trainable}


def final_trainable(config: dict, bases: dict, tracking: dict | None = None) -> None:
    """One final run: `bases[stage]` with `config["run"]` applied (stage = run["stage"])."""
    stage = (config.get("run") or {}).get(STAGE_KEY)
    if stage not in STAGE_TRAINABLES:
        raise ValueError(f"final run spec needs {STAGE_KEY} in {sorted(STAGE_TRAINABLES)}, got {stage!r}")
    STAGE_TRAINABLES[stage](config, bases[stage], tracking)


__all__ = ["abd_trainable", "ctt_trainable", "final_trainable", "student_trainable"]
