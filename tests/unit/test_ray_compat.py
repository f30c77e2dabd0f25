"""The internal Ray names doktra_tune.ray_compat wraps are still there in the installed release
(pyproject.toml pins the tested range); a release that drops one fails here by name. No other
module names them, nor the private Ray/Optuna names the pruning bridge used before it was
rewritten on public APIs (they must not creep back)."""

from __future__ import annotations

import ast
from pathlib import Path

from doktra_tune.ray_compat import missing_internals

REPO = Path(__file__).resolve().parents[2]

# what ray_compat wraps now, and what the bridge no longer needs (issue 17, item 4)
WRAPPED = {"_private", "stop_trial", "is_saving", "execution"}
RETIRED = {"_ot_study", "_ot_trials", "_completed_trials", "_setup_study", "_trial_id", "_Bracket",
           "_hyperbands", "_trial_info", "_eta", "_max_t_attr", "_metric_op", "_local_tuner",
           "_tune_config", "_all_grids", "_search_space", "optuna_search"}


def test_every_wrapped_private_name_exists() -> None:
    missing = missing_internals()
    assert not missing, (
        "the installed Ray lacks internal names doktra_tune/ray_compat.py relies on: "
        + ", ".join(missing) + "; adapt ray_compat.py or install the range pinned in pyproject.toml"
    )


def test_no_other_module_touches_ray_or_optuna_internals() -> None:
    """Private attributes of Ray/Optuna objects and `ray._private` are read in ray_compat.py only."""
    private = WRAPPED | RETIRED
    offenders = []
    for path in [*REPO.glob("doktra_tune/**/*.py"), *REPO.glob("trainables/*.py"), *REPO.glob("analysis/*.py")]:
        if path.name == "ray_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Attribute):
                names.append(node.attr)
            elif isinstance(node, (ast.ImportFrom, ast.Import)):
                names += [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name and any(part in private for part in str(name).split(".")):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert not offenders, offenders
