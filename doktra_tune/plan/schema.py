"""The search configuration, typed: `SearchConfig.from_raw` turns the composed Hydra config (a plain
dict, `doktra_tune/conf/config.yaml` + task + preset + overrides) into frozen dataclasses, once.

Every check that needs no I/O happens here, against the ranges and value sets of
`doktra_tune.config` (shared with the stages and the grid files) and the search's own value sets
below. A bad value raises a one-line `ConfigError` naming the override and the fix. The I/O checks
(data files, models, Ray address, MLflow URI, run directory) are `doktra_tune.plan.preflight`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, get_args

from doktra_tune.config import (
    CPU_KERNELS,
    DEFAULT_CACHE_DIR,
    POSITIVE,
    CpuKernels,
    DataConfig,
    DistillConfig,
    Precision,
    Projection,
    Range,
    StageConfig,
    field_rule,
    from_section,
)
from doktra_tune.errors import ConfigError
from doktra_tune.selection import SELECTION_KINDS, SelectionKind
from doktra_tune.tasks import get_task
from search_spaces import STAGES

E1Mode = Literal["grid", "best_epoch"]
E1_MODES: tuple[str, ...] = get_args(E1Mode)
Handoff = Literal["final_epoch", "best_epoch"]
HANDOFFS: tuple[str, ...] = get_args(Handoff)
KeepPolicy = Literal["needed", "all"]
KEEP_POLICIES: tuple[str, ...] = get_args(KeepPolicy)
FinalProtocol = Literal["shared_models", "chain", "winners"]  # final.protocol (plan.final); the first: default
FINAL_PROTOCOLS: tuple[str, ...] = get_args(FinalProtocol)
GAD_FOLDS: tuple[int, ...] = tuple(range(1, 11))  # BioBERT's 10-fold GAD
GadStd = Literal["over_seeds", "over_runs"]  # final.gad_std: what GAD's ± is over (final.summarize)
GAD_STD: tuple[str, ...] = get_args(GadStd)
SearchMode = Literal["grid", "tpe"]
MODES: tuple[str, ...] = get_args(SearchMode)
Pruner = Literal["median", "successive_halving", "synchronous_halving", "hyperband", "asha", "none"]
PRUNERS: tuple[str, ...] = get_args(Pruner)
# Pruners whose scheduler pauses trials at a rung and resumes them later from their checkpoint:
# their trials save the training state with every checkpoint (StageConfig.save_training_state).
PAUSING_PRUNERS: tuple[str, ...] = ("synchronous_halving",)
SEARCH_STAGES: tuple[str, ...] = STAGES  # ctt, student, abd: Algorithm 1's three searches
Variant = Literal[
    "teacher_ctt", "teacher_ft", "student_ft", "doktra", "doktra_no_ctt", "kld", "ctt_kld", "student_ft_cpl",
]
FINAL_VARIANTS: tuple[str, ...] = get_args(Variant)
FINAL_EVAL_SPLITS: tuple[str, ...] = ("dev", "test")

NON_NEGATIVE_INT = Range(0, integer=True)
POSITIVE_INT = Range(1, integer=True)
NON_NEGATIVE = Range(0)
REDUCTION_FACTOR = Range(2, integer=True)


# ----------------------------------------------------------------------------- value checks


def number(value: Any, name: str, allowed: Range) -> Any:
    """`value` (an int for integer ranges) if it lies in `allowed`, else a one-line ConfigError."""
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} must be {allowed.requirement()}; fix the override {name}=...")
    return int(value) if allowed.integer else value


def optional_number(value: Any, name: str, allowed: Range) -> Any:
    return None if value is None else number(value, name, allowed)


def field_number(value: Any, name: str, cls: type, field: str) -> Any:
    """`number` against the rule of config field `cls.field`: the one range that field has."""
    allowed = field_rule(cls, field).range
    assert allowed is not None
    return optional_number(value, name, allowed) if field_rule(cls, field).optional else number(value, name, allowed)


def field_choice(value: Any, name: str, cls: type, field: str) -> Any:
    """`choice` among the values config field `cls.field` admits."""
    choices = field_rule(cls, field).choices
    assert choices is not None
    return choice(value, name, choices)


def choice(value: Any, name: str, choices: tuple[str, ...], *, null_ok: bool = False) -> Any:
    """`value` if it is one of `choices` (or None with `null_ok`), else a one-line ConfigError."""
    if (value is None and null_ok) or value in choices:
        return value
    extra = " or null" if null_ok else ""
    raise ConfigError(f"{name}={value!r} is unknown; use one of {', '.join(choices)}{extra}")


def boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{name}={value!r} must be true or false; fix the override {name}=...")


def _optional_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def check_schedule_grouping(group_key: str | None, pruner: str, mode: str) -> None:
    """The pruners that can compare trials only within a schedule group (`group_key`: the e1 grid)."""
    if group_key is None:
        return
    if pruner in ("hyperband", "asha"):
        raise ConfigError(
            f"search.pruner={pruner} cannot keep runs of different length apart (the student's e1 grid: each "
            "run's schedule ends at its own e1); use median, successive_halving, synchronous_halving or none, "
            "or stages.student.e1_mode=best_epoch"
        )
    if pruner == "synchronous_halving" and mode == "tpe":
        raise ConfigError(
            "search.pruner=synchronous_halving with search.mode=tpe cannot size one bracket per e1 value; "
            "use search.mode=grid, another pruner, or stages.student.e1_mode=best_epoch"
        )


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class TaskOptions:
    name: str  # a registered task (doktra_tune.tasks)
    data_subdir: str  # <data_root>/<data_subdir>
    data_format: str | None  # None: the task's default loader
    data_copy: str | None = None  # which of the task's data copies (conf/task/<task>.yaml `copies`); None: its only one
    hoc_head: str | None = None  # HoC only (conf/task/hoc.yaml): pairs20 | sigmoid10 (DataConfig.hoc_head)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> TaskOptions:
        spec = get_task(raw["name"])
        name = spec.name
        copy, copies = _optional_str(raw.get("data_copy")), raw.get("copies")
        if isinstance(copies, Mapping) and copies:
            if copy not in copies:
                raise ConfigError(f"task.data_copy={copy!r} is unknown; use one of {', '.join(copies)}")
        elif copy is not None:
            raise ConfigError(f"task {name} has one copy of its data; drop the override task.data_copy={copy}")
        if raw.get("data_subdir") in (None, ""):
            raise ConfigError("task.data_subdir is empty; set task.data_subdir=<folder under data_root>")
        head = raw.get("hoc_head")
        if head is not None:
            head = field_choice(head, "task.hoc_head", DataConfig, "hoc_head")
            if spec.hoc_head is None:
                raise ConfigError(f"task.hoc_head={head!r} applies to task=hoc only (task {name} has one output "
                                  "per label); drop it")
        return cls(name, str(raw["data_subdir"]), _optional_str(raw.get("data_format")), copy, head)


@dataclass(frozen=True)
class StageOptions:
    """One search stage: its epochs, grid file and overrides, and the precision it trains in."""

    name: str
    epochs: int
    search_space: str | None  # None: search_spaces/<stage>.yaml
    grid: dict[str, Any]  # hyperparameter -> values replacing the file's (None entries dropped)
    precision: Precision  # stages.<stage>.precision, else train.precision
    margin: float = 1.0  # ABD only: mu of Eq. 5
    projection: Projection = "auto"  # ABD only
    e1_mode: E1Mode = "grid"  # student only: e1 searched (grid) or the best epoch of one run (best_epoch)
    share_prefix: bool = True  # ABD only: train the grid's activation-boundary phase once per trunk

    @classmethod
    def from_raw(cls, name: str, raw: Mapping[str, Any], train_precision: Precision) -> StageOptions:
        key = f"stages.{name}"
        grid: dict[str, Any] = {}
        for param, values in (raw.get("grid") or {}).items():
            if values is None:
                continue
            if not isinstance(values, (list, int, float)) or isinstance(values, bool):
                raise ConfigError(
                    f"{key}.grid.{param}={values!r} must be a list of numbers; "
                    f"write it as {key}.grid.{param}=[v1,v2]"
                )
            grid[param] = values
        own = raw.get("precision")
        precision = field_choice(own, f"{key}.precision", StageConfig, "precision") if own else train_precision
        extra: dict[str, Any] = {}
        if name == "abd":
            extra["margin"] = float(field_number(raw.get("margin", 1.0), f"{key}.margin", DistillConfig, "margin"))
            extra["projection"] = field_choice(raw.get("projection", "auto"), f"{key}.projection", DistillConfig, "projection")
            extra["share_prefix"] = boolean(raw.get("share_prefix", True), f"{key}.share_prefix")
        if name == "student":
            extra["e1_mode"] = choice(raw.get("e1_mode", "grid"), f"{key}.e1_mode", E1_MODES)
            if extra["e1_mode"] == "best_epoch" and "epochs" in grid:
                raise ConfigError(
                    f"{key}.grid.epochs is the e1 grid of {key}.e1_mode=grid; with e1_mode=best_epoch set "
                    f"{key}.epochs=<n> (one run per lr1, e1 = its best epoch)"
                )
        return cls(
            name=name, epochs=field_number(raw["epochs"], f"{key}.epochs", StageConfig, "epochs"),
            search_space=_optional_str(raw.get("search_space")), grid=grid, precision=precision, **extra,
        )

    @property
    def searches_epochs(self) -> bool:
        """Whether the number of epochs is a grid dimension (the student's e1 in e1_mode=grid)."""
        return self.name == "student" and self.e1_mode == "grid"

    def fixed_values(self) -> dict[str, Any]:
        """What every trial of the stage shares: its epochs (CTT's e, ABD's e2, e1 in best_epoch mode)."""
        return {} if self.searches_epochs else {"epochs": self.epochs}


@dataclass(frozen=True)
class SelectionOptions:
    kind: SelectionKind
    f1_tolerance: float  # CTT: trials within this dev F1 of the best compete on dev ECE

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any] | None) -> SelectionOptions:
        raw = raw or {}
        return cls(
            kind=choice(raw.get("kind", "lexicographic"), "search.selection.kind", SELECTION_KINDS),
            f1_tolerance=float(number(raw.get("f1_tolerance", 0.0), "search.selection.f1_tolerance", NON_NEGATIVE)),
        )


@dataclass(frozen=True)
class SearchOptions:
    mode: SearchMode
    num_samples: int | None
    pruner: Pruner
    grace_period: int
    reduction_factor: int
    n_startup_trials: int
    seed: int
    max_failures: int
    stop_after: str | None
    handoff: Handoff  # which epoch of a trial is its model: the last (the authors') or the best on dev
    keep_checkpoints: KeepPolicy  # needed: free what no later stage or resume needs | all
    selection: SelectionOptions
    dry_run: bool = False  # print the plan, its epoch-units and a GPU-hours estimate; run nothing

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> SearchOptions:
        mode = choice(raw["mode"], "search.mode", MODES)
        num_samples = optional_number(raw.get("num_samples"), "search.num_samples", POSITIVE_INT)
        if mode == "tpe" and num_samples is None:
            raise ConfigError("search.mode=tpe needs a trial budget; set search.num_samples=<n>")
        return cls(
            mode=mode, num_samples=num_samples,
            pruner=choice(raw["pruner"], "search.pruner", PRUNERS),
            grace_period=number(raw.get("grace_period", 1), "search.grace_period", POSITIVE_INT),
            reduction_factor=number(raw.get("reduction_factor", 3), "search.reduction_factor", REDUCTION_FACTOR),
            n_startup_trials=number(raw.get("n_startup_trials", 2), "search.n_startup_trials", NON_NEGATIVE_INT),
            seed=number(raw.get("seed", 0), "search.seed", NON_NEGATIVE_INT),
            max_failures=number(raw.get("max_failures", 2), "search.max_failures", NON_NEGATIVE_INT),
            stop_after=choice(raw.get("stop_after"), "search.stop_after", SEARCH_STAGES, null_ok=True),
            handoff=choice(raw.get("handoff", "final_epoch"), "search.handoff", HANDOFFS),
            keep_checkpoints=choice(raw.get("keep_checkpoints", "needed"), "search.keep_checkpoints", KEEP_POLICIES),
            selection=SelectionOptions.from_raw(raw.get("selection")),
            dry_run=boolean(raw.get("dry_run", False), "search.dry_run"),
        )

    @property
    def pauses_trials(self) -> bool:
        """Whether the pruner pauses trials at its rungs (they then save their training state)."""
        return self.pruner in PAUSING_PRUNERS


@dataclass(frozen=True)
class FinalOptions:
    seeds: tuple[int, ...]
    variants: tuple[str, ...]
    eval_splits: tuple[str, ...]
    protocol: FinalProtocol  # shared_models: seed re-runs, each DoKTra seed from the first seed's models | chain | winners
    folds: tuple[int, ...] | None  # GAD folds of the final runs (None: the task has no folds)
    gad_std: GadStd = "over_seeds"  # GAD's ±: over seeds of each seed's fold mean (the paper's) | over_runs
    beside_abd: bool = True  # the teacher and student runs start once CTT's and the student's winners exist

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], task: str) -> FinalOptions:
        seeds = list(raw.get("seeds") or [])
        if not seeds:
            raise ConfigError("final.seeds is empty; give at least one seed, e.g. final.seeds=[1,2,3]")
        variants = list(raw.get("variants") or [])
        bad = [v for v in variants if v not in FINAL_VARIANTS]
        if bad:
            raise ConfigError(f"final.variants has unknown {bad}; use any of {', '.join(FINAL_VARIANTS)}")
        splits = list(raw.get("eval_splits") or FINAL_EVAL_SPLITS)
        if [s for s in splits if s not in FINAL_EVAL_SPLITS] or "dev" not in splits:
            raise ConfigError(f"final.eval_splits={splits} must hold dev (and test); e.g. final.eval_splits=[dev,test]")
        protocol = choice(raw.get("protocol", FINAL_PROTOCOLS[0]), "final.protocol", FINAL_PROTOCOLS)
        return cls(tuple(field_number(s, "final.seeds", StageConfig, "seed") for s in seeds), tuple(variants), tuple(splits), protocol,
                   _folds(raw.get("folds"), task, protocol),
                   choice(raw.get("gad_std", GAD_STD[0]), "final.gad_std", GAD_STD),
                   boolean(raw.get("beside_abd", True), "final.beside_abd"))


def _folds(raw: Any, task: str, protocol: str) -> tuple[int, ...] | None:
    """GAD with the shared_models or chain protocol (seed re-runs on every fold): all ten folds by
    default (Table 2), or the listed ones. None: the search's own data (other tasks; GAD with the
    winners protocol unless folds are listed)."""
    if task != "gad":
        if raw is not None:
            raise ConfigError(f"final.folds={raw!r} is for GAD's ten folds only; drop the override for task {task}")
        return None
    if raw is None and protocol == "winners":
        return None
    folds = GAD_FOLDS if raw is None else tuple(raw) if isinstance(raw, (list, tuple)) else (raw,)
    bad = [f for f in folds if f not in GAD_FOLDS]
    if bad or not folds:
        raise ConfigError(f"final.folds={list(folds)} must list GAD folds in 1..10; e.g. final.folds=[1]")
    if protocol == "winners" and len(folds) > 1:
        raise ConfigError(
            "final.protocol=winners reuses the search's models, trained on one GAD fold; score the ten folds "
            "with final.protocol=shared_models or chain, or one fold with final.folds=[1]"
        )
    return tuple(int(f) for f in folds)


@dataclass(frozen=True)
class ResourceOptions:
    cpus_per_trial: float
    gpus_per_trial: float | None  # None (auto): 1 when the Ray cluster has GPUs, else 0; fractions allowed
    max_concurrent_trials: int | None

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> ResourceOptions:
        return cls(
            cpus_per_trial=float(number(raw["cpus_per_trial"], "resources.cpus_per_trial", POSITIVE)),
            gpus_per_trial=None if str(raw.get("gpus_per_trial", "auto")).strip().lower() == "auto" else
            float(number(raw["gpus_per_trial"], "resources.gpus_per_trial", NON_NEGATIVE)),
            max_concurrent_trials=optional_number(
                raw.get("max_concurrent_trials"), "resources.max_concurrent_trials", POSITIVE_INT),
        )


RAY_JOBS_PORT = 8265  # the Ray head's dashboard, where `ray job submit` sends a job


def ray_client_line(setting: str, address: str) -> str:
    """The one line refusing a Ray Client address (`ray://`): the search runs as a Ray job instead.
    Ray's documentation advises Ray Jobs, not Ray Client, for Tune; the search's driver (its checks,
    run directory and tracking) must run on the cluster."""
    hostport = address.split("://", 1)[1].split("/", 1)[0]
    host = (hostport.rpartition(":")[0] if ":" in hostport else hostport) or "<head>"
    return (
        f"{setting}={address} is Ray Client, which doktra-tune does not run on (Tune needs its driver on the "
        f"cluster); submit the search as a Ray job instead: ray job submit --address http://{host}:{RAY_JOBS_PORT} "
        "--working-dir . -- python -m doktra_tune.search <your overrides> ray.address=auto"
    )


def is_ray_client(address: str | None) -> bool:
    return bool(address) and str(address).strip().lower().startswith("ray://")


@dataclass(frozen=True)
class RayOptions:
    address: str | None  # None: a local Ray; auto | <host>:<port> (Ray Client, ray://, is refused)
    num_cpus: int | None  # local Ray only (None: os.cpu_count())
    connect_timeout_s: float

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> RayOptions:
        address = _optional_str(raw.get("address"))
        if is_ray_client(address):
            raise ConfigError(ray_client_line("ray.address", str(address).strip()))
        return cls(
            address=address,
            num_cpus=optional_number(raw.get("num_cpus"), "ray.num_cpus", POSITIVE_INT),
            connect_timeout_s=float(number(raw.get("connect_timeout_s") or 10, "ray.connect_timeout_s", POSITIVE)),
        )


@dataclass(frozen=True)
class SearchConfig:
    """The whole search configuration (see doktra_tune/conf/config.yaml for every key's meaning)."""

    preset: str
    runs_root: str
    search_id: str | None
    data_root: str | None
    cache_dir: str
    teacher_model: str
    student_model: str
    task: TaskOptions
    data: dict[str, Any]  # the data: section (DataConfig fields), checked where the plan builds its DataConfig
    train: StageConfig  # the train: section: the StageConfig fields every stage shares (model, epochs: the stage's)
    cpu_kernels: CpuKernels  # train.cpu_kernels: native | avx2, the CPU kernels the trials run (device.CPU_KERNEL_ENV)
    stages: dict[str, StageOptions]  # ctt, student, abd
    search: SearchOptions
    final: FinalOptions
    resources: ResourceOptions
    ray: RayOptions
    tracking_uri: str | None  # mlflow.tracking_uri (None: the run directory's sqlite store)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> SearchConfig:
        """Build and check the typed configuration; one-line ConfigError on the first bad value."""
        task = TaskOptions.from_raw(raw["task"])
        train_section = dict(raw["train"])
        cpu_kernels = choice(train_section.pop("cpu_kernels", None) or "native", "train.cpu_kernels", CPU_KERNELS)
        data = DataConfig(task=task.name, data_dir=task.data_subdir)  # stands in until the plan knows data_root
        train = from_section(StageConfig, "train", train_section, data=data, model="", output_dir="")
        return cls(
            preset=str(raw.get("preset_name", "custom")),
            runs_root=str(raw.get("runs_root") or "runs"),
            search_id=_optional_str(raw.get("search_id")),
            data_root=_optional_str(raw.get("data_root")),
            cache_dir=str(raw.get("cache_dir") or DEFAULT_CACHE_DIR),
            teacher_model=str(raw["teacher_model"]),
            student_model=str(raw["student_model"]),
            task=task,
            data=dict(raw["data"]),
            train=train,
            cpu_kernels=cpu_kernels,
            stages={name: StageOptions.from_raw(name, raw["stages"][name], train.precision) for name in SEARCH_STAGES},
            search=SearchOptions.from_raw(raw["search"]),
            final=FinalOptions.from_raw(raw["final"], task.name),
            resources=ResourceOptions.from_raw(raw["resources"]),
            ray=RayOptions.from_raw(raw["ray"]),
            tracking_uri=_optional_str((raw.get("mlflow") or {}).get("tracking_uri")),
        )
