"""Search spaces: the paper's grids (Section 4.2, Appendix A) loaded from `search_spaces/*.yaml`.

A `SearchSpace` holds, for one stage, the grid of every searched hyperparameter (`params`) and the
values every trial shares (`fixed`). `load_search_space` reads the packaged file (or a user's file),
applies command-line overrides and validates every value against the ranges of
`doktra_tune.config` (each field's own rule, the one its stage config checks), raising a one-line `ConfigError`
that names the file or override and the fix.

Turning a `SearchSpace` into a Ray Tune searcher and scheduler (Optuna grid/TPE sampling and
pruning) is the search driver's job: `doktra_tune.search.search_algorithms.build_search`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from doktra_tune.config import DistillConfig, FieldRule, StageConfig, field_rule
from doktra_tune.errors import ConfigError
from search_spaces import STAGES, search_space_path

# The StageConfig / DistillConfig fields a stage may search or fix; each field's range is its own
# rule (doktra_tune.config.field_rule), the one the stage config checks itself against.
_STAGE_FIELDS = ("lr", "beta", "weight_decay", "warmup_ratio", "adam_eps", "max_grad_norm", "epochs", "batch_size", "seed")
_DISTILL_FIELDS = ("gamma", "margin", "kd_temperature")

#: hyperparameters each stage may search or fix, with their rules
HYPERPARAMETERS: dict[str, dict[str, FieldRule]] = {
    "ctt": {name: field_rule(StageConfig, name) for name in _STAGE_FIELDS},
    "student": {name: field_rule(StageConfig, name) for name in _STAGE_FIELDS},
    "abd": {name: field_rule(DistillConfig, name) for name in (*_STAGE_FIELDS, *_DISTILL_FIELDS)},
}


@dataclass
class SearchSpace:
    """One stage's grid: `params` maps each searched hyperparameter to its values (the grid),
    `fixed` holds the values every trial shares, `source` is the YAML file it came from."""

    stage: str
    params: dict[str, list] = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    source: Path = Path()

    @property
    def grid_size(self) -> int:
        """Number of points of the full grid (product of the grid lengths)."""
        return math.prod(len(values) for values in self.params.values())

    def points(self) -> list[dict[str, Any]]:
        """Every point of the grid in search order (`grid_points`)."""
        return grid_points(self.params)


def grid_points(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every point of a grid in search order: the plain product of the value lists, parameters
    sorted by name, values as listed (the same order for every seed and every rerun)."""
    names = sorted(params)
    return [dict(zip(names, values)) for values in itertools.product(*(list(params[n]) for n in names))]


def load_search_space(
    stage: str, path: str | Path | None = None, overrides: dict | None = None, fixed_values: dict | None = None,
) -> SearchSpace:
    """Read, override and validate one stage's grid.

    `path` None reads the packaged `search_spaces/<stage>.yaml`. `overrides` maps a hyperparameter
    to its new grid (a list, or a scalar meaning a one-value grid): a key of `params` gets the new
    grid; a key of `fixed` gets the new value (a one-value list or scalar) or becomes searched
    (a list of several values); a new known key is added to the grid. `fixed_values` (e.g. the
    stage's epochs) are shared by every trial: a hyperparameter named there is not searched.
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown search stage {stage!r}; use one of {', '.join(STAGES)}")
    source = Path(path).expanduser() if path is not None else search_space_path(stage)
    where = str(source)
    raw = _read_yaml(source)

    unknown_top = sorted(set(raw) - {"stage", "params", "fixed"})
    if unknown_top:
        raise ConfigError(
            f"{where}: unknown top-level key(s) {unknown_top}; "
            "a search-space file holds only 'stage', 'params' and 'fixed'"
        )
    file_stage = raw.get("stage", stage)
    if file_stage != stage:
        raise ConfigError(
            f"{where}: the file is for stage {file_stage!r}, not {stage!r}; "
            f"point the {stage} search at a {stage} grid file"
        )
    raw_params = raw.get("params") or {}
    raw_fixed = raw.get("fixed") or {}
    for key, section in (("params", raw_params), ("fixed", raw_fixed)):
        if not isinstance(section, Mapping):
            raise ConfigError(
                f"{where}: '{key}' must be a mapping of hyperparameter names, got "
                f"{type(section).__name__}; write it as '{key}:' followed by 'name: value' lines"
            )

    rules = HYPERPARAMETERS[stage]
    params: dict[str, list] = {}
    fixed: dict[str, Any] = {}
    for name, values in raw_params.items():
        params[name] = _validate_grid(stage, rules, name, values, where)
    for name, value in raw_fixed.items():
        if name in params:
            raise ConfigError(
                f"{where}: {name!r} is both searched (params) and fixed; keep it in one section"
            )
        fixed[name] = _validate_value(stage, rules, name, value, f"{where}: fixed {name}")

    _apply_overrides(stage, rules, params, fixed, overrides or {}, fixed_values or {})

    if not params:
        raise ConfigError(
            f"{where}: the {stage} grid is empty; add at least one hyperparameter under 'params'"
        )
    return SearchSpace(stage=stage, params=params, fixed=fixed, source=source)


def _apply_overrides(
    stage: str, rules: Mapping[str, FieldRule], params: dict[str, list], fixed: dict[str, Any],
    overrides: Mapping[str, Any], fixed_values: Mapping[str, Any],
) -> None:
    """Apply the command line's grid `overrides`, then the stage's `fixed_values`, in place."""
    for name, values in overrides.items():
        origin = f"override {name}={_show(values)}"
        grid = _validate_grid(stage, rules, name, values, origin)
        if name in fixed and len(grid) == 1:
            fixed[name] = grid[0]
        else:
            fixed.pop(name, None)
            params[name] = grid
    for name, value in fixed_values.items():
        params.pop(name, None)
        fixed[name] = _validate_value(stage, rules, name, value, f"{name}={value}")


def _read_yaml(source: Path) -> dict:
    if not source.is_file():
        raise ConfigError(
            f"search-space file {source} does not exist; pass an existing YAML file "
            "or leave the path unset to use the packaged grid"
        )
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{line}: not valid YAML; fix the syntax of that line") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping with 'stage', 'params' and 'fixed', got "
            f"{type(raw).__name__}; see the packaged search_spaces/*.yaml for the layout"
        )
    return raw


def _validate_grid(
    stage: str, rules: Mapping[str, FieldRule], name: str, values: Any, where: str
) -> list:
    if name not in rules:
        raise ConfigError(
            f"{where}: unknown hyperparameter {name!r} for stage {stage}; "
            f"use one of {', '.join(sorted(rules))}"
        )
    if not isinstance(values, (list, tuple)):
        values = [values]
    if len(values) == 0:
        raise ConfigError(
            f"{where}: the grid of {name!r} is empty; give at least one value, "
            f"e.g. {name}={rules[name].grid}"
        )
    grid = [_validate_value(stage, rules, name, v, f"{where}: {name}") for v in values]
    duplicates = sorted({v for v in grid if grid.count(v) > 1})
    if duplicates:
        raise ConfigError(
            f"{where}: the grid of {name!r} repeats {duplicates}; list each value once"
        )
    return grid


def _validate_value(
    stage: str, rules: Mapping[str, FieldRule], name: str, value: Any, where: str
) -> float | int:
    rule = rules.get(name)
    if rule is None:
        raise ConfigError(
            f"{where}: unknown hyperparameter {name!r} for stage {stage}; "
            f"use one of {', '.join(sorted(rules))}"
        )
    assert rule.range is not None
    converted = _convert(value, int if rule.range.integer else float)
    if converted is None:
        kind = "an integer" if rule.range.integer else "a number"
        raise ConfigError(
            f"{where}: value {value!r} is not {kind}; use values like {name}={rule.grid}"
        )
    if converted not in rule.range:
        raise ConfigError(
            f"{where}: value {value!r} is out of range ({name} must be {rule.range.describe()}); "
            f"use values like {name}={rule.grid}"
        )
    return converted


def _convert(value: Any, kind: type) -> float | int | None:
    """`value` as `kind`, or None when it is not one (bools are never numbers).

    Strings are accepted when they parse (PyYAML reads `6e-6`, without a dot, as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def _show(values: Any) -> str:
    if isinstance(values, (list, tuple)):
        return "[" + ",".join(str(v) for v in values) + "]"
    return str(values)

