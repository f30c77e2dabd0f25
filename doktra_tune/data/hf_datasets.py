"""Hugging Face datasets (`hf:<source>[?text_column=c&label_column=c]`): a hub id, or a local folder of
`<split>.{csv,tsv,json,jsonl,parquet}` files, read with `datasets.load_dataset`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doktra_tune.data.examples import Example
from doktra_tune.data.labels import parse_label_cell
from doktra_tune.errors import ConfigError, DataError, first_line
from doktra_tune.tasks import TaskSpec

_HF_EXTENSIONS = {"csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet"}


def _hub_dataset_revision(source: str) -> str:
    """The commit of hub dataset `source`, asked once with a 10 s timeout before `datasets` (whose own
    requests retry for half a minute) touches the network. ConfigError (one line) when the hub does not
    answer, does not know the id, or gates it."""
    from huggingface_hub import HfApi

    from doktra_tune.hub import hub_failure

    try:
        return str(HfApi().dataset_info(source, timeout=10).sha)
    except Exception as err:  # noqa: BLE001 - unreachable hub, unknown or gated id: one line
        raise ConfigError(f"{hub_failure(err, source, 'dataset')}; or use a local folder (hf:<folder>)") from None


def load_hf(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    source, _, query = arg.partition("?")
    options = _hf_options(arg, query)
    try:
        import datasets
    except ImportError:
        raise ConfigError("the hf: data format needs the `datasets` package; pip install datasets") from None
    local = root / source if source else root
    if not source or local.exists() or Path(source).expanduser().exists():
        folder = local if local.exists() else Path(source).expanduser()
        ds, where = _load_local(datasets, folder, split)
    else:
        ds, where = _load_hub(datasets, source, split)
    return _hf_examples(spec, ds, where, options, source)


def _hf_options(arg: str, query: str) -> dict[str, str]:
    """The column names of the format's `?key=value&...` query (defaults: text, label)."""
    options = {"text_column": "text", "label_column": "label"}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or key not in options:
            raise ConfigError(
                f"bad option {part!r} in data format 'hf:{arg}'; use "
                f"hf:<source>?text_column=<col>&label_column=<col>"
            )
        options[key] = value
    return options


def _load_local(datasets: Any, folder: Path, split: str) -> tuple[Any, str]:
    """The split's file in `folder` (dev: `dev.*` or `validation.*`) and the name its errors give."""
    names = [split, "validation"] if split == "dev" else [split]
    files = [folder / f"{n}.{ext}" for n in names for ext in _HF_EXTENSIONS]
    path = next((f for f in files if f.is_file()), None)
    if path is None:
        raise DataError(
            f"missing {split} split file {folder}/{split}.<csv|tsv|json|jsonl|parquet>; "
            f"put it there or fix the hf: source"
        )
    ext = path.suffix.lstrip(".").lower()
    kwargs = {"delimiter": "\t"} if ext == "tsv" else {}
    try:
        ds = datasets.load_dataset(_HF_EXTENSIONS[ext], data_files={"data": str(path)}, split="data", **kwargs)
    except Exception as err:  # noqa: BLE001 - any parser failure is a data problem
        raise DataError(f"{path}: cannot be read as {ext} ({first_line(err, 200)}); fix the file") from None
    return ds, str(path)


def _load_hub(datasets: Any, source: str, split: str) -> tuple[Any, str]:
    """Hub dataset `source`'s split (dev: `validation`), pinned to its current commit unless offline."""
    hf_split = "validation" if split == "dev" else split
    where = f"hf:{source}[{hf_split}]"
    revision = None if datasets.config.HF_HUB_OFFLINE else _hub_dataset_revision(source)
    try:
        ds = datasets.load_dataset(source, split=hf_split, revision=revision)
    except Exception as err:  # noqa: BLE001 - not in the offline cache, missing split
        fix = ("with the hub offline only cached datasets load: download it where there is a network, or use"
               if revision is None else "check the split's name on the hub, or use")
        raise ConfigError(
            f"cannot load Hugging Face dataset {source!r} split {hf_split!r} "
            f"({type(err).__name__}: {first_line(err, 200)}); {fix} a local folder (hf:<folder>) or another "
            f"data.data_format"
        ) from None
    return ds, where


def _hf_examples(spec: TaskSpec, ds: Any, where: str, options: dict[str, str], source: str) -> list[Example]:
    for key in ("text_column", "label_column"):
        if options[key] not in ds.column_names:
            raise DataError(
                f"{where}: no column {options[key]!r} (columns: {', '.join(ds.column_names)}); "
                f"set it with data.data_format=hf:{source}?{key}=<col>"
            )
    names = getattr(ds.features[options["label_column"]], "names", None)
    examples: list[Example] = []
    for row, record in enumerate(ds):
        at = f"{where}:row {row + 1}"
        text = record[options["text_column"]]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{at}: missing or empty text; fix the row")
        value = record[options["label_column"]]
        if names is not None and isinstance(value, int):
            value = names[value]
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        examples.append(Example(text.strip(), parse_label_cell(spec, str(value), at)))
    return examples
