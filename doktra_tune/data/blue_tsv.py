"""TSV loaders: BLUE's `{train,dev,test}.tsv` (`blue_tsv`) and BioBERT's GAD folds (`gad_folds[:k]`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from doktra_tune.data.examples import Example, MissingDataError
from doktra_tune.data.files import LABEL_COLUMNS, TEXT_COLUMNS, read_text, require_file, row_sentence
from doktra_tune.data.labels import parse_label_cell
from doktra_tune.data.splits import HOLDOUT_FRACTION, SPLIT_SEED, stratified_holdout
from doktra_tune.errors import ConfigError, DataError
from doktra_tune.tasks import TaskSpec

_PAIR_CELL = re.compile(r"\d+_[01](,\d+_[01])*")


class _Layout(NamedTuple):
    """Where a TSV keeps its columns."""

    width: int
    text_col: int
    label_col: int
    index_col: int | None
    columns: str  # the column names in file order, for messages: "index, sentence, label"
    start: int  # lines before the first data row: 1 after a header, else 0


def read_tsv(path: Path, spec: TaskSpec) -> list[Example]:
    """A BLUE/BioBERT TSV: a header naming the columns (`index`, `sentence`, `label`/`labels`, any
    order) or headerless `index, sentence, label` / `sentence, label` (HoC: `labels, sentence,
    index` when the first cell holds `<i>_<0|1>` pairs)."""
    lines = read_text(path).splitlines()
    layout = _tsv_layout(path, lines[0], spec)
    examples: list[Example] = []
    for lineno in range(layout.start + 1, len(lines) + 1):
        line = lines[lineno - 1]
        if line.strip():
            examples.append(_tsv_row(spec, line.split("\t"), layout, f"{path}:{lineno}"))
    if not examples:
        raise DataError(f"{path}:{len(lines)}: no data rows after the header; fill the file")
    return examples


def _tsv_layout(path: Path, first_line: str, spec: TaskSpec) -> _Layout:
    first = [c.strip().lower() for c in first_line.split("\t")]
    has_text, has_label = any(c in TEXT_COLUMNS for c in first), any(c in LABEL_COLUMNS for c in first)
    if has_text != has_label:  # a header that names some columns but lacks the text or the label one
        missing = "label (label/labels)" if has_text else f"sentence ({'/'.join(TEXT_COLUMNS)})"
        raise DataError(
            f"{path}:1: the header names columns {first} but no {missing} column; add that column or point "
            "data.data_format at the right loader"
        )
    if has_text and has_label:
        return _Layout(
            width=len(first),
            text_col=next(first.index(c) for c in TEXT_COLUMNS if c in first),
            label_col=next(first.index(c) for c in LABEL_COLUMNS if c in first),
            index_col=first.index("index") if "index" in first else None,
            columns=", ".join(first),
            start=1,
        )
    return _headerless_layout(path, first, spec)


def _headerless_layout(path: Path, first: list[str], spec: TaskSpec) -> _Layout:
    width = len(first)
    if width == 3 and spec.multi_label and _PAIR_CELL.fullmatch(first[0]):
        label_col, text_col, index_col = 0, 1, 2  # bluebert's HoC: labels, sentence, index
    elif width == 3:
        index_col, text_col, label_col = 0, 1, 2
    elif width == 2:
        index_col, text_col, label_col = None, 0, 1
    else:
        raise DataError(
            f"{path}:1: expected 2 (sentence, label) or 3 (index, sentence, label) "
            f"tab-separated columns, got {width}; fix the file or check data.data_format"
        )
    names = {index_col: "index", text_col: "sentence", label_col: "label"}
    columns = ", ".join(names[i] for i in range(width))
    return _Layout(width, text_col, label_col, index_col, columns, start=0)


def _tsv_row(spec: TaskSpec, cells: list[str], layout: _Layout, where: str) -> Example:
    sentence = row_sentence(
        cells, layout.width, layout.text_col, where, f"tab-separated columns ({layout.columns})",
        "fix the row (a tab inside the sentence?)",
    )
    labels = parse_label_cell(spec, cells[layout.label_col], where)
    doc_id = None
    if spec.multi_label and layout.index_col is not None:
        doc_id = cells[layout.index_col].strip().split("_")[0] or None
    return Example(sentence, labels, doc_id)


def load_blue_tsv(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    path = require_file(root / f"{split}.tsv", split, f"BLUE's {split}.tsv")
    return read_tsv(path, spec)


# GAD's dev split (BioBERT's folds ship none): `test` the fold's test file, as the authors' scripts read
# it (the paper's default); `carve` a stratified 10 % of the fold's train file, the other 90 % trained
GAD_DEV_MODES = ("test", "carve")
GAD_FOLDS = tuple(str(k) for k in range(1, 11))


def parse_gad_format(arg: str) -> tuple[str, str]:
    """`gad_folds[:<k>[:<dev>]]`'s argument -> (fold, dev mode); defaults fold 1, dev `test`."""
    fold, _, dev = arg.partition(":")
    fold, dev = fold.strip() or "1", dev.strip() or GAD_DEV_MODES[0]
    if fold not in GAD_FOLDS:
        raise ConfigError(
            f"GAD fold {fold!r} is not one of 1..10; set data.data_format=gad_folds:<k> with k in 1..10"
        )
    if dev not in GAD_DEV_MODES:
        raise ConfigError(
            f"GAD dev {dev!r} is unknown; use gad_folds:<k>:test (the fold's test file, the authors' scripts) or "
            f"gad_folds:<k>:carve (a stratified 10 % of the fold's train file)"
        )
    return fold, dev


def gad_fold_format(data_format: str | None, fold: int) -> str:
    """The format of GAD fold `fold` with `data_format`'s dev mode (the final runs' folds)."""
    name, _, arg = (data_format or "gad_folds").partition(":")
    if name.strip() != "gad_folds":
        raise ConfigError(
            f"final.folds needs GAD's folds, but task.data_format={data_format!r}; use gad_folds:<k>[:test|carve]"
        )
    _, dev = parse_gad_format(arg)
    return f"gad_folds:{fold}:{dev}"


def load_gad_folds(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    fold, dev = parse_gad_format(arg)
    fold_dir = root / fold
    if not fold_dir.is_dir():
        raise MissingDataError(
            f"missing GAD fold directory {fold_dir}; data.data_dir must hold BioBERT's GAD fold "
            f"folders 1..10 (pick one with data.data_format=gad_folds:<k>)", fold_dir,
        )
    if split == "test" or (split == "dev" and dev == "test"):
        return read_tsv(require_file(fold_dir / "test.tsv", split, "the fold's test.tsv"), spec)
    train = read_tsv(require_file(fold_dir / "train.tsv", split, "the fold's train.tsv"), spec)
    if dev == "test":
        return train
    rest, held = stratified_holdout(train, HOLDOUT_FRACTION, SPLIT_SEED)
    return held if split == "dev" else rest
