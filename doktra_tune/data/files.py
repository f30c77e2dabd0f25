"""Reading the data files: the split file a loader needs, its text (one-line `DataError`s naming the
file and line), and the row conventions the TSV and CSV loaders share."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from doktra_tune.data.examples import MissingDataError
from doktra_tune.errors import DataError

TEXT_COLUMNS = ("sentence", "text", "content")  # header names of the sentence column
LABEL_COLUMNS = ("label", "labels", "result", "sentiment")  # header names of the label column


def require_file(path: Path, split: str, what: str) -> Path:
    if not path.is_file():
        raise MissingDataError(
            f"missing {split} split file {path}; put {what} there or point data.data_dir / "
            f"data.data_format at the right folder", path,
        )
    return path


def read_text(path: Path, encodings: tuple[str, ...] = ("utf-8-sig",)) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}:1: file is empty; regenerate or re-download it")
    for enc in encodings:
        try:
            return raw.decode(enc)
        except UnicodeDecodeError as err:
            last = err
    line = raw[: last.start].count(b"\n") + 1
    raise DataError(
        f"{path}:{line}: not valid {' or '.join(e.replace('-sig', '') for e in encodings)} text; "
        f"re-save the file in UTF-8"
    )


def row_sentence(cells: Sequence[str], width: int, text_col: int, where: str, columns: str, fix: str) -> str:
    """The stripped sentence cell of a row that must have `width` cells (`columns` describes them, `fix`
    says how to mend a row that has not); DataError for a wrong width or an empty sentence."""
    if len(cells) != width:
        raise DataError(f"{where}: expected {width} {columns}, got {len(cells)}; {fix}")
    sentence = cells[text_col].strip()
    if not sentence:
        raise DataError(f"{where}: empty sentence; fix or remove the row")
    return sentence
