"""The downstream tasks of the paper (Table 1, §4.1; financial tasks §4.7) as plain specs.

A `TaskSpec` fixes the label set in model-output index order, which labels are negative
(excluded from micro-F1), the Table-1 metric, and the loader used when `DataConfig.data_format`
is None (loaders live in `doktra_tune.data`).

Metrics:
  - ChemProt, DDI, i2b2: micro F1 over the positive relation classes (BLUE; Table 1 "micro F1").
  - GAD: binary F1 of the positive class "1" (BioBERT's GAD evaluation; Table 1 "F1").
  - HoC: BLUE's example-based F1 at the abstract level (sentence predictions combined per PMID).
  - FPB, FTS: micro F1 over all three sentiment classes, which equals accuracy: what the authors'
    financial scripts compute (`precision_recall_fscore_support(..., labels=[0, 1, 2],
    average="micro")`, DMCB-GIST/DoKTra CTT/FinBERT_ft_cpl.py) and Table 7 reports. Macro F1 is
    reported beside it (`macro_f1`), the classes being imbalanced (FPB: 2879 neutral / 1363
    positive / 604 negative).

HoC's classifier head (`TaskSpec.hoc_head`, the option `task.hoc_head` / `DataConfig.hoc_head`):
  - "pairs20" (default): the authors' and BLUE's encoding. Hallmark i has two sigmoid outputs,
    `<i>_0` (index 2i) and `<i>_1` (index 2i+1), trained under BCE against a multi-hot target in
    which exactly one of the pair is 1 (DMCB-GIST/DoKTra CTT/BioBERT_ft_cpl.py: `num_labels=20,
    problem_type="multi_label_classification"` and the `str(i) + "_" + str(value)` label map of
    `preprocessing`; bluebert's run_bluebert_multi_labels.py with `--num_classes=20 --num_aspects=10
    --aspect_value_list="0,1"`). Hallmark i is predicted when its `_1` output beats its `_0` output:
    the per-pair argmax of bluebert's `metric_fn`, the only decoding of the 20 outputs either
    repository publishes (`doktra_tune.losses.label_probabilities`).
  - "sigmoid10": one sigmoid output per hallmark, predicted at p >= 0.5.
The labels, label matrices and metrics are the ten hallmarks under either head; only the model's
output width (`num_outputs`), its loss targets and how its outputs become hallmark probabilities
differ.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping, get_args

from doktra_tune.errors import ConfigError

# HoC's classifier head (README: Protocol; the option task.hoc_head / DataConfig.hoc_head). pairs20: the
# authors' and BLUE's encoding, two sigmoid outputs per hallmark (`<i>_0`, `<i>_1`) under BCE; sigmoid10: one
# sigmoid per hallmark.
HocHead = Literal["pairs20", "sigmoid10"]
HOC_HEADS: tuple[str, ...] = get_args(HocHead)

METRICS = ("micro_f1_positive", "binary_f1", "hoc_example_f1", "micro_f1", "macro_f1")
DOMAINS = ("biomedical", "clinical", "financial")


@dataclass(frozen=True)
class TaskSpec:
    """One classification task: labels (model-output order), metric, default loader."""

    name: str
    labels: tuple[str, ...]
    negative_labels: tuple[str, ...]
    multi_label: bool
    metric: str
    default_format: str
    domain: str
    splits: tuple[str, ...] = ("train", "dev", "test")
    positive_label: str | None = None  # binary_f1 tasks (GAD): the class whose F1 is reported
    description: str = ""
    # (loader, where its files come from, in the layout that loader reads); the first is the usual one
    data_sources: tuple[tuple[str, str], ...] = ()
    hoc_head: HocHead | None = None  # HoC's classifier head (module docstring); None for every other task

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def pair_outputs(self) -> bool:
        """True for the 20-output HoC head: two sigmoid outputs (`<i>_0`, `<i>_1`) per label."""
        return self.hoc_head == "pairs20"

    @property
    def num_outputs(self) -> int:
        """The classifier's width: 2 * num_labels for the pair head, else num_labels."""
        return 2 * len(self.labels) if self.pair_outputs else len(self.labels)

    @property
    def output_labels(self) -> tuple[str, ...]:
        """The names of the classifier's outputs in order: `<i>_0`, `<i>_1` per label i for the pair
        head (the authors' and BLUE's label list), else the labels."""
        if self.pair_outputs:
            return tuple(f"{i}_{value}" for i in range(len(self.labels)) for value in (0, 1))
        return self.labels

    @property
    def positive_labels(self) -> tuple[str, ...]:
        """Labels counted by micro_f1_positive (all labels minus the negatives)."""
        return tuple(label for label in self.labels if label not in self.negative_labels)

    def label_index(self, label: str) -> int:
        return self.labels.index(label)

    def data_source(self, data_format: str | None = None) -> str:
        """One line: where the files of `data_format` (default: the task's) come from, in its layout."""
        loader = (data_format or self.default_format).partition(":")[0].strip()
        for name, source in self.data_sources:
            if name == loader:
                return source
        return f"the {self.name} files in the layout of data format {loader} (doktra_tune/data/__init__.py)"


# BLUE's HoC label names (its eval_hoc.py order: the ten hallmarks, lower case, sorted).
HOC_LABELS: tuple[str, ...] = (
    "activating invasion and metastasis",
    "avoiding immune destruction",
    "cellular energetics",
    "enabling replicative immortality",
    "evading growth suppressors",
    "genomic instability and mutation",
    "inducing angiogenesis",
    "resisting cell death",
    "sustaining proliferative signaling",
    "tumor promoting inflammation",
)

SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")

# BLUE's pre-processed relation and HoC data, as BLUE_Benchmark's README links them (release 0.1)
BLUE_RELEASE = "https://github.com/ncbi-nlp/BLUE_Benchmark/releases/download/0.1/bert_data.zip"


def _blue(name: str, folder: str) -> tuple[str, str]:
    return "blue_tsv", f"BLUE's {name} ({BLUE_RELEASE}: bert_data/{folder}/{{train,dev,test}}.tsv)"


def _relation(name: str, labels: tuple[str, ...], *, domain: str, description: str,
              data_sources: tuple[tuple[str, str], ...], default_format: str = "blue_tsv") -> TaskSpec:
    """A single-label relation task: micro-F1 over its relation classes, the last label (the negative
    class) left out (BLUE)."""
    return TaskSpec(name=name, labels=labels, negative_labels=labels[-1:], multi_label=False,
                    metric="micro_f1_positive", default_format=default_format, domain=domain,
                    description=description, data_sources=data_sources)


def _sentiment(name: str, default_format: str, description: str, source: str) -> TaskSpec:
    """A financial three-class sentiment task (§4.7): micro-F1 over all three classes, as the authors' scripts."""
    return TaskSpec(name=name, labels=SENTIMENT_LABELS, negative_labels=(), multi_label=False, metric="micro_f1",
                    default_format=default_format, domain="financial", description=description,
                    data_sources=((default_format.partition(":")[0], source),))


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    _relation(
        "chemprot", ("CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false"), domain="biomedical",
        default_format="chemprot_jsonl",  # SciBERT's copy; the paper's (BLUE's TSVs) is conf/task/chemprot.yaml's
        description="chemical-protein relations, five evaluated CPR groups (BLUE)",
        data_sources=(
            _blue("ChemProt", "ChemProt"),
            ("chemprot_jsonl", "SciBERT's ChemProt (github.com/allenai/scibert, "
             "data/text_classification/chemprot/{train,dev,test}.txt, JSON lines saved as {train,dev,test}.jsonl)"),
        ),
    ),
    _relation(
        "ddi", ("DDI-advise", "DDI-effect", "DDI-int", "DDI-mechanism", "DDI-false"), domain="biomedical",
        description="drug-drug interactions, four types (BLUE)",
        data_sources=(_blue("DDI", "ddi2013-type"),),
    ),
    _relation(
        "i2b2", ("PIP", "TeCP", "TeRP", "TrAP", "TrCP", "TrIP", "TrNAP", "TrWP", "false"), domain="clinical",
        description="2010 i2b2/VA problem-treatment-test relations, eight types (BLUE)",
        data_sources=(
            ("blue_tsv", "BLUE's i2b2-2010 {train,dev,test}.tsv, built by BLUE_Benchmark's blue/bert/create_i2b2_bert.py "
             "from the 2010 i2b2/VA relation data (not in BLUE's release: the n2c2 data use agreement, "
             "portal.dbmi.hms.harvard.edu)"),
        ),
    ),
    TaskSpec(
        name="hoc", labels=HOC_LABELS, negative_labels=(), multi_label=True, metric="hoc_example_f1",
        default_format="blue_tsv", domain="biomedical", hoc_head="pairs20",
        description="hallmarks of cancer, multi-label sentences scored per abstract (BLUE)",
        data_sources=(
            ("hoc_raw", "the Hallmarks of Cancer corpus (github.com/sb895/Hallmarks-of-Cancer: text/<PMID>.txt, "
             "labels/<PMID>.txt)"),
            _blue("HoC", "hoc"),
        ),
    ),
    TaskSpec(
        name="gad", labels=("0", "1"), negative_labels=("0",), multi_label=False, metric="binary_f1",
        positive_label="1", default_format="gad_folds:1", domain="biomedical",
        description="gene-disease associations, BioBERT's 10-fold split (no dev split shipped: dev is the fold's test file)",
        data_sources=(
            ("gad_folds", "BioBERT's pre-processed GAD folds (github.com/dmis-lab/biobert, download.sh: "
             "datasets/RE/GAD/{1..10}/{train,test}.tsv)"),
        ),
    ),
    _sentiment(
        "fpb", "fpb", "Financial PhraseBank 50%-agree, 4846 sentences, stratified 10% test (§4.7)",
        "the Financial PhraseBank v1.0 (Malo et al. 2014), Sentences_50Agree.txt (sentence@label, latin-1) or its "
        "CSV all-data.csv (label,sentence)",
    ),
    _sentiment(
        "fts", "csv_holdout:fts.csv",
        "FinTextSen (SemEval-2017 task 5 microblogs): real-valued sentiment scores clustered into three classes "
        "following Daudert et al. (2018), stratified 10% test (§4.7)",
        "FinTextSen: the SemEval-2017 Task 5 microblog track (Cortis et al. 2017), its scores clustered into "
        "negative/neutral/positive as in Daudert et al. 2018, saved as fts.csv (label,sentence)",
    ),
)}


def get_task(name: str | TaskSpec, hoc_head: str | None = None, option: str = "hoc_head") -> TaskSpec:
    """The registered task `name` (case-insensitive); ConfigError listing the known tasks.

    `hoc_head` (HOC_HEADS): HoC with that classifier head (None: the task as given, HoC's default
    pairs20); a one-line ConfigError, naming the setting `option`, for any other task."""
    if isinstance(name, TaskSpec):
        spec = name
    else:
        key = str(name).strip().lower()
        if key not in TASKS:
            raise ConfigError(
                f"unknown task {name!r}; set data.task to one of {', '.join(sorted(TASKS))}"
            )
        spec = TASKS[key]
    if hoc_head is None or hoc_head == spec.hoc_head:
        return spec
    if spec.hoc_head is None:
        raise ConfigError(
            f"{option}={hoc_head!r} applies to task hoc only (task {spec.name} has one output per label); drop it"
        )
    if hoc_head not in HOC_HEADS:
        raise ConfigError(f"{option}={hoc_head!r} is unknown; use one of {', '.join(HOC_HEADS)}")
    return replace(spec, hoc_head=hoc_head)  # type: ignore[arg-type]


def task_of(data: Any) -> TaskSpec:
    """The task a `DataConfig` trains on: `data.task` with the head `data.hoc_head` (None: the default)."""
    return get_task(data.task, getattr(data, "hoc_head", None))


def checkpoint_head(meta: Mapping[str, Any], num_outputs: int | None = None) -> str | None:
    """The HoC head of a checkpoint: the one its doktra_meta.json records, else the one its classifier's
    width `num_outputs` gives (20: pairs20), else sigmoid10 (the only head before the option). None for
    other tasks."""
    if meta.get("hoc_head") is not None:
        return str(meta["hoc_head"])
    task = TASKS.get(str(meta.get("task") or "").lower())
    if task is None or task.hoc_head is None:
        return None
    return "pairs20" if num_outputs == 2 * task.num_labels else "sigmoid10"


def _checked_head(meta: Mapping[str, Any], wanted: str | None, where: object, role: str,
                  num_outputs: int | None) -> str | None:
    """The checkpoint's HoC head (`checkpoint_head`); a one-line ConfigError when `wanted` is set and differs."""
    head = checkpoint_head(meta, num_outputs)
    if head is not None and wanted is not None and head != wanted:
        raise ConfigError(
            f"{role} {str(where)!r} has the {head} head, not {wanted}; set hoc_head={head} or use a "
            f"{role} trained with hoc_head={wanted}"
        )
    return head


def task_of_checkpoint(meta: Mapping[str, Any], task: TaskSpec, where: object, role: str = "checkpoint",
                       requested: str | None = None, num_outputs: int | None = None) -> TaskSpec:
    """`task` with the head the checkpoint at `where` was trained with (its outputs fix it; `num_outputs`:
    its classifier's width), after `check_checkpoint_task`; a one-line ConfigError when `requested` (a
    head asked for explicitly) differs from it."""
    check_checkpoint_task(meta, task, where, role)
    if task.hoc_head is None:
        return task
    head = _checked_head(meta, requested, where, role, num_outputs)
    return task if head is None else get_task(task, head)


def check_checkpoint_head(meta: Mapping[str, Any], task: TaskSpec, where: object, role: str = "checkpoint",
                          num_outputs: int | None = None) -> None:
    """A one-line ConfigError when the checkpoint at `where` has another HoC head than `task`."""
    if task.hoc_head is not None:
        _checked_head(meta, task.hoc_head, where, role, num_outputs)


def check_checkpoint_task(meta: Mapping[str, Any], task: TaskSpec, where: object, role: str = "checkpoint") -> None:
    """A one-line ConfigError when the checkpoint at ``where`` (its doktra_meta.json ``meta``) was
    trained on another task than ``task``; checkpoints that record no task pass."""
    if meta.get("task") not in (None, task.name):
        raise ConfigError(
            f"{role} {str(where)!r} was trained on task {meta.get('task')!r}, not {task.name!r}; "
            f"use a {role} of the same task or change data.task"
        )
