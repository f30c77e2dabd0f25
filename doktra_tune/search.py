"""`python -m doktra_tune.search task=chemprot preset=cpu`: the nested DoKTra search on Ray Tune.

One invocation runs Algorithm 1's three searches and the final runs (paper §4.2, App. A):

1. CTT: a Tuner over β₁ (`search_spaces/ctt.yaml`, per-task epochs of Table A1). Winner: dev F1,
   dev ECE as the second criterion (`analysis.selection.SelectionRule`, lexicographic by default).
2. Student fine-tuning: a Tuner over lr₁; every trial runs the longest e₁ and reports dev F1 per
   epoch; Tune keeps each trial's best checkpoint, so the winner's e₁ is its best epoch.
3. ABD: a Tuner over lr₂ × β₂ × γ whose trials all start from the student winner's checkpoint and
   distil from the CTT winner's.
4. Final: one Tuner whose `tune.grid_search` ranges over (variant × seed) run specs, each scored
   on dev and test (`final/results.json`).

Winner rows: one row per trial, holding the trial's best epoch (by dev F1) — the epoch whose
checkpoint Tune keeps (`CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="dev_f1")`) —
so the selected (trial, epoch) always has a checkpoint to hand to the next stage.

Run directory `<runs_root>/<search_id>/`: `config.yaml`, `mlflow.db`, `ray/<stage>/` (Tune),
`stages/<stage>/{winner.json,winner/}`, `final/results.json`. A stage whose `winner.json` exists
is skipped; an interrupted stage is resumed with `Tuner.restore` (finished trials are kept,
unfinished ones restart from scratch). Every input is validated before the run directory exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from doktra_tune.config import PRECISIONS, DataConfig, DistillConfig, StageConfig
from doktra_tune.errors import ConfigError, DataError, DoktraError

CONF_DIR = Path(__file__).resolve().parent / "conf"
REPO_ROOT = Path(__file__).resolve().parent.parent
SEARCH_STAGES = ("ctt", "student", "abd")
FINAL_VARIANTS = (
    "teacher_ctt", "teacher_ft", "student_ft", "doktra", "doktra_no_ctt", "kld", "ctt_kld",
    "student_ft_cpl",
)
EVAL_SPLITS = ("dev", "test")
# config keys that do not change what a search computes (left out of the default search id)
_ID_EXCLUDED = ("runs_root", "search_id", "data_root", "cache_dir", "ray", "mlflow", "resources")
_ID_EXCLUDED_SEARCH = ("max_failures", "stop_after")

Echo = Callable[[str], None]


def _echo(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------------------------
# validation: everything is checked before the run directory is created


@dataclass
class Plan:
    """A validated search: what to run and where."""

    cfg: dict[str, Any]
    task: str
    preset: str
    search_id: str
    run_dir: Path
    data: DataConfig
    spaces: dict[str, Any]  # stage -> SearchSpace
    stage_epochs: dict[str, int]
    tracking_uri: str | None  # None: the embedded sqlite store in the run dir
    ray_address: str | None
    seeds: list[int]
    variants: list[str]
    eval_splits: list[str]
    stop_after: str | None
    teacher_model: str
    student_model: str
    precision: dict[str, str]  # stage -> auto | fp32 | bf16 (stages.<stage>.precision, else train.precision)


def _data_root(cfg: dict[str, Any]) -> tuple[Path, str]:
    if cfg.get("data_root"):
        return Path(str(cfg["data_root"])).expanduser(), "data_root"
    if os.environ.get("DOKTRA_DATA_ROOT"):
        return Path(os.environ["DOKTRA_DATA_ROOT"]).expanduser(), "DOKTRA_DATA_ROOT"
    return (REPO_ROOT.parent / "shared" / "data").resolve(), "the default data_root"


def search_id_for(cfg: dict[str, Any]) -> str:
    """`<task>-<preset>-<8 hex>`: a hash of everything that changes what the search computes."""
    keyed = {k: v for k, v in cfg.items() if k not in _ID_EXCLUDED and k != "hydra"}
    keyed["search"] = {k: v for k, v in (cfg.get("search") or {}).items() if k not in _ID_EXCLUDED_SEARCH}
    digest = hashlib.sha1(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{cfg['task']['name']}-{cfg.get('preset_name', 'custom')}-{digest}"


def _number(value: Any, name: str, *, minimum: float, integer: bool = False, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        kind = "an integer" if integer else "a number"
        rel = ">" if strict else ">="
        raise ConfigError(f"{name}={value!r} must be {kind} {rel} {minimum}; fix the override {name}=...")
    return value


def _grid_overrides(stage: str, stage_cfg: dict[str, Any]) -> dict[str, Any]:
    grid = {k: v for k, v in (stage_cfg.get("grid") or {}).items() if v is not None}
    out: dict[str, Any] = {"epochs": [stage_cfg["epochs"]]}
    out.update(grid)
    return out


def validate(cfg: DictConfig | dict[str, Any]) -> Plan:
    """Check every input the search needs; `ConfigError`/`DataError` (one line) otherwise."""
    from doktra_tune.data import load_split
    from doktra_tune.models import resolve_model_source
    from doktra_tune.pruning import MODES, PRUNERS
    from doktra_tune.search_space import load_search_space
    from doktra_tune.tasks import get_task

    if isinstance(cfg, DictConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        except Exception as err:  # noqa: BLE001 - interpolation errors from user overrides
            raise ConfigError(f"cannot resolve the configuration ({_first_line(err)}); check the overrides") from err
    assert isinstance(cfg, dict)
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    task = get_task(cfg["task"]["name"]).name

    # data
    root, origin = _data_root(cfg)
    if not root.is_dir():
        raise DataError(
            f"data root {root} (from {origin}) does not exist; set data_root=<folder holding "
            f"{cfg['task']['data_subdir']}/> or export DOKTRA_DATA_ROOT"
        )
    data_dir = root / str(cfg["task"]["data_subdir"])
    dcfg = cfg["data"]
    for key in ("train_limit", "dev_limit", "test_limit"):
        if dcfg.get(key) is not None:
            _number(dcfg[key], f"data.{key}", minimum=1, integer=True)
    _number(dcfg["max_len"], "data.max_len", minimum=8, integer=True)
    data = DataConfig(
        task=task,
        data_dir=str(data_dir),
        data_format=cfg["task"].get("data_format"),
        max_len=int(dcfg["max_len"]),
        train_limit=dcfg.get("train_limit"),
        dev_limit=dcfg.get("dev_limit"),
        test_limit=dcfg.get("test_limit"),
        subsample_seed=int(dcfg.get("subsample_seed") or 0),
        cache_dir=str(cfg.get("cache_dir") or "~/.cache/doktra_tune"),
    )
    for split in ("train", "dev", "test"):
        load_split(
            task, split, data.data_dir, data_format=data.data_format,
            limit=getattr(data, f"{split}_limit"), seed=data.subsample_seed,
        )

    # models (a hub id must be cached while offline)
    teacher_model = str(cfg["teacher_model"])
    student_model = str(cfg["student_model"])
    for key, spec in (("teacher_model", teacher_model), ("student_model", student_model)):
        try:
            resolve_model_source(spec)
        except ConfigError as err:
            raise ConfigError(f"{key}={spec}: {err}") from err

    # training numbers
    tcfg = cfg["train"]
    _number(tcfg["batch_size"], "train.batch_size", minimum=1, integer=True)
    _number(tcfg["eval_batch_size"], "train.eval_batch_size", minimum=1, integer=True)
    _number(tcfg["seed"], "train.seed", minimum=0, integer=True)
    precision: dict[str, str] = {}
    for stage in SEARCH_STAGES:
        value = cfg["stages"][stage].get("precision") or tcfg.get("precision") or "auto"
        where = f"stages.{stage}.precision" if cfg["stages"][stage].get("precision") else "train.precision"
        if str(value) not in PRECISIONS:
            raise ConfigError(f"{where}={value!r} is unknown; use one of {', '.join(PRECISIONS)}")
        precision[stage] = str(value)

    # search spaces (grid values: type and range, e.g. gamma in (0, 1], lr > 0, beta >= 0)
    scfg = cfg["search"]
    if scfg["mode"] not in MODES:
        raise ConfigError(f"search.mode={scfg['mode']!r} is unknown; use one of {', '.join(MODES)}")
    if scfg["pruner"] not in PRUNERS:
        raise ConfigError(f"search.pruner={scfg['pruner']!r} is unknown; use one of {', '.join(PRUNERS)}")
    if scfg.get("num_samples") is not None:
        _number(scfg["num_samples"], "search.num_samples", minimum=1, integer=True)
    if scfg["mode"] == "tpe" and scfg.get("num_samples") is None:
        raise ConfigError("search.mode=tpe needs a trial budget; set search.num_samples=<n>")
    _number(scfg.get("max_failures", 0), "search.max_failures", minimum=0, integer=True)
    _number(scfg.get("grace_period", 1), "search.grace_period", minimum=1, integer=True)
    _number(scfg.get("reduction_factor", 3), "search.reduction_factor", minimum=2, integer=True)
    _number(scfg.get("n_startup_trials", 2), "search.n_startup_trials", minimum=0, integer=True)
    if scfg.get("stop_after") not in (None, *SEARCH_STAGES):
        raise ConfigError(
            f"search.stop_after={scfg['stop_after']!r} is unknown; use one of {', '.join(SEARCH_STAGES)} or null"
        )
    spaces: dict[str, Any] = {}
    stage_epochs: dict[str, int] = {}
    for stage in SEARCH_STAGES:
        st = cfg["stages"][stage]
        _number(st["epochs"], f"stages.{stage}.epochs", minimum=1, integer=True)
        grid = st.get("grid") or {}
        for name, values in grid.items():
            if values is not None and not isinstance(values, (list, int, float)):
                raise ConfigError(
                    f"stages.{stage}.grid.{name}={values!r} must be a list of numbers; "
                    f"write it as stages.{stage}.grid.{name}=[v1,v2]"
                )
        try:
            space = load_search_space(stage, st.get("search_space"), _grid_overrides(stage, st))
        except ConfigError as err:
            raise ConfigError(f"stages.{stage}: {err}") from err
        spaces[stage] = space
        stage_epochs[stage] = int(space.fixed.get("epochs", st["epochs"]))
        if scfg["mode"] == "grid" and scfg.get("num_samples") not in (None, space.grid_size):
            raise ConfigError(
                f"search.num_samples={scfg['num_samples']} but the {stage} grid has {space.grid_size} "
                "points; drop num_samples for the exhaustive grid or use search.mode=tpe"
            )
    sel = scfg.get("selection") or {}
    if sel.get("kind", "lexicographic") not in ("lexicographic", "pareto"):
        raise ConfigError(f"search.selection.kind={sel.get('kind')!r} is unknown; use lexicographic or pareto")
    _number(sel.get("f1_tolerance", 0.0), "search.selection.f1_tolerance", minimum=0)

    # final runs
    fcfg = cfg["final"]
    seeds = list(fcfg.get("seeds") or [])
    if not seeds:
        raise ConfigError("final.seeds is empty; give at least one seed, e.g. final.seeds=[1,2,3]")
    for s in seeds:
        _number(s, "final.seeds", minimum=0, integer=True)
    variants = list(fcfg.get("variants") or [])
    bad = [v for v in variants if v not in FINAL_VARIANTS]
    if bad:
        raise ConfigError(f"final.variants has unknown {bad}; use any of {', '.join(FINAL_VARIANTS)}")
    eval_splits = list(fcfg.get("eval_splits") or ["dev", "test"])
    if [s for s in eval_splits if s not in EVAL_SPLITS] or "dev" not in eval_splits:
        raise ConfigError(f"final.eval_splits={eval_splits} must hold dev (and test); e.g. final.eval_splits=[dev,test]")

    # resources
    rcfg = cfg["resources"]
    _number(rcfg["cpus_per_trial"], "resources.cpus_per_trial", minimum=0, strict=True)
    _number(rcfg["gpus_per_trial"], "resources.gpus_per_trial", minimum=0)
    if rcfg.get("max_concurrent_trials") is not None:
        _number(rcfg["max_concurrent_trials"], "resources.max_concurrent_trials", minimum=1, integer=True)

    # services: Ray address and MLflow tracking URI answer
    ray_address = cfg["ray"].get("address")
    if ray_address:
        check_ray_address(str(ray_address), float(cfg["ray"].get("connect_timeout_s") or 10))
    tracking_uri = (cfg.get("mlflow") or {}).get("tracking_uri")
    if tracking_uri:
        from doktra_tune.tracking import check_tracking_uri

        check_tracking_uri(str(tracking_uri))

    search_id = str(cfg.get("search_id") or search_id_for(cfg))
    if any(c in search_id for c in "/\\") or search_id in (".", ".."):
        raise ConfigError(f"search_id={search_id!r} must be a plain name; drop the slashes")
    run_dir = Path(str(cfg.get("runs_root") or "runs")).expanduser().resolve() / search_id
    return Plan(
        cfg=cfg, task=task, preset=str(cfg.get("preset_name", "custom")), search_id=search_id,
        run_dir=run_dir, data=data, spaces=spaces, stage_epochs=stage_epochs,
        tracking_uri=str(tracking_uri) if tracking_uri else None,
        ray_address=str(ray_address) if ray_address else None, seeds=[int(s) for s in seeds],
        variants=variants, eval_splits=eval_splits, stop_after=scfg.get("stop_after"),
        teacher_model=teacher_model, student_model=student_model, precision=precision,
    )


def check_ray_address(address: str, timeout: float) -> None:
    """ConfigError unless `address` (auto | host:port | ray://host:port) answers within `timeout`."""
    fix = "start a cluster with `ray start --head` or drop the override ray.address to run locally"
    if address == "auto":
        from ray._private.services import find_gcs_addresses  # noqa: PLC0415

        env = os.environ.get("RAY_ADDRESS")
        found = [env] if env else list(find_gcs_addresses())
        if not found:
            raise ConfigError(f"ray.address=auto found no running Ray cluster on this machine; {fix}")
        address = found[0]
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"ray.address={address!r} is not auto, <host>:<port> or ray://<host>:<port>; {fix}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ConfigError(f"ray.address={address} does not answer ({err.strerror or err}); {fix}") from err


def experiment_trial_states(exp_path: Path) -> dict[str, str]:
    """Tune's last recorded status (TERMINATED, ERROR, RUNNING, ...) of every trial of an experiment."""
    states: dict[str, str] = {}
    for path in sorted(exp_path.glob("experiment_state-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for trial_json, _meta in data.get("trial_data", []):
            trial = json.loads(trial_json)
            states[str(trial.get("trial_id"))] = str(trial.get("status"))
    return states


def _error_line(err: BaseException) -> str:
    """`Type: message` of the exception a trial raised (unwrapping Ray's RayTaskError)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"[:500]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --------------------------------------------------------------------------------------------
# Ray


def _quiet_ray_env() -> None:
    """Tune settings measured in benchmarks/bench_ray_overhead.py (see pruning.tuned_run_settings):
    only the JSON per-trial logger (added explicitly to every RunConfig), no console reporter."""
    from doktra_tune.pruning import tuned_run_settings

    for key, value in tuned_run_settings()["env"].items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def connect_ray(plan: Plan) -> bool:
    """Start local Ray or connect to `ray.address`; True when this call started/connected Ray."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if plan.ray_address:
            ray.init(address=plan.ray_address, **kwargs)
        else:
            num_cpus = plan.cfg["ray"].get("num_cpus") or os.cpu_count() or 1
            ray.init(
                num_cpus=int(num_cpus), include_dashboard=False,
                runtime_env={"worker_process_setup_hook": "trainables.common.preload"}, **kwargs,
            )
    except (ConnectionError, TimeoutError, RuntimeError) as err:
        raise ConfigError(
            f"ray.address={plan.ray_address or 'local'} failed ({_first_line(err)}); start a cluster "
            "with `ray start --head` or drop ray.address"
        ) from err
    return True


@dataclass
class Resources:
    per_trial: dict[str, float]
    max_concurrent: int
    torch_threads: int


def plan_resources(cfg: dict[str, Any]) -> Resources:
    """Per-trial resources (1 GPU when torch sees one, else CPU only) and the concurrency they allow."""
    import ray
    import torch

    rcfg = cfg["resources"]
    cpus = float(rcfg["cpus_per_trial"])
    gpus = float(rcfg["gpus_per_trial"]) if torch.cuda.is_available() else 0.0
    total = ray.cluster_resources()
    limits = [int(total.get("CPU", 1) // cpus)]
    if gpus > 0:
        limits.append(int(total.get("GPU", 0) // gpus))
    concurrent = max(1, min(limits))
    if rcfg.get("max_concurrent_trials"):
        concurrent = min(concurrent, int(rcfg["max_concurrent_trials"]))
    return Resources({"cpu": cpus, "gpu": gpus}, concurrent, max(1, int(cpus)))


# --------------------------------------------------------------------------------------------
# progress


def pruning_grace_period(stage: str, grace_period: int, max_t: int, space: Any, base: dict[str, Any]) -> int:
    """First epoch at which a pruner may judge a trial of `stage` (search.grace_period, <= max_t).

    ABD trials fit Eq. 5 until epoch int(gamma * e2) and only then train the classifier on
    CE - beta2 * H (Algorithm 1 line 3). Until every gamma of the grid has switched, dev F1 compares
    trials in different phases and would prune the larger gammas for it, so ABD pruning starts at
    max over the grid of int(gamma * e2) + 1, the first epoch in which every trial refines."""
    from doktra_tune.stages import switch_epoch

    grace = min(grace_period, max_t)
    if stage != "abd":
        return grace
    gammas = space.params.get("gamma") or [space.fixed.get("gamma", base.get("gamma", 1.0))]
    first_refining = max(switch_epoch(max_t, float(g)) for g in gammas) + 1
    return min(max(grace, first_refining), max_t)


def _make_progress_callback(stage: str, echo: Echo, scheduler: Any = None) -> Any:
    from ray.tune import Callback

    from doktra_tune.pruning import pruned_trial_ids

    class StageProgress(Callback):
        """One concise line per trial result/end: stage, trial counts, best dev F1 so far."""

        def __init__(self) -> None:
            self.best: tuple[float, str] | None = None

        def _counts(self, trials: list, ending: Any = None, ending_status: str = "TERMINATED") -> str:
            # Tune calls on_trial_complete/on_trial_error before it updates the ending trial's status.
            pruned = pruned_trial_ids(scheduler) if scheduler is not None else set()
            status = {t.trial_id: t.status for t in trials}
            if ending is not None:
                status[ending.trial_id] = ending_status
            done = sum(1 for t, s in status.items() if s == "TERMINATED" and t not in pruned)
            err = sum(1 for s in status.values() if s == "ERROR")
            run = sum(1 for s in status.values() if s == "RUNNING")
            paused = sum(1 for s in status.values() if s == "PAUSED")  # synchronous halving's rungs
            best = f"best dev_f1={self.best[0]:.4f} ({self.best[1]})" if self.best else "best -"
            waiting = f" paused {paused}" if paused else ""
            return f"done {done} pruned {len(pruned)} errored {err} running {run}{waiting} | {best}"

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            f1 = result.get("dev_f1")
            if isinstance(f1, (int, float)) and math.isfinite(f1) and (self.best is None or f1 > self.best[0]):
                self.best = (float(f1), trial.trial_id)
            ece = result.get("dev_ece", float("nan"))
            epoch = int(result.get("epoch", result.get("training_iteration", 0)))
            echo(
                f"[{stage}] trial {trial.trial_id} epoch {epoch}: dev_f1={f1 if f1 is None else round(f1, 4)} "
                f"dev_ece={ece:.4f} | {self._counts(trials)}"
            )

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            echo(f"[{stage}] trial {trial.trial_id} ended | {self._counts(trials, trial)}")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            echo(f"[{stage}] trial {trial.trial_id} ERRORED | {self._counts(trials, trial, 'ERROR')}")

    return StageProgress()


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat(follow_symlinks=False).st_size
            except OSError:
                pass
    return total


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def disk_line(run_dir: Path) -> str:
    used = _dir_bytes(run_dir)
    free = shutil.disk_usage(run_dir).free
    return f"run dir {_fmt_bytes(used)} on disk ({used} bytes), {_fmt_bytes(free)} free"


# --------------------------------------------------------------------------------------------
# one stage = one Tuner


@dataclass
class TrialRecord:
    trial_id: str
    status: str  # completed | pruned | errored
    params: dict[str, Any]
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, Any]
    last_metrics: dict[str, Any]
    checkpoint: str | None  # the kept (best) checkpoint
    node_id: str = ""
    error: str = ""
    curve: dict[int, float] = field(default_factory=dict)  # epoch -> search_score (what the pruner saw)

    def row(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id, "status": self.status, "epoch": self.best_epoch,
            "dev_f1": self.best_metrics.get("dev_f1", float("nan")),
            "dev_ece": self.best_metrics.get("dev_ece", float("nan")),
        }


def _trial_index(trial_id: str, path: str) -> int:
    """Creation order of a trial: the number after the trial id in its directory name
    (`<trainable>_<id>_<n>_<params>_<date>`), else the id's own numeric suffix."""
    name = Path(path).name
    marker = f"_{trial_id}_"
    if marker in name:
        head = name.split(marker, 1)[1].split("_", 1)[0]
        if head.isdigit():
            return int(head)
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return _clean(value.item())
        except (TypeError, ValueError):
            return str(value)
    return value


_METRIC_SKIP = ("config", "date", "hostname", "pid", "timestamp", "time_since_restore", "iterations_since_restore",
                "checkpoint_dir_name", "should_checkpoint", "done", "trial_id", "experiment_tag")


def _metrics_only(result: dict[str, Any]) -> dict[str, Any]:
    return {k: _clean(v) for k, v in result.items() if k not in _METRIC_SKIP and not k.startswith("config/")}


def collect_trials(results: Any, max_t: int, pruned_ids: set[str], pruner_on: bool) -> list[TrialRecord]:
    """A `TrialRecord` per trial of a finished `ResultGrid`, in trial order."""
    from doktra_tune.pruning import SEARCH_METRIC

    records: list[tuple[int, TrialRecord]] = []
    for res in results:
        trial_id = str(res.metrics.get("trial_id") if res.metrics else "") or Path(res.path).name
        history: list[dict[str, Any]] = []
        df = res.metrics_dataframe
        if df is not None and len(df):
            history = [_metrics_only(r) for r in df.to_dict("records")]
        last = history[-1] if history else _metrics_only(res.metrics or {})
        epochs_run = int(last.get("training_iteration", len(history)) or 0) if last else 0
        best_epoch, best = 0, {}
        for row in history:
            f1 = row.get("dev_f1")
            if f1 is not None and (not best or f1 > best.get("dev_f1", -1)):
                best, best_epoch = row, int(row.get("epoch") or row.get("training_iteration") or 0)
        ckpt = None
        try:
            best_ckpt = res.get_best_checkpoint("dev_f1", "max") if history else None
        except Exception:  # noqa: BLE001 - no checkpoint recorded
            best_ckpt = None
        if best_ckpt is None and res.checkpoint is not None:
            best_ckpt = res.checkpoint
        if best_ckpt is not None:
            ckpt = best_ckpt.path
            meta_file = Path(ckpt) / "doktra_meta.json"
            if meta_file.is_file():
                meta = json.loads(meta_file.read_text())
                best_epoch = int(meta.get("epoch", best_epoch))
                best = next((r for r in history if int(r.get("epoch") or 0) == best_epoch), best)
        if res.error is not None:
            status = "errored"
        elif trial_id in pruned_ids or (pruner_on and epochs_run < max_t):
            status = "pruned"
        else:
            status = "completed"
        config = dict(res.config or {})
        params = {k: _clean(v) for k, v in {**config, **(config.pop("run", None) or {})}.items() if k != "run"}
        records.append((_trial_index(trial_id, res.path), TrialRecord(
            trial_id=trial_id, status=status, params=params, epochs_run=epochs_run,
            best_epoch=best_epoch, best_metrics=best, last_metrics=last, checkpoint=ckpt,
            node_id=str(last.get("node_id", "")) if last else "",
            error=_error_line(res.error) if res.error is not None else "",
            curve={int(r["training_iteration"]): float(r.get(SEARCH_METRIC, r["dev_f1"])) for r in history
                   if r.get("training_iteration") is not None and r.get("dev_f1") is not None},
        )))
    records.sort(key=lambda pair: (pair[0], pair[1].trial_id))
    return [record for _, record in records]


@dataclass
class StageSpec:
    name: str  # Tune experiment name (ray/<name>)
    trainable: Callable[..., None]
    trainable_kwargs: dict[str, Any]
    param_space: dict[str, Any]
    max_t: int
    search_alg: Any = None
    scheduler: Any = None
    num_samples: int = 1
    space: Any = None  # the stage's SearchSpace (None: explicit runs)
    points: list[dict[str, Any]] | None = None  # explicit run specs (final runs)
    point_keys: tuple[str, ...] = ()  # what identifies a run spec


class SearchDriver:
    """Runs the stages of one validated `Plan` inside its run directory."""

    def __init__(self, plan: Plan, echo: Echo = _echo) -> None:
        self.plan = plan
        self.echo = echo
        self.run_dir = plan.run_dir
        self.cfg = plan.cfg
        self.tracker: Any = None
        self.resources: Resources | None = None
        self.epochs_spent: dict[str, int] = {}
        self.started_ray = False

    def ensure_ray(self) -> Resources:
        """Connect Ray (local or `ray.address`) the first time a stage needs to run."""
        if self.resources is None:
            self.started_ray = connect_ray(self.plan)
            self.resources = plan_resources(self.cfg)
            self.echo(
                f"ray: {self.resources.max_concurrent} concurrent trial(s) x {self.resources.per_trial}"
                + (f" on {self.plan.ray_address}" if self.plan.ray_address else " (local)")
            )
        return self.resources

    # ---------------------------------------------------------------- bases
    def _stage_base(self, stage: str, model: str) -> dict[str, Any]:
        resources = self.ensure_ray()
        t = self.cfg["train"]
        cfg = StageConfig(
            data=self.plan.data, model=model, output_dir="", epochs=self.plan.stage_epochs[stage],
            batch_size=int(t["batch_size"]), eval_batch_size=int(t["eval_batch_size"]),
            seed=int(t["seed"]), weight_decay=float(t.get("weight_decay", 0.0)),
            warmup_ratio=float(t.get("warmup_ratio", 0.0)), max_grad_norm=float(t.get("max_grad_norm", 1.0)),
            precision=self.plan.precision[stage], torch_threads=resources.torch_threads,
            eval_splits=("dev",), keep_checkpoints="last", ece_bins=int(t.get("ece_bins", 15)),
        )
        return cfg.to_dict()

    def _abd_base(self, student_ckpt: str, teacher_ckpt: str) -> dict[str, Any]:
        base = self._stage_base("abd", student_ckpt)
        a = self.cfg["stages"]["abd"]
        return DistillConfig.from_dict({
            **base, "teacher_checkpoint": teacher_ckpt, "margin": float(a.get("margin", 1.0)),
            "projection": a.get("projection", "fixed_random"),
        }).to_dict()

    # ---------------------------------------------------------------- tuner
    def _tracking(self, stage: str, extra: dict[str, str] | None = None) -> dict:
        tags = {
            "doktra.teacher_model": self.plan.teacher_model,
            "doktra.student_model": self.plan.student_model,
            **(extra or {}),
        }
        return self.tracker.trial_tracking(stage, tags)

    def run_tuner(self, spec: StageSpec, stage_label: str) -> list[TrialRecord]:
        """Run one stage's Tuner; after an interruption, keep the finished trials and run the rest.

        Resume: `Tuner.can_restore` finds the interrupted experiment, `Tuner.restore(...,
        resume_errored=False, restart_errored=False).get_results()` reads its trials; trials that
        had finished (TERMINATED or ERROR in the experiment state) are kept as they are, and a new
        experiment `<stage>-resume<k>` runs only what is missing (the grid points or run specs not
        finished yet; with TPE, the rest of the trial budget). Its Optuna study starts with the
        finished trials' per-epoch dev F1 (`build_search(prior_trials=...)`), so pruning goes on
        against them and TPE learns from them. Restarting the interrupted
        experiment itself with `fit()` is avoided: with a searcher, Ray 2.60 re-suggests the
        unfinished trial's point and then waits forever on the stale one.
        """
        from ray import tune

        self.ensure_ray()
        assert self.resources is not None
        storage = self.run_dir / "ray"
        trainable = tune.with_resources(
            tune.with_parameters(spec.trainable, **spec.trainable_kwargs), self.resources.per_trial
        )
        prior: list[TrialRecord] = []
        name, attempt = spec.name, 0
        while tune.Tuner.can_restore(str(storage / name)):
            prior += self._finished_trials(storage / name, trainable, spec)
            attempt += 1
            name = f"{spec.name}-resume{attempt}"
        if attempt:
            self.echo(
                f"[{stage_label}] resuming the interrupted stage from {storage / spec.name}: "
                f"{len(prior)} finished trial(s) kept"
            )
            spec = self._remaining_spec(spec, prior, name)
        records = list(prior)
        if spec.num_samples > 0:
            records += self._fit(spec, trainable, stage_label, storage)
        self.epochs_spent[spec.name] = sum(r.epochs_run for r in records)
        self.tracker.record_outcomes(stage_label, {r.trial_id: r.status for r in records})
        return records

    def _fit(self, spec: StageSpec, trainable: Any, stage_label: str, storage: Path) -> list[TrialRecord]:
        from ray import tune
        from ray.tune.logger import JsonLoggerCallback

        from doktra_tune.pruning import SynchronousHalvingScheduler, pruned_trial_ids

        assert self.resources is not None
        # A scheduler that pauses trials must not be capped by max_concurrent_trials (Tune's
        # ConcurrencyLimiter counts paused trials as running); the per-trial resources bound it.
        pauses = isinstance(spec.scheduler, SynchronousHalvingScheduler)
        tuner = tune.Tuner(
            trainable,
            param_space=spec.param_space,
            tune_config=tune.TuneConfig(
                search_alg=spec.search_alg, scheduler=spec.scheduler, num_samples=spec.num_samples,
                max_concurrent_trials=None if pauses else self.resources.max_concurrent,
                reuse_actors=True,  # a trial process keeps torch/transformers imported (~8 s each)
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=str(storage),
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=1, checkpoint_score_attribute="dev_f1", checkpoint_score_order="max",
                ),
                failure_config=tune.FailureConfig(max_failures=int(self.cfg["search"].get("max_failures", 0))),
                callbacks=[_make_progress_callback(stage_label, self.echo, spec.scheduler), JsonLoggerCallback()],
                verbose=0,
            ),
        )
        results = tuner.fit()
        pruned = pruned_trial_ids(spec.scheduler) if spec.scheduler is not None else set()
        return collect_trials(results, spec.max_t, pruned, self._pruner_on(spec))

    def _pruner_on(self, spec: StageSpec) -> bool:
        return self.cfg["search"]["pruner"] != "none" and spec.space is not None

    def _finished_trials(self, exp_path: Path, trainable: Any, spec: StageSpec) -> list[TrialRecord]:
        from ray import tune

        tuner = tune.Tuner.restore(str(exp_path), trainable=trainable, resume_errored=False, restart_errored=False)
        states = experiment_trial_states(exp_path)
        done = [r for r in tuner.get_results()
                if states.get(str((r.metrics or {}).get("trial_id", ""))) in ("TERMINATED", "ERROR")]
        return collect_trials(done, spec.max_t, set(), self._pruner_on(spec))

    def _remaining_spec(self, spec: StageSpec, prior: list[TrialRecord], name: str) -> StageSpec:
        """`spec` reduced to what the finished trials `prior` did not cover, as experiment `name`."""
        import itertools

        from ray import tune

        if spec.points is not None:  # explicit run specs (final runs)
            keys = spec.point_keys
            seen = {tuple(r.params.get(k) for k in keys) for r in prior}
            todo = [p for p in spec.points if tuple(p.get(k) for k in keys) not in seen]
            return dataclasses.replace(
                spec, name=name, param_space={**spec.param_space, "run": tune.grid_search(todo)},
                num_samples=1 if todo else 0, points=todo,
            )  # (a one-point "run" becomes a one-value grid: same trial)
        assert spec.space is not None
        from doktra_tune.pruning import PriorTrial

        searched = list(spec.space.params)
        known = [PriorTrial(params=r.params, curve=r.curve, state=r.status) for r in prior]
        base = spec.trainable_kwargs["base"]
        if self.cfg["search"]["mode"] == "grid":
            seen = {tuple(r.params.get(k) for k in searched) for r in prior}
            todo = [dict(zip(searched, values)) for values in itertools.product(*spec.space.params.values())
                    if tuple(values) not in seen]
            if not todo:
                return dataclasses.replace(spec, name=name, num_samples=0)
            return dataclasses.replace(
                self._search_spec(spec.space.stage, spec.trainable, base, points=todo, prior=known), name=name
            )
        left = max(0, spec.num_samples - len(prior))
        if not left:
            return dataclasses.replace(spec, name=name, num_samples=0)
        return dataclasses.replace(
            self._search_spec(spec.space.stage, spec.trainable, base, num_samples=left, prior=known), name=name
        )

    def _search_spec(
        self, stage: str, trainable: Callable[..., None], base: dict[str, Any], num_samples: int | None = None,
        points: list[dict[str, Any]] | None = None, prior: list[Any] | None = None,
    ) -> StageSpec:
        from doktra_tune.pruning import PAUSING_PRUNERS, SEARCH_METRIC, build_search

        space = self.plan.spaces[stage]
        s = self.cfg["search"]
        if s["pruner"] in PAUSING_PRUNERS:  # paused trials resume from their last checkpoint
            base = {**base, "save_training_state": True}
        max_t = self.plan.stage_epochs[stage]
        asked = int(s.get("grace_period", 1))
        grace = pruning_grace_period(stage, asked, max_t, space, base)
        if grace > min(asked, max_t) and s["pruner"] != "none":
            self.echo(
                f"[{stage}] pruning starts at epoch {grace}, not search.grace_period={asked}: until then some "
                "trials are still in the activation-boundary phase (epochs < int(gamma * epochs)), where "
                "dev F1 would rank them below trials that already refine"
            )
        search_alg, scheduler, num_samples = build_search(
            space, mode=s["mode"], num_samples=num_samples or s.get("num_samples"), pruner=s["pruner"],
            metric=SEARCH_METRIC, mode_opt="max", max_t=max_t, seed=int(s.get("seed", 0)),
            grace_period=grace, reduction_factor=int(s.get("reduction_factor", 3)),
            n_startup_trials=int(s.get("n_startup_trials", 2)), points=points, prior_trials=prior,
        )
        return StageSpec(
            name=stage, trainable=trainable,
            trainable_kwargs={"base": base, "tracking": self._tracking(stage)},
            param_space=dict(space.fixed), max_t=max_t, search_alg=search_alg, scheduler=scheduler,
            num_samples=num_samples, space=space,
        )

    # ---------------------------------------------------------------- winners
    def _rule(self, stage: str) -> Any:
        from analysis.selection import SelectionRule

        sel = self.cfg["search"].get("selection") or {}
        return SelectionRule(
            kind=sel.get("kind", "lexicographic"), use_ece=(stage == "ctt"),
            f1_tolerance=float(sel.get("f1_tolerance", 0.0)),
        )

    def _pick(self, stage: str, records: list[TrialRecord], only: Callable[[TrialRecord], bool] | None = None) -> TrialRecord:
        import pandas as pd

        from analysis.selection import select_winner

        pool = [r for r in records if r.checkpoint and (only is None or only(r))]
        if not pool:
            raise DoktraError(
                f"stage {stage}: no trial left a checkpoint to select from; inspect {self.run_dir / 'ray' / stage} "
                "and rerun with a wider grid or more epochs"
            )
        rows = pd.DataFrame([r.row() for r in pool])
        if not (rows["status"] == "completed").any():
            rows["status"] = rows["status"].where(rows["status"] == "errored", "completed")
        winner = select_winner(rows, self._rule(stage), status_col="status")
        return pool[int(winner.name)]

    def _write_winner(self, stage: str, winner: TrialRecord, records: list[TrialRecord], extra: dict[str, Any]) -> dict[str, Any]:
        stage_dir = self.run_dir / "stages" / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        target = stage_dir / "winner"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(winner.checkpoint, target)  # type: ignore[arg-type]
        rule = self._rule(stage)
        info = {
            "stage": stage,
            "trial_id": winner.trial_id,
            "params": winner.params,
            "best_epoch": winner.best_epoch,
            "metrics": winner.best_metrics,
            "checkpoint": str(target),
            "selection": {**dataclasses.asdict(rule), "rows": "one per trial: its best dev_f1 epoch (the kept checkpoint)"},
            "epochs_spent": sum(r.epochs_run for r in records),
            "trials": [
                {"trial_id": r.trial_id, "status": r.status, "params": r.params, "epochs_run": r.epochs_run,
                 "best_epoch": r.best_epoch, "dev_f1": r.best_metrics.get("dev_f1"),
                 "dev_ece": r.best_metrics.get("dev_ece"), "node_id": r.node_id, "error": r.error}
                for r in records
            ],
            **extra,
        }
        info = _clean(info)
        tmp = stage_dir / "winner.json.tmp"
        tmp.write_text(json.dumps(info, indent=1))
        tmp.replace(stage_dir / "winner.json")
        self.tracker.log_stage_summary(
            stage, {"trial_id": winner.trial_id, "best_epoch": winner.best_epoch, **winner.params},
            [stage_dir / "winner.json"],
        )
        return info

    def _finished(self, stage: str) -> dict[str, Any] | None:
        path = self.run_dir / "stages" / stage / "winner.json"
        if path.is_file():
            info = json.loads(path.read_text())
            self.echo(f"[{stage}] finished earlier: winner {info['trial_id']} {info['params']} (skipped)")
            return info
        return None

    def _announce(self, stage: str, what: str) -> float:
        self.echo(f"[{stage}] start: {what}")
        return time.monotonic()

    def _done(self, stage: str, t0: float, info: dict[str, Any]) -> None:
        m = info.get("metrics") or {}
        self.echo(
            f"[{stage}] end in {time.monotonic() - t0:.0f}s: winner {info['trial_id']} {info['params']} "
            f"best epoch {info['best_epoch']} dev_f1={m.get('dev_f1')} dev_ece={m.get('dev_ece')} | "
            f"{info['epochs_spent']} epochs spent | {disk_line(self.run_dir)}"
        )

    # ---------------------------------------------------------------- stages
    def stage_ctt(self) -> dict[str, Any]:
        from trainables import ctt_trainable

        done = self._finished("ctt")
        if done:
            return done
        space = self.plan.spaces["ctt"]
        t0 = self._announce("ctt", f"calibrated teacher {self.plan.teacher_model}, grid {space.params}, "
                                   f"{self.plan.stage_epochs['ctt']} epochs")
        base = self._stage_base("ctt", self.plan.teacher_model)
        records = self.run_tuner(self._search_spec("ctt", ctt_trainable, base), "ctt")
        winner = self._pick("ctt", records)
        extra: dict[str, Any] = {}
        if self._needs_baseline():
            extra["baseline"] = self._baseline_teacher(records, base)
        info = self._write_winner("ctt", winner, records, extra)
        self._done("ctt", t0, info)
        return info

    def _needs_baseline(self) -> bool:
        return bool({"doktra_no_ctt", "kld", "teacher_ft"} & set(self.plan.variants))

    def _baseline_teacher(self, records: list[TrialRecord], base: dict[str, Any]) -> dict[str, Any]:
        """The β₁ = 0 teacher (plain fine-tuning) for doktra_no_ctt / kld: the best β₁=0 trial of the
        CTT grid, or one extra β₁=0 run (`ray/ctt_ft`) when the grid has none."""
        from trainables import ctt_trainable

        zero = [r for r in records if float(r.params.get("beta", -1)) == 0.0 and r.status != "errored" and r.checkpoint]
        if zero:
            best = self._pick("ctt", zero)
        else:
            self.echo("[ctt] no beta=0 trial in the grid: one extra beta=0 run for the uncalibrated teacher")
            spec = StageSpec(
                name="ctt_ft", trainable=ctt_trainable,
                trainable_kwargs={"base": base, "tracking": self._tracking("ctt")},
                param_space={**self.plan.spaces["ctt"].fixed, "run": {"beta": 0.0}},
                max_t=self.plan.stage_epochs["ctt"], points=[{"beta": 0.0}], point_keys=("beta",),
            )
            best = self._pick("ctt", self.run_tuner(spec, "ctt"))
        target = self.run_dir / "stages" / "ctt" / "teacher_ft"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(best.checkpoint, target)  # type: ignore[arg-type]
        return _clean({"trial_id": best.trial_id, "params": best.params, "best_epoch": best.best_epoch,
                       "metrics": best.best_metrics, "checkpoint": str(target)})

    def stage_student(self) -> dict[str, Any]:
        from trainables import student_trainable

        done = self._finished("student")
        if done:
            return done
        space = self.plan.spaces["student"]
        t0 = self._announce("student", f"student fine-tuning {self.plan.student_model}, grid {space.params}, "
                                       f"e1 up to {self.plan.stage_epochs['student']}")
        base = self._stage_base("student", self.plan.student_model)
        records = self.run_tuner(self._search_spec("student", student_trainable, base), "student")
        winner = self._pick("student", records)
        info = self._write_winner("student", winner, records, {"e1": winner.best_epoch})
        self._done("student", t0, info)
        return info

    def stage_abd(self, ctt: dict[str, Any], student: dict[str, Any]) -> dict[str, Any]:
        from trainables import abd_trainable

        done = self._finished("abd")
        if done:
            return done
        space = self.plan.spaces["abd"]
        t0 = self._announce("abd", f"activation boundary distillation, grid {space.params}, "
                                   f"e2={self.plan.stage_epochs['abd']}")
        base = self._abd_base(student["checkpoint"], ctt["checkpoint"])
        records = self.run_tuner(self._search_spec("abd", abd_trainable, base), "abd")
        winner = self._pick("abd", records)
        info = self._write_winner("abd", winner, records, {})
        self._done("abd", t0, info)
        return info

    def final_specs(self, ctt: dict[str, Any], student: dict[str, Any], abd: dict[str, Any]) -> list[dict[str, Any]]:
        """The (variant x seed) run specs of the final runs (each a `run` dict for final_trainable)."""
        hp = {"ctt": _hp(ctt["params"]), "student": _hp(student["params"]), "abd": _hp(abd["params"])}
        baseline = (ctt.get("baseline") or {}).get("checkpoint")
        common = {"eval_splits": self.plan.eval_splits, "eval_every_epoch": False}  # test once, at the end
        per_variant: dict[str, dict[str, Any]] = {
            "teacher_ctt": {"stage": "ctt", **hp["ctt"]},
            "teacher_ft": {"stage": "ctt", **hp["ctt"], "beta": 0.0},
            "student_ft": {"stage": "student", **hp["student"], "epochs": int(student["best_epoch"])},
            "student_ft_cpl": {"stage": "student", **hp["student"], "epochs": int(student["best_epoch"]),
                               "beta": float(ctt["params"].get("beta", 0.0))},
            "doktra": {"stage": "abd", **hp["abd"], "teacher_checkpoint": ctt["checkpoint"]},
            "doktra_no_ctt": {"stage": "abd", **hp["abd"], "teacher_checkpoint": baseline},
            "kld": {"stage": "abd", **hp["abd"], "distill_loss": "kld", "teacher_checkpoint": baseline},
            "ctt_kld": {"stage": "abd", **hp["abd"], "distill_loss": "kld", "teacher_checkpoint": ctt["checkpoint"]},
        }
        specs = []
        for variant in self.plan.variants:
            for seed in self.plan.seeds:
                specs.append({**per_variant[variant], **common, "variant": variant, "seed": int(seed)})
        return specs

    def stage_final(self, ctt: dict[str, Any], student: dict[str, Any], abd: dict[str, Any]) -> dict[str, Any]:
        from ray import tune

        from trainables import final_trainable

        out = self.run_dir / "final" / "results.json"
        if out.is_file():
            self.echo(f"[final] finished earlier: {out} (skipped)")
            return json.loads(out.read_text())
        specs = self.final_specs(ctt, student, abd)
        t0 = self._announce("final", f"{len(specs)} runs: {self.plan.variants} x seeds {self.plan.seeds}, "
                                     f"eval on {self.plan.eval_splits}")
        bases = {
            "ctt": self._stage_base("ctt", self.plan.teacher_model),
            "student": self._stage_base("student", self.plan.student_model),
            "abd": self._abd_base(student["checkpoint"], ctt["checkpoint"]),
        }
        max_t = max(self.plan.stage_epochs.values())
        spec = StageSpec(
            name="final", trainable=final_trainable,
            trainable_kwargs={"bases": bases, "tracking": self._tracking("final")},
            param_space={"run": tune.grid_search(specs)}, max_t=max_t,
            points=specs, point_keys=("variant", "seed"),
        )
        records = self.run_tuner(spec, "final")
        runs = []
        for r in records:
            run = r.params
            metrics = {k: v for k, v in r.last_metrics.items()
                       if k.startswith(("dev_", "test_")) or k in ("epoch", "train_loss")}
            runs.append({
                "variant": run.get("variant"), "seed": run.get("seed"), "stage": run.get("stage"),
                "trial_id": r.trial_id, "status": r.status, "node_id": r.node_id, "error": r.error,
                "metrics": metrics, "params": {k: v for k, v in run.items() if k not in ("variant", "seed", "stage")},
            })
        summary = summarize(runs)
        results = _clean({"search_id": self.plan.search_id, "task": self.plan.task, "runs": runs, "summary": summary,
                          "winners": {"ctt": ctt["params"], "student": {**student["params"], "e1": student["best_epoch"]},
                                      "abd": abd["params"]}})
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(out)
        self.tracker.log_stage_summary("final", {"runs": len(runs)}, [out])
        for variant, s in summary.items():
            self.echo(
                f"[final] {variant:15s} test_f1 {_pm(s.get('test_f1'))}  test_ece {_pm(s.get('test_ece'))}  "
                f"(n={s['n']}{', errored ' + str(s['errored']) if s['errored'] else ''})"
            )
        self.echo(f"[final] end in {time.monotonic() - t0:.0f}s | results {out} | {disk_line(self.run_dir)}")
        return results

    # ---------------------------------------------------------------- all
    def run(self) -> dict[str, Any]:
        from doktra_tune.tracking import SearchTracker, default_tracking_uri

        uri = self.plan.tracking_uri or default_tracking_uri(self.run_dir)
        self.tracker = SearchTracker(uri, self.plan.task, self.plan.search_id, self.cfg, self.run_dir)
        self.echo(
            f"search {self.plan.search_id}: task {self.plan.task}, preset {self.plan.preset}, "
            f"run dir {self.run_dir}, mlflow {uri}"
        )
        status = "FAILED"
        try:
            summary: dict[str, Any] = {"run_dir": str(self.run_dir)}
            ctt = self.stage_ctt()
            summary["ctt"] = ctt
            if self.plan.stop_after == "ctt":
                status = "FINISHED"
                return summary
            student = self.stage_student()
            summary["student"] = student
            if self.plan.stop_after == "student":
                status = "FINISHED"
                return summary
            abd = self.stage_abd(ctt, student)
            summary["abd"] = abd
            if self.plan.stop_after == "abd":
                status = "FINISHED"
                return summary
            summary["final"] = self.stage_final(ctt, student, abd)
            status = "FINISHED"
            return summary
        finally:
            if status == "FINISHED" or sys.exc_info()[0] is not None:
                self.tracker.finish(status)
            if self.started_ray:
                import ray

                ray.shutdown()


def _hp(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in ("variant", "run", "seed")}


def _pm(stat: dict[str, float] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{100 * stat['mean']:.2f} ± {100 * (stat.get('std') or 0.0):.2f}"


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and (sample) standard deviation over seeds of each final variant's metrics."""
    import statistics

    out: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        ok = [r for r in runs if r["variant"] == variant and r["status"] == "completed"]
        entry: dict[str, Any] = {"n": len(ok), "errored": sum(1 for r in runs if r["variant"] == variant and r["status"] == "errored")}
        keys = sorted({k for r in ok for k in r["metrics"] if k.startswith(("dev_", "test_"))})
        for key in keys:
            vals = [float(r["metrics"][key]) for r in ok if isinstance(r["metrics"].get(key), (int, float))]
            if vals:
                entry[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        out[str(variant)] = entry
    return out


# --------------------------------------------------------------------------------------------
# entry points


def run_search(cfg: DictConfig | dict[str, Any], echo: Echo = _echo) -> dict[str, Any]:
    """Validate `cfg`, connect Ray, create the run directory and run the nested search."""
    import logging

    _quiet_ray_env()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    plan = validate(cfg)
    started = connect_ray(plan)
    try:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        (plan.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plan.cfg)))
        return SearchDriver(plan, echo).run()
    finally:
        if started:
            import ray

            ray.shutdown()


def _known(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


_HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                           "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}


def compose_config(overrides: list[str]) -> DictConfig:
    """The composed config for `overrides`; hydra's errors become one-line `ConfigError`s."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    for ov in overrides:
        key, _, value = ov.partition("=")
        key = key.lstrip("+~")
        if key in ("task", "preset") and value not in _known(key):
            raise ConfigError(f"unknown {key} {value!r} (override {ov}); use one of {', '.join(_known(key))}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except DoktraError:
        raise
    except Exception as err:  # noqa: BLE001 - hydra/omegaconf errors: one line, never a traceback
        msg = _first_line(err)
        if msg.startswith("Could not override '"):
            key = msg.split("'")[1]
            raise ConfigError(
                f"unknown config key {key!r} (override {next((o for o in overrides if key in o), key)}); "
                "list the keys with `python -m doktra_tune.search --cfg job` or add a new one with +key=value"
            ) from err
        raise ConfigError(
            f"bad override ({msg}); check the key against `python -m doktra_tune.search --cfg job` "
            "(new keys need a leading +)"
        ) from err
    finally:
        GlobalHydra.instance().clear()


def _split_argv(argv: list[str]) -> tuple[list[str], bool]:
    """(overrides, has_flags) of a command line."""
    overrides: list[str] = []
    skip = False
    flags = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            flags = True
            skip = arg in _HYDRA_FLAGS_WITH_VALUE
            continue
        overrides.append(arg)
    return overrides, flags


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    """Hydra entry: run the search for the composed config."""
    try:
        run_search(cfg)
    except DoktraError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to resume", file=sys.stderr, flush=True)
        sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    """`python -m doktra_tune.search [overrides]`: pre-validate the overrides, then hand over to Hydra."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, _flags = _split_argv(argv)
    try:
        compose_config(overrides)
    except DoktraError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    sys.argv = [sys.argv[0], *argv]
    hydra_main()


if __name__ == "__main__":
    main()
