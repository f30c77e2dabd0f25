"""Loading the task datasets into `Example`s (the data contract of docs/DESIGN.md).

`load_split(task, split, data_dir, data_format=..., limit=..., seed=...)` picks a loader by the
format name (`DataConfig.data_format`, default: the task's `default_format`):

  blue_tsv                 BLUE TSVs `<data_dir>/{train,dev,test}.tsv`, header `index<TAB>sentence
                           <TAB>label` (columns found by name, any order; or no header: `index,
                           sentence, label` / `sentence, label`). Multi-label (HoC): the `labels`
                           cell is comma separated, either label names (BLUE_Benchmark) or
                           bluebert's `<i>_<0|1>` pairs (i indexes `TaskSpec.labels`); `index` is
                           `<PMID>_<n>` and its PMID becomes `Example.doc_id`.
  gad_folds[:k]            BioBERT's GAD: `<data_dir>/<k>/train.tsv` (no header, sentence, label)
                           and `<data_dir>/<k>/test.tsv` (header index, sentence, label); k = 1..10,
                           default 1 (Table 4 uses the first fold). No dev split ships, so a
                           stratified 10 % of the fold's train file (fixed seed `SPLIT_SEED`) is the
                           dev split and the other 90 % the train split.
  chemprot_jsonl           SciBERT's ChemProt `<data_dir>/{train,dev,test}.jsonl`, lines
                           `{"text", "label", "metadata"}`; the 13 fine labels are grouped into BLUE's
                           CPR:3/4/5/6/9 (`CHEMPROT_FINE_TO_CPR`); text kept verbatim (the `<< >>` /
                           `[[ ]]` entity markers stay, they are not BLUE's @CHEMICAL$/@GENE$).
  fpb[:file]               Financial PhraseBank: `all-data.csv` (`label,sentence`, header optional,
                           latin-1) or the original `Sentences_*.txt` (`sentence@label`, latin-1).
  csv_holdout:file         any `label,sentence` CSV (FinTextSen after clustering its scores).
                           fpb and csv_holdout ship no splits; following §4.7 a stratified 10 % is the
                           test split, and a further stratified 10 % (of all examples) is carved from
                           the rest as dev: 80 / 10 / 10, fixed seed `SPLIT_SEED`.
  hoc_raw                  the HoC corpus as its authors publish it (`text/<PMID>.txt`,
                           `labels/<PMID>.txt`); first-level hallmark of every label path; split by
                           abstract in BLUE's proportions 1108 / 157 / 315 (fixed seed `SPLIT_SEED`).
  hf:<source>[?text_column=c&label_column=c]
                           `datasets.load_dataset`: <source> is a hub id, or a local folder (relative
                           to data_dir; empty = data_dir) holding `<split>.{csv,tsv,json,jsonl,parquet}`.

Every problem with the files is a one-line `DataError` naming the file (and line).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from doktra_tune.errors import ConfigError, DataError, first_line
from doktra_tune.tasks import TaskSpec, get_task

SPLITS = ("train", "dev", "test")
SPLIT_SEED = 0  # seed of every split carved here; independent of the subsampling seed
HOLDOUT_FRACTION = 0.1  # §4.7: 10 % test; the same share again for dev
HOC_BLUE_DOCS = (1108, 157, 315)  # BLUE's HoC split by abstract (train, dev, test)

CHEMPROT_FINE_TO_CPR: dict[str, str] = {
    "UPREGULATOR": "CPR:3",
    "ACTIVATOR": "CPR:3",
    "INDIRECT-UPREGULATOR": "CPR:3",
    "DOWNREGULATOR": "CPR:4",
    "INHIBITOR": "CPR:4",
    "INDIRECT-DOWNREGULATOR": "CPR:4",
    "AGONIST": "CPR:5",
    "AGONIST-ACTIVATOR": "CPR:5",
    "AGONIST-INHIBITOR": "CPR:5",
    "ANTAGONIST": "CPR:6",
    "SUBSTRATE": "CPR:9",
    "PRODUCT-OF": "CPR:9",
    "SUBSTRATE_PRODUCT-OF": "CPR:9",
}


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


# --------------------------------------------------------------------------- public API


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


def parse_format(data_format: str) -> tuple[str, str]:
    """'name[:arg]' -> (name, arg); ConfigError for unknown loader names."""
    name, _, arg = str(data_format).partition(":")
    name = name.strip()
    if name not in _LOADERS:
        raise ConfigError(
            f"unknown data format {data_format!r}; set data.data_format to one of "
            f"{', '.join(sorted(_LOADERS))} (see doktra_tune/data.py)"
        )
    return name, arg.strip()


def stratified_subsample(examples: Sequence[Example], limit: int, seed: int) -> list[Example]:
    """`limit` examples, each label combination keeping its share (largest remainder), seeded.

    The result keeps the input order, so it is deterministic for a given (examples, limit, seed).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"subsample limit must be a positive integer, got {limit!r}; fix the *_limit override")
    if limit >= len(examples):
        return list(examples)
    groups = _group_by_labels(examples)
    n = len(examples)
    quotas = {key: limit * len(idx) / n for key, idx in groups.items()}
    counts = {key: math.floor(q) for key, q in quotas.items()}
    left = limit - sum(counts.values())
    # largest fractional part first; ties: the larger group, then first appearance
    order = sorted(groups, key=lambda k: (-(quotas[k] - counts[k]), -len(groups[k])))
    for key in order[:left]:
        counts[key] += 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for key, idx in groups.items():
        perm = rng.permutation(len(idx))[: counts[key]]
        chosen.extend(idx[i] for i in perm)
    return [examples[i] for i in sorted(chosen)]


def stratified_holdout(
    examples: Sequence[Example], fraction_of: dict[tuple[str, ...], int] | float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split into (rest, held_out): per label combination, hold out round(fraction * n) (or the
    given count) examples chosen by a seeded permutation. Both parts keep the input order."""
    groups = _group_by_labels(examples)
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for key, idx in groups.items():
        if isinstance(fraction_of, dict):
            k = min(fraction_of.get(key, 0), len(idx))
        else:
            k = math.floor(fraction_of * len(idx) + 0.5)
        held.update(idx[i] for i in rng.permutation(len(idx))[:k])
    rest = [ex for i, ex in enumerate(examples) if i not in held]
    out = [ex for i, ex in enumerate(examples) if i in held]
    return rest, out


def _group_by_labels(examples: Sequence[Example]) -> dict[tuple[str, ...], list[int]]:
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(tuple(sorted(ex.labels)), []).append(i)
    return groups


# --------------------------------------------------------------------------- helpers


def _require_file(path: Path, split: str, what: str) -> Path:
    if not path.is_file():
        raise MissingDataError(
            f"missing {split} split file {path}; put {what} there or point data.data_dir / "
            f"data.data_format at the right folder", path,
        )
    return path


def _read_text(path: Path, encodings: tuple[str, ...] = ("utf-8-sig",)) -> str:
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


def _check_label(spec: TaskSpec, label: str, where: str) -> str:
    if label not in spec.labels:
        raise DataError(
            f"{where}: label {label!r} is not in the {spec.name} label set "
            f"({', '.join(spec.labels)}); fix the row or choose the right data.task"
        )
    return label


def _parse_label_cell(spec: TaskSpec, cell: str, where: str) -> tuple[str, ...]:
    """One label (single-label tasks) or a comma-separated multi-label cell (HoC)."""
    cell = cell.strip()
    if not spec.multi_label:
        return (_check_label(spec, cell, where),)
    if cell in ("", "NULL"):
        return ()
    by_lower = {label.lower(): label for label in spec.labels}
    found: set[str] = set()
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
            if pair.group(2) == "1":
                found.add(spec.labels[i])
        elif item.lower() in by_lower:
            found.add(by_lower[item.lower()])
        else:
            _check_label(spec, item, where)
    return tuple(label for label in spec.labels if label in found)


# --------------------------------------------------------------------------- TSV (BLUE, GAD)

_TEXT_COLUMNS = ("sentence", "text", "content")
_PAIR_CELL = re.compile(r"\d+_[01](,\d+_[01])*")
_LABEL_COLUMNS = ("label", "labels", "result", "sentiment")


def read_tsv(path: Path, spec: TaskSpec) -> list[Example]:
    """A BLUE/BioBERT TSV: a header naming the columns (`index`, `sentence`, `label`/`labels`, any
    order) or headerless `index, sentence, label` / `sentence, label` (HoC: `labels, sentence,
    index` when the first cell holds `<i>_<0|1>` pairs)."""
    text = _read_text(path)
    lines = text.splitlines()
    first = [c.strip().lower() for c in lines[0].split("\t")]
    has_text, has_label = any(c in _TEXT_COLUMNS for c in first), any(c in _LABEL_COLUMNS for c in first)
    if has_text != has_label:  # a header that names some columns but lacks the text or the label one
        missing = "label (label/labels)" if has_text else f"sentence ({'/'.join(_TEXT_COLUMNS)})"
        raise DataError(
            f"{path}:1: the header names columns {first} but no {missing} column; add that column or point "
            "data.data_format at the right loader"
        )
    has_header = has_text and has_label
    if has_header:
        width = len(first)
        text_col = next(first.index(c) for c in _TEXT_COLUMNS if c in first)
        label_col = next(first.index(c) for c in _LABEL_COLUMNS if c in first)
        index_col = first.index("index") if "index" in first else None
        layout = "\t".join(first)
        start = 1
    else:
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
        layout = "\t".join(names[i] for i in range(width))
        start = 0
    examples: list[Example] = []
    for lineno in range(start + 1, len(lines) + 1):
        line = lines[lineno - 1]
        if not line.strip():
            continue
        cells = line.split("\t")
        where = f"{path}:{lineno}"
        if len(cells) != width:
            raise DataError(
                f"{where}: expected {width} tab-separated columns ({layout.replace(chr(9), ', ')}), "
                f"got {len(cells)}; fix the row (a tab inside the sentence?)"
            )
        sentence = cells[text_col].strip()
        if not sentence:
            raise DataError(f"{where}: empty sentence; fix or remove the row")
        labels = _parse_label_cell(spec, cells[label_col], where)
        doc_id = None
        if spec.multi_label and index_col is not None:
            doc_id = cells[index_col].strip().split("_")[0] or None
        examples.append(Example(sentence, labels, doc_id))
    if not examples:
        raise DataError(f"{path}:{len(lines)}: no data rows after the header; fill the file")
    return examples


def _load_blue_tsv(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    path = _require_file(root / f"{split}.tsv", split, f"BLUE's {split}.tsv")
    return read_tsv(path, spec)


def _load_gad_folds(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    fold = arg or "1"
    if fold not in {str(k) for k in range(1, 11)}:
        raise ConfigError(
            f"GAD fold {fold!r} is not one of 1..10; set data.data_format=gad_folds:<k> with k in 1..10"
        )
    fold_dir = root / fold
    if not fold_dir.is_dir():
        raise MissingDataError(
            f"missing GAD fold directory {fold_dir}; data.data_dir must hold BioBERT's GAD fold "
            f"folders 1..10 (pick one with data.data_format=gad_folds:<k>)", fold_dir,
        )
    if split == "test":
        return read_tsv(_require_file(fold_dir / "test.tsv", split, "the fold's test.tsv"), spec)
    train = read_tsv(_require_file(fold_dir / "train.tsv", split, "the fold's train.tsv"), spec)
    rest, dev = stratified_holdout(train, HOLDOUT_FRACTION, SPLIT_SEED)
    return dev if split == "dev" else rest


# --------------------------------------------------------------------------- ChemProt jsonl


def _load_chemprot_jsonl(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    path = _require_file(root / f"{split}.jsonl", split, f"SciBERT's ChemProt {split}.jsonl")
    examples: list[Example] = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: bad JSON ({err.msg}); fix the line") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not isinstance(
            row.get("label"), str
        ):
            raise DataError(f'{where}: expected an object with string "text" and "label"; fix the line')
        label = row["label"].strip()
        label = CHEMPROT_FINE_TO_CPR.get(label, label)
        if label not in spec.labels:
            raise DataError(
                f"{where}: label {row['label']!r} is neither a ChemProt fine label "
                f"({', '.join(CHEMPROT_FINE_TO_CPR)}) nor one of {', '.join(spec.labels)}; "
                f"fix the line or choose the right data.task"
            )
        text = row["text"].strip()
        if not text:
            raise DataError(f"{where}: empty text; fix or remove the line")
        examples.append(Example(text, (label,)))
    return examples


# --------------------------------------------------------------------------- FPB / FTS


def read_sentiment_file(path: Path, spec: TaskSpec) -> list[Example]:
    """`label,sentence` CSV (header optional) or `sentence@label` lines; UTF-8 or latin-1."""
    text = _read_text(path, ("utf-8-sig", "latin-1"))
    examples: list[Example] = []
    if path.suffix.lower() == ".txt":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            sentence, sep, label = line.rpartition("@")
            where = f"{path}:{lineno}"
            if not sep or not sentence.strip():
                raise DataError(f"{where}: expected 'sentence@label'; fix the line")
            examples.append(Example(sentence.strip(), (_check_label(spec, label.strip(), where),)))
        return examples
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
        label_col = next((first.index(c) for c in _LABEL_COLUMNS if c in first), 0)
        text_col = next((first.index(c) for c in _TEXT_COLUMNS if c in first), 1)
        rows = rows[1:]
    for lineno, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        where = f"{path}:{lineno}"
        if len(cells) != 2:
            raise DataError(
                f"{where}: expected 2 comma-separated columns (label, sentence), got {len(cells)}; "
                f"quote sentences that contain commas"
            )
        sentence = cells[text_col].strip()
        if not sentence:
            raise DataError(f"{where}: empty sentence; fix or remove the row")
        examples.append(Example(sentence, (_check_label(spec, cells[label_col].strip(), where),)))
    return examples


def holdout_splits(examples: Sequence[Example], split: str) -> list[Example]:
    """§4.7: stratified 10 % test, then a stratified dev of the same size per class; 80/10/10."""
    rest, test = stratified_holdout(examples, HOLDOUT_FRACTION, SPLIT_SEED)
    if split == "test":
        return test
    sizes: dict[tuple[str, ...], int] = {}
    for ex in test:
        key = tuple(sorted(ex.labels))
        sizes[key] = sizes.get(key, 0) + 1
    train, dev = stratified_holdout(rest, sizes, SPLIT_SEED + 1)
    return dev if split == "dev" else train


def _load_fpb(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    if root.is_file():
        path = root
    elif arg:
        path = _require_file(root / arg, split, "the Financial PhraseBank file")
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


def _load_csv_holdout(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    if root.is_file():
        path = root
    else:
        if not arg:
            raise ConfigError(
                "data format csv_holdout needs a file name; set data.data_format=csv_holdout:<file.csv>"
            )
        path = _require_file(root / arg, split, f"the {spec.name} label,sentence CSV")
    return holdout_splits(read_sentiment_file(path, spec), split)


# --------------------------------------------------------------------------- HoC raw corpus


def _load_hoc_raw(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    text_dir, label_dir = root / "text", root / "labels"
    if not text_dir.is_dir() or not label_dir.is_dir():
        raise MissingDataError(
            f"missing {text_dir} or {label_dir}; data.data_dir must be the raw HoC corpus folder "
            f"(text/<PMID>.txt and labels/<PMID>.txt)", text_dir if not text_dir.is_dir() else label_dir,
        )
    pmids = sorted(p.stem for p in text_dir.glob("*.txt"))
    if not pmids:
        raise DataError(f"{text_dir}: no <PMID>.txt files; point data.data_dir at the HoC corpus")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pmids))
    total = sum(HOC_BLUE_DOCS)
    n_train = math.floor(len(pmids) * HOC_BLUE_DOCS[0] / total + 0.5)
    n_dev = math.floor(len(pmids) * HOC_BLUE_DOCS[1] / total + 0.5)
    bounds = {"train": (0, n_train), "dev": (n_train, n_train + n_dev), "test": (n_train + n_dev, len(pmids))}
    lo, hi = bounds[split]
    chosen = sorted(pmids[i] for i in order[lo:hi])
    by_lower = {label.lower(): label for label in spec.labels}
    examples: list[Example] = []
    for pmid in chosen:
        text_path = text_dir / f"{pmid}.txt"
        label_path = _require_file(label_dir / f"{pmid}.txt", split, "the abstract's label file")
        sentences = [s.strip() for s in _read_text(text_path).splitlines() if s.strip()]
        fields = _read_text(label_path).rstrip("\n").split("<")[1:]  # the file starts with '<'
        if len(fields) != len(sentences):
            raise DataError(
                f"{label_path}:1: {len(fields)} label fields for {len(sentences)} sentences in "
                f"{text_path}; the two files must align one field per sentence"
            )
        for sentence, field in zip(sentences, fields):
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
            labels = tuple(label for label in spec.labels if label in found)
            examples.append(Example(sentence, labels, pmid))
    return examples


# --------------------------------------------------------------------------- Hugging Face datasets

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


def _load_hf(spec: TaskSpec, split: str, root: Path, arg: str) -> list[Example]:
    source, _, query = arg.partition("?")
    options = {"text_column": "text", "label_column": "label"}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or key not in options:
            raise ConfigError(
                f"bad option {part!r} in data format 'hf:{arg}'; use "
                f"hf:<source>?text_column=<col>&label_column=<col>"
            )
        options[key] = value
    try:
        import datasets
    except ImportError:
        raise ConfigError("the hf: data format needs the `datasets` package; pip install datasets") from None
    local = root / source if source else root
    if not source or local.exists() or Path(source).expanduser().exists():
        folder = local if local.exists() else Path(source).expanduser()
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
        where = str(path)
        try:
            ds = datasets.load_dataset(
                _HF_EXTENSIONS[ext], data_files={"data": str(path)}, split="data", **kwargs
            )
        except Exception as err:  # noqa: BLE001 - any parser failure is a data problem
            raise DataError(f"{path}: cannot be read as {ext} ({first_line(err, 200)}); fix the file") from None
    else:
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
    for key in ("text_column", "label_column"):
        if options[key] not in ds.column_names:
            raise DataError(
                f"{where}: no column {options[key]!r} (columns: {', '.join(ds.column_names)}); "
                f"set it with data.data_format=hf:{source}?{key}=<col>"
            )
    feature = ds.features[options["label_column"]]
    names = getattr(feature, "names", None)
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
        examples.append(Example(text.strip(), _parse_label_cell(spec, str(value), at)))
    return examples


_LOADERS: dict[str, Callable[[TaskSpec, str, Path, str], list[Example]]] = {
    "blue_tsv": _load_blue_tsv,
    "gad_folds": _load_gad_folds,
    "chemprot_jsonl": _load_chemprot_jsonl,
    "fpb": _load_fpb,
    "csv_holdout": _load_csv_holdout,
    "hoc_raw": _load_hoc_raw,
    "hf": _load_hf,
}
