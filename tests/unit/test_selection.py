"""doktra_tune.selection: the one winner rule, on constructed rows with known answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from doktra_tune.errors import ConfigError
from doktra_tune.selection import (
    NoWinnerError,
    SelectionRule,
    pareto_front,
    select_winner,
)

NAN = math.nan


def rows(f1, ece=None, status=None) -> pd.DataFrame:
    data = {"trial": [f"t{i}" for i in range(len(f1))], "dev_f1": f1}
    if ece is not None:
        data["dev_ece"] = ece
    if status is not None:
        data["status"] = status
    return pd.DataFrame(data)


def test_default_is_lexicographic_zero_tolerance() -> None:
    rule = SelectionRule()
    assert (rule.kind, rule.use_ece, rule.f1_tolerance) == ("lexicographic", True, 0.0)


def test_highest_f1_wins_ece_breaks_exact_ties() -> None:
    df = rows([0.70, 0.80, 0.80, 0.79], [0.01, 0.09, 0.05, 0.00])
    assert select_winner(df, SelectionRule())["trial"] == "t2"  # F1 tie -> lower ECE
    assert select_winner(df, SelectionRule(use_ece=False))["trial"] == "t1"  # F1 alone: earlier


def test_full_ties_go_to_the_earlier_row() -> None:
    df = rows([0.5, 0.8, 0.8, 0.8], [0.1, 0.2, 0.2, 0.2])
    winner = select_winner(df, SelectionRule())
    assert winner["trial"] == "t1" and winner.name == 1


def test_nan_f1_never_wins_nan_ece_loses_ece_ties() -> None:
    df = rows([NAN, 0.6, 0.6], [0.0, NAN, 0.3])
    assert select_winner(df, SelectionRule())["trial"] == "t2"
    df = rows([NAN, 0.6, 0.5], [0.0, NAN, 0.0])
    assert select_winner(df, SelectionRule())["trial"] == "t1"  # NaN ECE can still win on F1


def test_pruned_and_errored_rows_never_win() -> None:
    df = rows([0.9, 0.95, 0.7, 0.6], [0.1, 0.1, 0.1, 0.1],
              ["pruned", "errored", "completed", "completed"])
    assert select_winner(df, SelectionRule(), status_col="status")["trial"] == "t2"
    assert select_winner(df, SelectionRule())["trial"] == "t1"  # without a status column


def test_no_eligible_row_is_a_one_line_error() -> None:
    df = rows([NAN, 0.9], [0.1, 0.1], ["completed", "errored"])
    with pytest.raises(NoWinnerError) as err:
        select_winner(df, SelectionRule(), status_col="status")
    assert "\n" not in str(err.value) and "; " in str(err.value)


def test_tolerance_lets_close_f1_compete_on_ece() -> None:
    df = rows([0.80, 0.81, 0.79, 0.805], [0.04, 0.10, 0.01, 0.06])
    assert select_winner(df, SelectionRule())["trial"] == "t1"
    # within 0.01 of 0.81: t0 (0.80, exactly on the boundary), t1, t3 -> lowest ECE t0
    assert select_winner(df, SelectionRule(f1_tolerance=0.01))["trial"] == "t0"
    assert select_winner(df, SelectionRule(f1_tolerance=0.02))["trial"] == "t2"
    # tolerance is ignored when ECE is not a criterion
    assert select_winner(df, SelectionRule(use_ece=False, f1_tolerance=0.02))["trial"] == "t1"


def test_pareto_front_and_winner() -> None:
    df = rows([0.80, 0.78, 0.75, 0.80, 0.70], [0.05, 0.02, 0.03, 0.04, 0.01])
    front = pareto_front(df)
    # t0 is dominated by t3 (same F1, lower ECE); t2 by t1
    assert list(front["trial"]) == ["t1", "t3", "t4"]
    assert select_winner(df, SelectionRule(kind="pareto"))["trial"] == "t3"
    assert select_winner(df, SelectionRule(kind="pareto", f1_tolerance=0.02))["trial"] == "t1"


def test_epoch_rows_and_custom_columns() -> None:
    df = pd.DataFrame({"trial": ["a", "a", "b", "b"], "epoch": [1, 2, 1, 2],
                       "f1": [0.5, 0.7, 0.6, 0.7], "ece": [0.2, 0.1, 0.2, 0.05]})
    winner = select_winner(df, SelectionRule(), f1_col="f1", ece_col="ece")
    assert (winner["trial"], winner["epoch"]) == ("b", 2)


def test_bad_rule_and_missing_column_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        SelectionRule(kind="best")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SelectionRule(f1_tolerance=-0.1)
    with pytest.raises(ConfigError, match="dev_f1"):
        select_winner(pd.DataFrame({"f1": [0.1]}), SelectionRule())
