"""The one winner-selection rule, shared by the search driver and the analysis.

Every stage picks its winner on the development set (paper §4.2: "Every hyperparameter was tuned
on the development set"): dev F1 first; for the calibrated teacher (CTT, Algorithm 1 line 1) the
expected calibration error (App. A.1) is the second criterion, because a teacher that is as
accurate but better calibrated distils better (Table 5).

Default (`SelectionRule()`): lexicographic, `f1_tolerance=0.0`, `use_ece=True` — the highest dev F1
wins; among rows with exactly that F1 the lowest dev ECE wins; remaining ties go to the earliest
row. With `f1_tolerance=t > 0`, every row whose F1 is within `t` of the best competes on ECE.

`kind="pareto"`: the rows that are non-dominated in (max F1, min ECE) form the front; the winner is
the front member with the highest F1 (ties: lowest ECE, then earliest row). With the same
tolerance this picks the same row as the lexicographic rule — the highest-F1 row is always on the
front — but `pareto_front` exposes the whole front for reporting.

Rows are (trial, epoch) reports or whole runs. Rows with a NaN/missing F1, and rows whose status
says pruned/errored, never win. A missing/NaN ECE counts as +inf (it loses ECE comparisons but can
still win on F1). Ties go to the earlier row in the frame's order, so the result is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd

from doktra_tune.errors import ConfigError, DoktraError

SelectionKind = Literal["lexicographic", "pareto"]
SELECTION_KINDS: tuple[str, ...] = get_args(SelectionKind)
# Status values (our doktra.status tags, Ray trial states, MLflow run states) that can never win.
INELIGIBLE_STATUSES = frozenset(
    {"pruned", "errored", "error", "failed", "killed", "terminated_early"}
)
_EPS = 1e-12  # float slack for the tolerance comparison (0.80 vs 0.81 - 0.01)


class NoWinnerError(DoktraError):
    """No row is eligible to win (all NaN F1, pruned or errored)."""


@dataclass(frozen=True)
class SelectionRule:
    """How a stage's winner is chosen on the dev set (see the module docstring)."""

    kind: SelectionKind = "lexicographic"
    use_ece: bool = True  # ECE as the second criterion (CTT); False: F1 alone (student, ABD)
    f1_tolerance: float = 0.0  # lexicographic: rows within this of the best F1 compete on ECE

    def __post_init__(self) -> None:
        if self.kind not in SELECTION_KINDS:
            raise ConfigError(
                f"unknown selection kind {self.kind!r}; use one of {', '.join(SELECTION_KINDS)}"
            )
        if not (isinstance(self.f1_tolerance, (int, float)) and self.f1_tolerance >= 0):
            raise ConfigError(
                f"selection f1_tolerance must be a number >= 0, got {self.f1_tolerance!r}; "
                "set it to e.g. 0.0 or 0.005"
            )


def _eligible(rows: pd.DataFrame, f1_col: str, status_col: str | None) -> np.ndarray:
    f1 = pd.to_numeric(rows[f1_col], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(f1)
    if status_col is not None:
        status = rows[status_col].astype("string").str.strip().str.lower().fillna("")
        ok &= ~status.isin(INELIGIBLE_STATUSES).to_numpy(dtype=bool)
    return ok


def _ece_values(rows: pd.DataFrame, ece_col: str, use_ece: bool) -> np.ndarray:
    if not use_ece or ece_col not in rows.columns:
        return np.zeros(len(rows))
    ece = pd.to_numeric(rows[ece_col], errors="coerce").to_numpy(dtype=float)
    return np.where(np.isfinite(ece), ece, math.inf)


def _check_columns(rows: pd.DataFrame, f1_col: str, status_col: str | None) -> None:
    missing = [c for c in (f1_col, status_col) if c is not None and c not in rows.columns]
    if missing:
        raise ConfigError(
            f"selection needs column(s) {missing} but the rows have {sorted(map(str, rows.columns))}; "
            "pass f1_col/status_col naming existing columns"
        )


def pareto_front(
    rows: pd.DataFrame,
    *,
    f1_col: str = "dev_f1",
    ece_col: str = "dev_ece",
    status_col: str | None = None,
) -> pd.DataFrame:
    """Eligible rows not dominated in (max F1, min ECE), in the frame's order."""
    _check_columns(rows, f1_col, status_col)
    return rows.iloc[_pareto_positions(rows, f1_col, ece_col, status_col)]


def _pareto_positions(
    rows: pd.DataFrame, f1_col: str, ece_col: str, status_col: str | None
) -> list[int]:
    ok = _eligible(rows, f1_col, status_col)
    f1 = pd.to_numeric(rows[f1_col], errors="coerce").to_numpy(dtype=float)
    ece = _ece_values(rows, ece_col, True)
    idx = np.flatnonzero(ok)
    keep: list[int] = []
    for i in idx:
        dominated = np.any(
            (f1[idx] >= f1[i]) & (ece[idx] <= ece[i]) & ((f1[idx] > f1[i]) | (ece[idx] < ece[i]))
        )
        if not dominated:
            keep.append(int(i))
    return keep


def select_winner(
    rows: pd.DataFrame,
    rule: SelectionRule,
    *,
    f1_col: str = "dev_f1",
    ece_col: str = "dev_ece",
    status_col: str | None = None,
) -> pd.Series:
    """The winning row (a copy of `rows.iloc[i]`, its `.name` is the row's index label).

    Raises `NoWinnerError` (one line) when no row is eligible.
    """
    _check_columns(rows, f1_col, status_col)
    ok = _eligible(rows, f1_col, status_col)
    if not ok.any():
        raise NoWinnerError(
            f"no eligible row among {len(rows)} to select a winner from (every {f1_col} is NaN "
            "or every trial was pruned/errored); inspect the stage's trials in MLflow and rerun "
            "the stage with a wider search space or more epochs"
        )
    f1 = pd.to_numeric(rows[f1_col], errors="coerce").to_numpy(dtype=float)
    ece = _ece_values(rows, ece_col, rule.use_ece)
    if rule.kind == "pareto" and rule.use_ece:
        candidates = np.array(_pareto_positions(rows, f1_col, ece_col, status_col), dtype=int)
    else:
        candidates = np.flatnonzero(ok)
    best = f1[candidates].max()
    tolerance = rule.f1_tolerance if rule.use_ece else 0.0
    close = candidates[f1[candidates] >= best - tolerance - _EPS]
    if rule.use_ece:
        # lowest ECE; among equal ECE the highest F1; then the earliest row (stable sort)
        order = sorted(range(len(close)), key=lambda k: (ece[close[k]], -f1[close[k]], close[k]))
        winner = close[order[0]]
    else:
        winner = close[0]
    return rows.iloc[int(winner)].copy()
