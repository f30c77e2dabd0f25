"""The paper's three directions (§4.5, Table 5), seed by seed: does CTT lower the teacher's ECE, is
L_AT lower when distilling from the CTT teacher, does the DoKTra student beat the fine-tuned student?

Under the chain protocol each seed's DoKTra (`doktra`) and DoKTra−CTT (`doktra_no_ctt`) students
start from that seed's fine-tuned student and distil from that seed's CTT / β₁ = 0 teacher, so each
seed is one paired comparison. Under `shared_models` every seed's two distillations start from the
first seed's student and distil from the first seed's two teachers: the L_AT direction is still a
pair per seed (same student, the two teachers), while the teacher-ECE and student-ft rows of a seed
are that seed's own re-runs. L_AT (Eq. 4, sign disagreements of the [CLS] units) is shown at three
points: on dev before ABD (`dev_lat_start`: the fine-tuned student against each projected teacher,
the baseline), on dev at the switch epoch (`dev_lat_switch`), and on test after refinement
(`test_lat`, Table 5's column). F1 and ECE are test scores (%).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.results import MISSING, TASK_NAMES, ordered_tasks

# column -> (variant, metric, scale)
_VALUES = {
    "teacher ECE β₁=0": ("teacher_ft", "test_ece", 100.0),
    "teacher ECE CTT": ("teacher_ctt", "test_ece", 100.0),
    "dev L_AT before ABD, β₁=0 teacher": ("doktra_no_ctt", "dev_lat_start", 1.0),
    "dev L_AT before ABD, CTT teacher": ("doktra", "dev_lat_start", 1.0),
    "dev L_AT at switch, DoKTra−CTT": ("doktra_no_ctt", "dev_lat_switch", 1.0),
    "dev L_AT at switch, DoKTra": ("doktra", "dev_lat_switch", 1.0),
    "test L_AT, DoKTra−CTT": ("doktra_no_ctt", "test_lat", 1.0),
    "test L_AT, DoKTra": ("doktra", "test_lat", 1.0),
    "student-ft F1": ("student_ft", "test_f1", 100.0),
    "DoKTra F1": ("doktra", "test_f1", 100.0),
}
# direction -> (the column that should be lower, the column it is compared with)
DIRECTIONS = {
    "CTT lowers teacher ECE": ("teacher ECE CTT", "teacher ECE β₁=0"),
    "L_AT lower with CTT (test)": ("test L_AT, DoKTra", "test L_AT, DoKTra−CTT"),
    "DoKTra above student-ft": ("student-ft F1", "DoKTra F1"),
}


def _value(results: pd.DataFrame, task: str, seed: str, variant: str, metric: str) -> float:
    rows = results[(results["task"] == task) & (results["seed"] == seed) & (results["variant"] == variant)]
    values = pd.to_numeric(rows[metric], errors="coerce").dropna() if metric in rows else pd.Series(dtype=float)
    return float(values.mean()) if len(values) else math.nan  # GAD: the mean over the seed's folds


def _holds(lower: float, higher: float) -> str:
    if math.isnan(lower) or math.isnan(higher):
        return MISSING
    return "yes" if lower < higher else "no"


def directions(results: pd.DataFrame) -> pd.DataFrame | None:
    """One row per (task, seed) with the values behind each direction and whether it holds, then a
    row per task counting the seeds where it holds; None without both DoKTra variants."""
    if not {"doktra", "doktra_no_ctt"} <= set(results["variant"]):
        return None
    rows = []
    for task in ordered_tasks(results["task"].unique()):
        seeds = sorted(results.loc[results["task"] == task, "seed"].dropna().unique(), key=lambda s: int(s))
        held = {name: 0 for name in DIRECTIONS}
        for seed in seeds:
            values = {col: _value(results, task, seed, v, m) * scale for col, (v, m, scale) in _VALUES.items()}
            verdicts = {name: _holds(values[lo], values[hi]) for name, (lo, hi) in DIRECTIONS.items()}
            for name, verdict in verdicts.items():
                held[name] += verdict == "yes"
            rows.append({"Task": TASK_NAMES.get(task, task), "seed": str(seed),
                         **{c: MISSING if math.isnan(v) else f"{v:.2f}" for c, v in values.items()}, **verdicts})
        rows.append({"Task": TASK_NAMES.get(task, task), "seed": "seeds where it holds",
                     **{c: "" for c in _VALUES}, **{name: f"{n} of {len(seeds)}" for name, n in held.items()}})
    return pd.DataFrame(rows)
