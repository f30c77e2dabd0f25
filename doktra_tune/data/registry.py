"""The format registry (`_LOADERS`, one loader per format; the table in the package docstring) and
`load_split`, which picks the loader and subsamples."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from doktra_tune.data.blue_tsv import load_blue_tsv, load_gad_folds
from doktra_tune.data.chemprot_jsonl import load_chemprot_jsonl
from doktra_tune.data.examples import Example, MissingDataError
from doktra_tune.data.hf_datasets import load_hf
from doktra_tune.data.hoc_raw import load_hoc_raw
from doktra_tune.data.sentiment import load_csv_holdout, load_fpb
from doktra_tune.data.splits import stratified_subsample
from doktra_tune.errors import ConfigError, DataError
from doktra_tune.tasks import TaskSpec, get_task

SPLITS = ("train", "dev", "test")

_LOADERS: dict[str, Callable[[TaskSpec, str, Path, str], list[Example]]] = {
    "blue_tsv": load_blue_tsv,
    "gad_folds": load_gad_folds,
    "chemprot_jsonl": load_chemprot_jsonl,
    "fpb": load_fpb,
    "csv_holdout": load_csv_holdout,
    "hoc_raw": load_hoc_raw,
    "hf": load_hf,
}


def load_split(
    task: TaskSpec | str,
    split: str,
    data_dir: str | Path,
    *,
    data_format: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """Examples of one split in a deterministic order; `limit` = seeded stratified subsample."""
    spec = get_task(task)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    fmt = data_format or spec.default_format
    name, arg = parse_format(fmt)
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise MissingDataError(
            f"data directory {root} does not exist; set data.data_dir to the folder holding "
            f"the {spec.name} files", root,
        )
    examples = _LOADERS[name](spec, split, root, arg)
    if not examples:
        raise DataError(f"{root}: the {split} split of {spec.name} is empty; check data.data_dir")
    if limit is not None:
        examples = stratified_subsample(examples, limit, seed)
    return examples


def parse_format(data_format: str) -> tuple[str, str]:
    """'name[:arg]' -> (name, arg); ConfigError for unknown loader names."""
    name, _, arg = str(data_format).partition(":")
    name = name.strip()
    if name not in _LOADERS:
        raise ConfigError(
            f"unknown data format {data_format!r}; set data.data_format to one of "
            f"{', '.join(sorted(_LOADERS))} (see doktra_tune/data/__init__.py)"
        )
    return name, arg.strip()
