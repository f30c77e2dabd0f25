"""Plain configs and results of the three DoKTra stages (Algorithm 1).

These dataclasses are the contract between the method core (`doktra_tune.stages`) and everything
that wraps it (Ray trainables, the search driver, MLflow, analysis). They hold plain values only,
so they round-trip through dicts (`to_dict` / `from_dict`) for checkpoints and MLflow params. Each
checked field carries its one rule (`FieldRule`, `ruled`): the configs check themselves when made, the
CLI schema and the grid files read the same rules (`field_rule`).

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
from doktra_tune.tasks import HOC_HEADS, TASKS, HocHead, get_task

DEFAULT_CACHE_DIR = "~/.cache/doktra_tune"

# ---------------------------------------------------------------------------------------------
# Every allowed-value set and range, defined once; each checked config field names its own below.

Precision = Literal["auto", "fp32", "tf32", "bf16"]  # doktra_tune.device
PRECISIONS: tuple[str, ...] = get_args(Precision)
# train.batching (encoding.make_batches): random = the authors' sampler; bucketed = length-bucketed mega-batches
Batching = Literal["random", "bucketed"]
BATCHINGS: tuple[str, ...] = get_args(Batching)
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


@dataclass(frozen=True)
class FieldRule:
    """What one config field admits: a numeric `range` or a set of `choices` (None allowed when
    `optional`), and a valid `example` for messages (`grid`: one for a search-space grid)."""

    range: Range | None = None
    choices: tuple[str, ...] | None = None
    example: str = ""
    grid: str = ""
    optional: bool = False

    def problem(self, name: str, value: Any) -> str | None:
        """A one-line message when `value` is not admitted, else None."""
        if value is None and self.optional:
            return None
        if self.choices is not None:
            return None if value in self.choices else f"{name}={value!r} is unknown; use one of {', '.join(self.choices)}"
        assert self.range is not None
        if value in self.range:
            return None
        return f"{name}={value!r} must be {self.range.requirement()}; e.g. {name}={self.example}"


_T = TypeVar("_T")


def ruled(default: Any, *, range: Range | None = None, choices: tuple[str, ...] | None = None,
          example: Any = None, grid: str = "", optional: bool = False) -> Any:
    """A dataclass field whose admitted values are its `FieldRule` (checked in `__post_init__`)."""
    rule = FieldRule(range, choices, str(default if example is None else example), grid, optional)
    return field(default=default, metadata={"rule": rule})


def field_rule(cls: type, name: str) -> FieldRule:
    """The rule of field `name` of config dataclass `cls`: the one validator of that field, read by
    the stage configs, the CLI schema (doktra_tune.plan.schema) and the grid files (search_space)."""
    for f in dataclasses.fields(cls):
        if f.name == name and "rule" in f.metadata:
            return f.metadata["rule"]
    raise KeyError(f"{cls.__name__}.{name} has no rule")


def ruled_fields(cls: type) -> dict[str, FieldRule]:
    """Every field of `cls` that has a rule, with it."""
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(cls) if "rule" in f.metadata}


def from_section(cls: type[_T], section: str, values: Mapping[str, Any], **given: Any) -> _T:
    """`cls(**given, **values)` from one section of the composed config (`train:`, `data:`): each
    value checked by its field's rule first, so a bad one is worded with the override's name
    (`train.batch_size=0 must be an integer >= 1; e.g. train.batch_size=32`)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if name not in fields:
            raise ConfigError(f"{section}.{name} is not a setting of {section}; use one of "
                              f"{', '.join(sorted(set(fields) - set(given)))}")
        rule = fields[name].metadata.get("rule")
        problem = rule.problem(f"{section}.{name}", value) if rule else None
        if problem:
            raise ConfigError(problem)
        checked[name] = _as_declared(value, fields[name].default, rule)
    return cls(**given, **checked)


def _as_declared(value: Any, default: Any, rule: FieldRule | None) -> Any:
    """A number as its field holds it: 0 for a float field is 0.0, 32.0 for an integer one is 32."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if rule is not None and rule.range is not None and rule.range.integer:
        return int(value)
    return float(value) if isinstance(default, float) else value


def check_fields(obj: Any, prefix: str = "") -> None:
    """Raise a one-line ConfigError for the first field of dataclass `obj` outside its rule."""
    for name, rule in ruled_fields(type(obj)).items():
        problem = rule.problem(prefix + name, getattr(obj, name))
        if problem:
            raise ConfigError(problem)


@dataclass
class DataConfig:
    """Which task, where its files are, and how much of it to use."""

    task: str
    data_dir: str  # the folder holding this task's files (e.g. ../shared/data/chemprot_scibert)
    data_format: str | None = None  # None: the task's default loader (see doktra_tune.tasks)
    max_len: int = ruled(128, range=MAX_LEN)  # Appendix A.1: maximum sequence length 128
    # seeded stratified subsample sizes (None: the whole split)
    train_limit: int | None = ruled(None, range=SUBSAMPLE_SIZE, example=2000, optional=True)
    dev_limit: int | None = ruled(None, range=SUBSAMPLE_SIZE, example=400, optional=True)
    test_limit: int | None = ruled(None, range=SUBSAMPLE_SIZE, example=400, optional=True)
    subsample_seed: int = ruled(0, range=SEED)
    cache_dir: str = DEFAULT_CACHE_DIR  # tokenized splits and teacher [CLS] vectors
    # HoC only: its classifier head (HOC_HEADS; None: the task's default, pairs20). Left out of
    # `StageConfig.to_dict` when None, so the configs of every other task serialise as before.
    hoc_head: HocHead | None = ruled(None, choices=HOC_HEADS, example="pairs20", optional=True)

    def __post_init__(self) -> None:
        check_fields(self, "data.")
        # an unknown task is reported where it is resolved
        if self.hoc_head is not None and str(self.task).strip().lower() in TASKS:
            get_task(self.task, self.hoc_head, option="data.hoc_head")


@dataclass
class StageConfig:
    """One training run of a stage: CTT (beta = beta1) or student fine-tuning (beta = 0).

    Every value is checked against its field's rule when the config is made (`__post_init__`,
    `dataclasses.replace` included): a bad value is a one-line ConfigError before anything runs."""

    data: DataConfig
    model: str  # hub id, local path, "minilm", or "random:<bert|albert|roberta>:L<n>-H<d>"
    output_dir: str
    lr: float = ruled(2e-5, range=LEARNING_RATE, grid="[6e-6, 1e-5]")
    epochs: int = ruled(3, range=EPOCHS, grid="[10]")
    batch_size: int = ruled(32, range=BATCH_SIZE, grid="[16, 32]")
    eval_batch_size: int = ruled(128, range=BATCH_SIZE)
    beta: float = ruled(0.0, range=BETA, example=0.3, grid="[0, 0.3, 0.5, 0.7]")  # confidence-penalty strength (Eq. 2)
    seed: int = ruled(42, range=SEED, grid="[42]")
    weight_decay: float = ruled(0.0, range=WEIGHT_DECAY, grid="[0, 0.01]")
    warmup_ratio: float = ruled(0.0, range=WARMUP_RATIO, grid="[0, 0.1]")  # authors: linear schedule, 0 warmup steps
    adam_eps: float = ruled(1e-8, range=POSITIVE, grid="[1e-8]")
    max_grad_norm: float = ruled(1.0, range=POSITIVE, grid="[1.0]")
    # random: the authors' RandomSampler batches (a seeded permutation per epoch), each padded to its longest;
    # bucketed: length-bucketed batches (encoding.make_batches), less padding, other batch-mates
    batching: Batching = ruled("random", choices=BATCHINGS)
    # auto: bf16 autocast on CUDA, fp32 on CPU | fp32 (strict) | tf32 (fp32, TF32 matmuls on CUDA) | bf16
    precision: Precision = ruled("auto", choices=PRECISIONS)
    device: str = "auto"
    torch_threads: int | None = None  # None: leave torch's default
    eval_splits: tuple[str, ...] = ("dev",)
    eval_every_epoch: bool = True  # False: splits other than dev are evaluated after the last epoch only
    keep_checkpoints: KeepCheckpoints = ruled("best", choices=KEEP_MODES)
    ece_bins: int = ruled(15, range=ECE_BINS)  # Appendix A.1 ECE, M equal-width bins
    # Pause/resume (synchronous successive halving pauses trials at its rungs): every epoch checkpoint
    # also holds the optimizer, LR schedule, RNG and best-so-far (TRAINING_STATE_FILE), and a run
    # given resume_from=<such a checkpoint> goes on from the epoch after it, as if never stopped.
    save_training_state: bool = False
    resume_from: str | None = None
    # Train epochs 1..stop_after_epoch only, on the schedule of all `epochs` (None: every epoch): the
    # trunk of an ABD grid's shared activation-boundary phase (doktra_tune.search.trunks).
    stop_after_epoch: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.data, Mapping):
            self.data = DataConfig(**self.data)
        self.eval_splits = tuple(self.eval_splits)
        check_fields(self)
        for split in self.eval_splits:
            if split not in EVAL_SPLITS:
                raise ConfigError(f"eval_splits holds {split!r}; use train, dev and/or test")
        if self.stop_after_epoch is not None and not 1 <= self.stop_after_epoch <= self.epochs:
            raise ConfigError(f"stop_after_epoch={self.stop_after_epoch} must be in [1, epochs={self.epochs}] or None")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["eval_splits"] = list(self.eval_splits)
        if out["data"].get("hoc_head") is None:  # every task but HoC: the dict it always had
            del out["data"]["hoc_head"]
        return out

    @classmethod
    def from_dict(cls: type[_C], values: Mapping[str, Any]) -> _C:
        return _build(cls, values)


@dataclass
class DistillConfig(StageConfig):
    """ABD (Algorithm 1 lines 3-10): `model` is the fine-tuned student checkpoint to start from."""

    teacher_checkpoint: str = ""
    # switch rate (loss switch, Alg. 1 line 3): epochs < int(gamma * epochs) train on Eq. 5, the rest refine
    gamma: float = ruled(0.9, range=GAMMA, grid="[0.6, 0.7, 0.8, 0.9]")
    margin: float = ruled(1.0, range=POSITIVE, grid="[1.0]")  # mu in Eq. 5
    projection: Projection = ruled("auto", choices=PROJECTIONS)
    projection_seed: int | None = None  # None: the run's seed (the authors seed it with --random_seed)
    distill_loss: DistillLoss = ruled("abd", choices=DISTILL_LOSSES)  # "kld": Table 6's KL-divergence distillation
    kd_temperature: float = ruled(1.0, range=POSITIVE, grid="[1.0]")

    @classmethod
    def of_stage(cls, base: StageConfig, **values: Any) -> DistillConfig:
        """A DistillConfig with every StageConfig field of `base` and `values` for the rest."""
        shared = {f.name: getattr(base, f.name) for f in dataclasses.fields(StageConfig)}
        return cls(**{**shared, **values})


_C = TypeVar("_C", bound=StageConfig)


def _build(cls: type[_C], values: Mapping[str, Any]) -> _C:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names - {"bucket_by_length"})
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} field(s) {unknown}; valid fields are {sorted(names)}"
        )
    kwargs = dict(values)
    if "bucket_by_length" in kwargs and "batching" not in kwargs:  # configs saved before train.batching existed
        kwargs["batching"] = "bucketed" if kwargs.pop("bucket_by_length") else "random"
    data = kwargs.get("data")
    if isinstance(data, Mapping):
        data_names = {f.name for f in dataclasses.fields(DataConfig)}
        bad = sorted(set(data) - data_names)
        if bad:
            raise ConfigError(f"unknown data field(s) {bad}; valid fields are {sorted(data_names)}")
        kwargs["data"] = DataConfig(**data)
    return cls(**kwargs)


def with_overrides(base: _C, overrides: Mapping[str, Any]) -> _C:
    """`base` with `overrides` (field -> value; `data`: a mapping of DataConfig fields, applied field
    by field), checked like any new config."""
    names = {f.name for f in dataclasses.fields(type(base))}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown {type(base).__name__} field(s) {unknown}; valid fields are {sorted(names)}")
    values = dict(overrides)
    if isinstance(values.get("data"), Mapping):
        values["data"] = dataclasses.replace(base.data, **values["data"])
    return dataclasses.replace(base, **values)


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
