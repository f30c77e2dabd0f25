"""The paper's hyperparameter grids as editable YAML files, one per DoKTra stage.

`ctt.yaml` (calibrated teacher training, beta1), `student.yaml` (student fine-tuning, lr1 and e1)
and `abd.yaml` (activation boundary distillation, lr2, beta2, gamma): Section 4.2 and Appendix A of
Choi et al. (ACL 2022). Load them with `doktra_tune.search_space.load_search_space`.
"""

from __future__ import annotations

from pathlib import Path

SEARCH_SPACES_DIR = Path(__file__).resolve().parent
STAGES = ("ctt", "student", "abd")


def search_space_path(stage: str) -> Path:
    """Path of the packaged grid file for `stage` (`ctt`, `student` or `abd`)."""
    return SEARCH_SPACES_DIR / f"{stage}.yaml"
