"""Sentiment corpora that ship no splits: Financial PhraseBank (`fpb[:file]`) and any `label,sentence`
CSV (`csv_holdout:file`, FinTextSen); the splits are carved by `holdout_splits` (80 / 10 / 10)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from doktra_tune.data.examples import Example, MissingDataError
from doktra_tune.data.files import LABEL_COLUMNS, TEXT_COLUMNS, read_text, require_file, row_sentence
from doktra_tune.data.labels import check_label
from doktra_tune.data.splits import holdout_splits
from doktra_tune.errors import ConfigError, DataError
from doktra_tune.tasks import TaskSpec


def read_sentiment_file(path: Path, spec: TaskSpec) -> list[Example]:
    """`label,sentence` CSV (header optional) or `sentence@label` lines; UTF-8 or latin-1."""
    text = read_text(path, ("utf-8-sig", "latin-1"))
    if path.suffix.lower() == ".txt":
        return _read_at_lines(path, text, spec)
    return _read_csv(path, text, spec)


def _read_at_lines(path: Path, text: str, spec: TaskSpec) -> list[Example]:
    """FPB's original `Sentences_*.txt`: `sentence@label` lines."""
    examples: list[Example] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        sentence, sep, label = line.rpartition("@")
        where = f"{path}:{lineno}"
        if not sep or not sentence.strip():
            raise DataError(f"{where}: expected 'sentence@label'; fix the line")
        examples.append(Example(sentence.strip(), (check_label(spec, label.strip(), where),)))
    return examples


def _read_csv(path: Path, text: str, spec: TaskSpec) -> list[Example]:
    """`label,sentence` rows; a first row whose first cell is no label is a header naming the columns."""
    reader = csv.reader(io.StringIO(text))
    rows: list[tuple[int, list[str]]] = []  # (line the row ends on, cells)
    try:
        for cells in reader:
            rows.append((reader.line_num, cells))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err}); fix the quoting") from None
    label_col, text_col = 0, 1
    first = [c.strip().lower() for c in rows[0][1]]
    if first and first[0] not in spec.labels:  # a header row
        label_col = next((first.index(c) for c in LABEL_COLUMNS if c in first), 0)
        text_col = next((first.index(c) for c in TEXT_COLUMNS if c in first), 1)
        rows = rows[1:]
    examples: list[Example] = []
    for lineno, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        where = f"{path}:{lineno}"
        sentence = row_sentence(
            cells, 2, text_col, where, "comma-separated columns (label, sentence)",
            "quote sentences that contain commas",
        )
        examples.append(Example(sentence, (check_label(spec, cells[label_col].strip(), where),)))
    return examples


def load_fpb(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    if root.is_file():
        path = root
    elif arg:
        path = require_file(root / arg, split, "the Financial PhraseBank file")
    else:
        candidates = [root / "all-data.csv", root / "Sentences_50Agree.txt"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise MissingDataError(
                f"missing {split} split source {root / 'all-data.csv'}; put FPB's all-data.csv "
                f"(or Sentences_50Agree.txt) there, or name the file with data.data_format=fpb:<file>",
                root / "all-data.csv",
            )
    return holdout_splits(read_sentiment_file(path, spec), split)


def load_csv_holdout(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    if root.is_file():
        path = root
    else:
        if not arg:
            raise ConfigError(
                "data format csv_holdout needs a file name; set data.data_format=csv_holdout:<file.csv>"
            )
        path = require_file(root / arg, split, f"the {spec.name} label,sentence CSV")
    return holdout_splits(read_sentiment_file(path, spec), split)
