"""Search-space files: the paper's grids (Section 4.2, Appendix A), overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from doktra_tune.errors import ConfigError
from doktra_tune.search_space import SearchSpace, load_search_space
from search_spaces import SEARCH_SPACES_DIR, search_space_path


def test_packaged_grids_are_the_papers():
    ctt = load_search_space("ctt")
    assert ctt.params == {"beta": [0.0, 0.3, 0.5, 0.7]}
    assert ctt.fixed == {"lr": 2e-5}
    assert ctt.source == SEARCH_SPACES_DIR / "ctt.yaml"
    assert ctt.grid_size == 4

    student = load_search_space("student")  # App. A: lr1 x e1, e1 in 5..10
    assert student.params == {"lr": [6e-6, 8e-6, 1e-5], "epochs": [5, 6, 7, 8, 9, 10]}
    assert student.fixed == {} and student.grid_size == 18
    assert all(isinstance(e, int) for e in student.params["epochs"])
    # fixed_values take a hyperparameter out of the grid (e1_mode=best_epoch: one run of 10 epochs)
    cheap = load_search_space("student", fixed_values={"epochs": 10})
    assert cheap.params == {"lr": [6e-6, 8e-6, 1e-5]} and cheap.fixed == {"epochs": 10}

    abd = load_search_space("abd")
    assert abd.params == {
        "lr": [6e-6, 8e-6, 1e-5],
        "beta": [0.0, 0.3, 0.5, 0.7],
        "gamma": [0.6, 0.7, 0.8, 0.9],
    }
    assert abd.fixed == {"epochs": 10}
    assert abd.grid_size == 3 * 4 * 4
    assert search_space_path("abd") == SEARCH_SPACES_DIR / "abd.yaml"


def test_overrides_replace_grids_and_fixed_values():
    abd = load_search_space("abd", overrides={"beta": [0, 0.5], "gamma": 0.9, "epochs": [4]})
    assert abd.params["beta"] == [0.0, 0.5]
    assert all(isinstance(b, float) for b in abd.params["beta"])
    assert abd.params["gamma"] == [0.9]
    assert abd.params["lr"] == [6e-6, 8e-6, 1e-5]
    assert abd.fixed == {"epochs": 4}
    assert abd.grid_size == 3 * 2 * 1
    # a grid is replaced; a fixed value given several values becomes searched
    student = load_search_space("student", overrides={"epochs": [3, 5]})
    assert student.params == {"lr": [6e-6, 8e-6, 1e-5], "epochs": [3, 5]}
    assert student.fixed == {}
    ctt_e = load_search_space("ctt", overrides={"lr": [1e-5, 2e-5]})
    assert ctt_e.params == {"beta": [0.0, 0.3, 0.5, 0.7], "lr": [1e-5, 2e-5]} and ctt_e.fixed == {}
    # a known hyperparameter not in the file joins the grid
    ctt = load_search_space("ctt", overrides={"epochs": [3]})
    assert ctt.params == {"beta": [0.0, 0.3, 0.5, 0.7], "epochs": [3]}


def test_user_file_and_yaml_strings_like_6e_6(tmp_path: Path):
    path = tmp_path / "my_abd.yaml"
    # PyYAML reads 6e-6 (no dot) as a string; it is still accepted as the number
    path.write_text("stage: abd\nparams:\n  lr: [6e-6, 1e-5]\n  gamma: [1]\nfixed:\n  epochs: 2\n")
    space = load_search_space("abd", path)
    assert space == SearchSpace(
        stage="abd", params={"lr": [6e-6, 1e-5], "gamma": [1.0]}, fixed={"epochs": 2}, source=path
    )


@pytest.mark.parametrize(
    ("stage", "overrides", "message"),
    [
        ("abd", {"temperature": [1]},
         "override temperature=[1]: unknown hyperparameter 'temperature' for stage abd; use one of"),
        ("ctt", {"gamma": [0.5]}, "unknown hyperparameter 'gamma' for stage ctt"),
        ("abd", {"lr": ["fast"]},
         "override lr=[fast]: lr: value 'fast' is not a number; use values like lr=[6e-6, 1e-5]"),
        ("abd", {"lr": [True]}, "value True is not a number"),
        ("abd", {"beta": []}, "override beta=[]: the grid of 'beta' is empty; give at least one"),
        ("abd", {"lr": [-1e-5]}, "value -1e-05 is out of range (lr must be > 0)"),
        ("abd", {"lr": [0]}, "value 0 is out of range (lr must be > 0)"),
        ("abd", {"beta": [-0.1]}, "value -0.1 is out of range (beta must be >= 0)"),
        ("abd", {"gamma": [0]}, "value 0 is out of range (gamma must be in (0, 1])"),
        ("abd", {"gamma": [1.5]}, "value 1.5 is out of range (gamma must be in (0, 1])"),
        ("abd", {"epochs": [0]}, "value 0 is out of range (epochs must be an integer >= 1)"),
        ("student", {"epochs": [2.5]}, "value 2.5 is not an integer"),
        ("abd", {"beta": [0.3, 0.3]}, "the grid of 'beta' repeats [0.3]; list each value once"),
    ],
)
def test_bad_overrides_raise_one_line(stage, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_search_space(stage, overrides=overrides)
    text = str(err.value)
    assert message in text
    assert "\n" not in text
    assert ";" in text  # "<problem>; <fix>"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("stage: abd\nparams:\n  gamma: [0.6, 1.2]\n", "gamma: value 1.2 is out of range"),
        ("stage: abd\nparams:\n  lr: []\n", "the grid of 'lr' is empty"),
        ("stage: abd\nparams:\n  gamma: [0.6]\nfixed:\n  epochs: 0\n",
         "fixed epochs: value 0 is out of range"),
        ("stage: abd\nparams:\n  gamma: [0.6]\nfixed:\n  gamma: 0.7\n",
         "'gamma' is both searched (params) and fixed"),
        ("stage: ctt\nparams:\n  beta: [0]\n", "the file is for stage 'ctt', not 'abd'"),
        ("stage: abd\nparams: {}\n", "the abd grid is empty"),
        ("stage: abd\ngrid:\n  lr: [1e-5]\n", "unknown top-level key(s) ['grid']"),
        ("stage: abd\nparams: [lr]\n", "'params' must be a mapping"),
        ("stage: abd\nparams:\n  lr: [1e-5\n", "not valid YAML"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, content, message):
    path = tmp_path / "abd.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_search_space("abd", path)
    text = str(err.value)
    assert message in text
    assert str(path) in text
    assert "\n" not in text


def test_missing_file_and_unknown_stage(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_search_space("abd", tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="unknown search stage 'kd'; use one of ctt, student, abd"):
        load_search_space("kd")


def test_abd_pruning_waits_until_every_gamma_refines() -> None:
    """Alg. 1 line 3: ABD epochs < int(gamma * e2) fit Eq. 5; dev F1 only ranks refining trials."""
    from doktra_tune.search.search_algorithms import pruning_grace_period

    paper = SearchSpace(stage="abd", params={"lr": [1e-5], "gamma": [0.6, 0.7, 0.8, 0.9]}, fixed={"epochs": 10})
    assert pruning_grace_period("abd", 1, 10, paper, {}) == 10  # int(0.9 * 10) + 1: no earlier pruning
    early = SearchSpace(stage="abd", params={"gamma": [0.2, 0.3]}, fixed={"epochs": 10})
    assert pruning_grace_period("abd", 1, 10, early, {}) == 4  # int(0.3 * 10) + 1
    assert pruning_grace_period("abd", 6, 10, early, {}) == 6  # a later grace period stands
    fixed = SearchSpace(stage="abd", params={"lr": [1e-5, 2e-5]}, fixed={"epochs": 10})
    assert pruning_grace_period("abd", 1, 10, fixed, {"gamma": 0.5}) == 6  # gamma from the base config
    student = SearchSpace(stage="student", params={"lr": [1e-5]}, fixed={"epochs": 10})
    assert pruning_grace_period("student", 1, 10, student, {}) == 1
    assert pruning_grace_period("student", 20, 10, student, {}) == 10  # capped at max_t
