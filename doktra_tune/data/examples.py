"""`Example`, the unit every loader returns, the error for missing files, and digests and counts of a
split (what the MLflow dataset inputs record)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from doktra_tune.errors import DataError


@dataclass(frozen=True)
class Example:
    text: str
    labels: tuple[str, ...]  # exactly one for single-label tasks
    doc_id: str | None = None  # HoC: the abstract (PMID) a sentence belongs to


class MissingDataError(DataError):
    """A folder or file the loader needs is not there; `path` is the first one missing (the search's
    preflight turns it into the task's "where the data come from" line)."""

    def __init__(self, message: str, path: str | Path) -> None:
        super().__init__(message)
        self.path = Path(path)

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # crosses Ray's process boundary intact
        return type(self), (str(self), str(self.path))


def split_digest(examples: Sequence[Example]) -> str:
    """16 hex digits of sha256 over the texts and labels, in order: two splits with the same digest
    hold the same examples (what an MLflow dataset input records)."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(ex.text.encode("utf-8"))
        digest.update(b"\x00" + "\x01".join(ex.labels).encode("utf-8") + b"\x00")
    return digest.hexdigest()[:16]


def label_counts(examples: Iterable[Example]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ex in examples:
        for label in ex.labels:
            counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))
