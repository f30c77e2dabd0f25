"""Plain configs and results of the three DoKTra stages (Algorithm 1).

These dataclasses are the contract between the method core (`doktra_tune.stages`) and everything
that wraps it (Ray trainables, the search driver, MLflow, analysis). They hold plain values only,
so they round-trip through dicts (`to_dict` / `from_dict`) for Ray configs and MLflow params.

Metric names reported after every epoch (keys of `EpochReport.metrics`):
  epoch, train_loss, epoch_seconds,
  dev_f1, dev_ece, dev_loss, dev_accuracy, dev_lat (ABD only: Eq. 4, mean sign disagreements),
  phase (ABD only: 0 = activation-boundary distillation, 1 = CE - beta2*H refinement),
  test_f1, test_ece, test_loss, test_accuracy, test_lat (only when "test" is in eval_splits; with
  eval_every_epoch=False only in the last epoch's report).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar, get_args

from doktra_tune.errors import ConfigError

DEFAULT_CACHE_DIR = "~/.cache/doktra_tune"

# ---------------------------------------------------------------------------------------------
# Every allowed-value set and range, defined once: the CLI checks (doktra_tune.search.schema), the
# grid files (doktra_tune.search_space) and the stages (doktra_tune.stages) all read these.

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
CpuKernels = Literal["native", "avx2"]  # train.cpu_kernels (doktra_tune.device.CPU_KERNEL_ENV)
CPU_KERNELS: tuple[str, ...] = get_args(CpuKernels)
KeepCheckpoints = Literal["best", "last", "best_and_last", "none"]
KEEP_MODES: tuple[str, ...] = get_args(KeepCheckpoints)
# Teacher -> student [CLS] map of Eq. 4/5 (§4.2). auto: identity when the widths are equal (as the
# authors' RoBERTa-base financial student, Fin_RoBERTa_DoKTra_cpl.py), else the frozen random linear
# map (their `expander_model`); the two linear modes are TeacherProjection's.
LinearProjection = Literal["fixed_random", "learned"]
LINEAR_PROJECTIONS: tuple[str, ...] = get_args(LinearProjection)
Projection = Literal["auto", "identity", "fixed_random", "learned"]
PROJECTIONS: tuple[str, ...] = get_args(Projection)
DistillLoss = Literal["abd", "kld"]
DISTILL_LOSSES: tuple[str, ...] = get_args(DistillLoss)
EVAL_SPLITS: tuple[str, ...] = ("train", "dev", "test")


@dataclass(frozen=True)
class Range:
    """An admissible numeric range: bounds (open or closed), and whether values must be integers."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN
            return False
        if value in (float("inf"), float("-inf")):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def describe(self) -> str:
        """The range in words: "> 0", "in (0, 1]", "an integer >= 1"."""
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        else:
            text = "any number"
        return f"an integer {text}" if self.integer else text

    def requirement(self) -> str:
        """What a value must be: "an integer >= 1", "a number > 0"."""
        return self.describe() if self.integer else f"a number {self.describe()}"


def _num(value: float) -> str:
    return f"{value:g}"


LEARNING_RATE = Range(0, low_open=True)
BETA = Range(0)  # confidence-penalty strength, Eq. 2
GAMMA = Range(0, 1, low_open=True)  # loss switch rate (Alg. 1 line 3); 0 would skip distillation
EPOCHS = Range(1, integer=True)
BATCH_SIZE = Range(1, integer=True)
SEED = Range(0, integer=True)
WEIGHT_DECAY = Range(0)
WARMUP_RATIO = Range(0, 1, high_open=True)
POSITIVE = Range(0, low_open=True)  # adam_eps, max_grad_norm, margin mu, KD temperature
MAX_LEN = Range(8, integer=True)  # tokens, specials included (App. A.1 uses 128)
SUBSAMPLE_SIZE = Range(1, integer=True)
ECE_BINS = Range(1, integer=True)


@dataclass
class DataConfig:
    """Which task, where its files are, and how much of it to use."""

    task: str
    data_dir: str  # the folder holding this task's files (e.g. ../shared/data/chemprot_scibert)
    data_format: str | None = None  # None: the task's default loader (see doktra_tune.tasks)
    max_len: int = 128  # Appendix A.1: maximum sequence length 128
    train_limit: int | None = None  # seeded stratified subsample sizes (None: the whole split)
    dev_limit: int | None = None
    test_limit: int | None = None
    subsample_seed: int = 0
    cache_dir: str = DEFAULT_CACHE_DIR  # tokenized splits and teacher [CLS] vectors


@dataclass
class StageConfig:
    """One training run of a stage: CTT (beta = beta1) or student fine-tuning (beta = 0)."""

    data: DataConfig
    model: str  # hub id, local path, "minilm", or "random:<bert|albert|roberta>:L<n>-H<d>"
    output_dir: str
    lr: float = 2e-5
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 128
    beta: float = 0.0  # confidence-penalty strength (Eq. 2)
    seed: int = 42
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0  # authors: linear schedule, 0 warmup steps
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    bucket_by_length: bool = True  # length-bucketed batches with dynamic padding
    precision: Precision = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"
    torch_threads: int | None = None  # None: leave torch's default
    eval_splits: tuple[str, ...] = ("dev",)
    eval_every_epoch: bool = True  # False: splits other than dev are evaluated after the last epoch only
    keep_checkpoints: KeepCheckpoints = "best"
    ece_bins: int = 15  # Appendix A.1 ECE, M equal-width bins
    # Pause/resume (synchronous successive halving pauses trials at its rungs): every epoch checkpoint
    # also holds the optimizer, LR schedule, RNG and best-so-far (TRAINING_STATE_FILE), and a run
    # given resume_from=<such a checkpoint> goes on from the epoch after it, as if never stopped.
    save_training_state: bool = False
    resume_from: str | None = None
    # Train epochs 1..stop_after_epoch only, on the schedule of all `epochs` (None: every epoch): the
    # trunk of an ABD grid's shared activation-boundary phase (doktra_tune.search.trunks).
    stop_after_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["eval_splits"] = list(self.eval_splits)
        return out

    @classmethod
    def from_dict(cls: type[_C], values: Mapping[str, Any]) -> _C:
        return _build(cls, values)


@dataclass
class DistillConfig(StageConfig):
    """ABD (Algorithm 1 lines 3-10): `model` is the fine-tuned student checkpoint to start from."""

    teacher_checkpoint: str = ""
    gamma: float = 0.9  # switch rate: epochs < int(gamma * epochs) train on Eq. 5, the rest refine
    margin: float = 1.0  # mu in Eq. 5
    projection: Projection = "auto"
    projection_seed: int | None = None  # None: the run's seed (the authors seed it with --random_seed)
    distill_loss: DistillLoss = "abd"  # "kld": Table 6's KL-divergence distillation instead
    kd_temperature: float = 1.0


_C = TypeVar("_C", bound=StageConfig)


def _build(cls: type[_C], values: Mapping[str, Any]) -> _C:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} field(s) {unknown}; valid fields are {sorted(names)}"
        )
    kwargs = dict(values)
    data = kwargs.get("data")
    if isinstance(data, Mapping):
        data_names = {f.name for f in dataclasses.fields(DataConfig)}
        bad = sorted(set(data) - data_names)
        if bad:
            raise ConfigError(f"unknown data field(s) {bad}; valid fields are {sorted(data_names)}")
        kwargs["data"] = DataConfig(**data)
    if "eval_splits" in kwargs:
        kwargs["eval_splits"] = tuple(kwargs["eval_splits"])
    return cls(**kwargs)


@dataclass
class EpochReport:
    """What a stage hands its per-epoch callback (Ray Tune reporting plugs in here)."""

    epoch: int  # 1-based
    metrics: dict[str, float]
    checkpoint_dir: Path | None  # this epoch's checkpoint (HF save_pretrained + doktra_meta.json)


EpochCallback = Callable[[EpochReport], None]


@dataclass
class StageResult:
    """Per-epoch history of one stage run and where its checkpoints are."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0  # by dev_f1 (ties: earlier epoch)
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    # split -> stages.evaluation.EvaluationResult (probabilities, reliability bins, confusion) of the best / last
    # epoch: what the trainables log as artifacts without evaluating the checkpoint a second time
    best_evaluations: dict[str, Any] = field(default_factory=dict)
    last_evaluations: dict[str, Any] = field(default_factory=dict)

    @property
    def best_metrics(self) -> dict[str, float]:
        return self.history[self.best_epoch - 1] if self.best_epoch else {}

    @property
    def last_metrics(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}
