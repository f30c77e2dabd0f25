"""The HoC corpus as its authors publish it (`hoc_raw`): `text/<PMID>.txt` and `labels/<PMID>.txt`,
split by abstract in BLUE's proportions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from doktra_tune.data.examples import Example, MissingDataError
from doktra_tune.data.files import read_text, require_file
from doktra_tune.data.splits import SPLIT_SEED
from doktra_tune.errors import DataError
from doktra_tune.tasks import TaskSpec

HOC_BLUE_DOCS = (1108, 157, 315)  # BLUE's HoC split by abstract (train, dev, test)


def load_hoc_raw(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    text_dir, label_dir = root / "text", root / "labels"
    if not text_dir.is_dir() or not label_dir.is_dir():
        raise MissingDataError(
            f"missing {text_dir} or {label_dir}; data.data_dir must be the raw HoC corpus folder "
            f"(text/<PMID>.txt and labels/<PMID>.txt)", text_dir if not text_dir.is_dir() else label_dir,
        )
    pmids = sorted(p.stem for p in text_dir.glob("*.txt"))
    if not pmids:
        raise DataError(f"{text_dir}: no <PMID>.txt files; point data.data_dir at the HoC corpus")
    examples: list[Example] = []
    for pmid in _split_pmids(pmids, split):
        text_path = text_dir / f"{pmid}.txt"
        label_path = require_file(label_dir / f"{pmid}.txt", split, "the abstract's label file")
        examples.extend(_read_abstract(spec, pmid, text_path, label_path))
    return examples


def _split_pmids(pmids: list[str], split: str) -> list[str]:
    """The split's abstracts: a seeded permutation cut in BLUE's proportions, sorted."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pmids))
    total = sum(HOC_BLUE_DOCS)
    n_train = math.floor(len(pmids) * HOC_BLUE_DOCS[0] / total + 0.5)
    n_dev = math.floor(len(pmids) * HOC_BLUE_DOCS[1] / total + 0.5)
    bounds = {"train": (0, n_train), "dev": (n_train, n_train + n_dev), "test": (n_train + n_dev, len(pmids))}
    lo, hi = bounds[split]
    return sorted(pmids[i] for i in order[lo:hi])


def _read_abstract(spec: TaskSpec, pmid: str, text_path: Path, label_path: Path) -> list[Example]:
    """One example per sentence of the abstract, labelled by its `<`-separated label field."""
    sentences = [s.strip() for s in read_text(text_path).splitlines() if s.strip()]
    fields = read_text(label_path).rstrip("\n").split("<")[1:]  # the file starts with '<'
    if len(fields) != len(sentences):
        raise DataError(
            f"{label_path}:1: {len(fields)} label fields for {len(sentences)} sentences in "
            f"{text_path}; the two files must align one field per sentence"
        )
    return [Example(sentence, _hallmarks(spec, field, label_path), pmid) for sentence, field in zip(sentences, fields)]


def _hallmarks(spec: TaskSpec, field: str, label_path: Path) -> tuple[str, ...]:
    """The first-level hallmark of every `AND`-joined label path of a field, in the task's label order."""
    by_lower = {label.lower(): label for label in spec.labels}
    found: set[str] = set()
    for item in (part.strip() for part in field.split("AND")):
        if not item or item == "NULL":
            continue
        top = item.split("--")[0].strip().lower()
        if top not in by_lower:
            raise DataError(
                f"{label_path}:1: hallmark {top!r} is not in the {spec.name} label set; "
                f"fix the label file"
            )
        found.add(by_lower[top])
    return tuple(label for label in spec.labels if label in found)
