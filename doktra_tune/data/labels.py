"""Labels: checking a label against the task, parsing a label cell (one label, or HoC's multi-label
cells), and the label matrix the metrics and the encoder take."""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np

from doktra_tune.data.examples import Example
from doktra_tune.errors import DataError
from doktra_tune.tasks import TaskSpec, get_task


def label_matrix(task: TaskSpec | str, examples: Iterable[Example]) -> np.ndarray:
    """Single-label: int64 [N] class indices; multi-label: float32 [N, L] multi-hot."""
    spec = get_task(task)
    index = {label: i for i, label in enumerate(spec.labels)}
    examples = list(examples)
    if spec.multi_label:
        out = np.zeros((len(examples), len(spec.labels)), dtype=np.float32)
        for row, ex in enumerate(examples):
            for label in ex.labels:
                out[row, index[label]] = 1.0
        return out
    return np.array([index[ex.labels[0]] for ex in examples], dtype=np.int64)


def check_label(spec: TaskSpec, label: str, where: str) -> str:
    if label not in spec.labels:
        raise DataError(
            f"{where}: label {label!r} is not in the {spec.name} label set "
            f"({', '.join(spec.labels)}); fix the row or choose the right data.task"
        )
    return label


def parse_label_cell(spec: TaskSpec, cell: str, where: str) -> tuple[str, ...]:
    """One label (single-label tasks) or a comma-separated multi-label cell (HoC)."""
    cell = cell.strip()
    if not spec.multi_label:
        return (check_label(spec, cell, where),)
    if cell in ("", "NULL"):
        return ()
    by_lower = {label.lower(): label for label in spec.labels}
    found: set[str] = set()
    pair_values: dict[int, str] = {}
    for item in (part.strip() for part in cell.split(",")):
        if not item:
            continue
        pair = re.fullmatch(r"(\d+)_([01])", item)
        if pair:
            i = int(pair.group(1))
            if i >= len(spec.labels):
                raise DataError(
                    f"{where}: label index {i} in {item!r} is out of range for the "
                    f"{len(spec.labels)} {spec.name} labels; fix the row"
                )
            if pair_values.setdefault(i, pair.group(2)) != pair.group(2):
                raise DataError(
                    f"{where}: the cell holds both {i}_0 and {i}_1; a hallmark is either absent (_0) or present "
                    "(_1): fix the row"
                )
            if pair.group(2) == "1":
                found.add(spec.labels[i])
        elif item.lower() in by_lower:
            found.add(by_lower[item.lower()])
        else:
            check_label(spec, item, where)
    return tuple(label for label in spec.labels if label in found)
