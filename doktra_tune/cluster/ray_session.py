"""The one owner of the Ray session: the settings every Tuner runs with, connect once, shut down once.

`RAY_SETTINGS` are the settings measured in benchmarks/bench_ray_overhead.py (per-trial overhead
below 1 s on the 2-core box); the driver, the tests and the benchmarks all take them from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

import psutil
import ray
from ray.tune.logger import JsonLoggerCallback
from ray.tune.search import ConcurrencyLimiter, Searcher

from doktra_tune.errors import ConfigError, first_line
from doktra_tune.plan.schema import RayOptions, ResourceOptions

# Trials never touch the Hugging Face Hub: the driver fetched every model before any trial
# (preflight.fetch_models); on a cluster the nodes share the cache (HF_HOME on shared storage).
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@dataclass(frozen=True)
class RaySettings:
    """Ray settings that cut the per-trial overhead of short trials.

    * reuse_actors: one trial actor runs trial after trial instead of a new process each time
      (a trial process keeps torch/transformers imported: ~8 s each).
    * TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1 + callbacks=[JsonLoggerCallback()]: of Tune's three
      default per-trial loggers only the JSON one is kept (its result.json backs
      `Result.metrics_dataframe`, the per-epoch history); no CSV, no TensorBoard.
      RAY_AIR_NEW_OUTPUT=0 + verbose=0: no console reporter work.
    * TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0: no warning each time
      `CheckpointConfig(num_to_keep=1)` forces an experiment snapshot (expected here).
    * TUNE_MAX_PENDING_TRIALS_PG is left to Tune ("auto"): a grid Tuner may ask for a placement
      group per trial ahead; Ray starts an actor only for those the resources fit. The setting
      before, 1, started the second slot's actor only after the first had booted (~7 s of imports):
      a short trial ended first, took the next trial into its reused actor, and the other actor
      booted for nothing, which Tune's cleanup then waited for (up to 5 s a Tuner; benchmarks/
      README.md, "Trial slots"). For a searcher of its own Tune's "auto" is 1 unless the searcher
      is wrapped in a `ConcurrencyLimiter`, so the final runs' `DependentRuns` gets one of
      `Resources.local_slots` on a local Ray (`limit_to_slots`; the runs beside ABD one slot fewer,
      so that the ABD search, on the way to the final distillations, always has one); the Optuna
      searchers (TPE, the pruners) keep 1.
    * No worker setup hook: a trial actor always starts a new worker process, so a hook that
      imports torch/transformers there only moves the trial's imports earlier, and it made every
      other task (the node check's probe) pay them too (~6 s).
    * TUNE_GLOBAL_CHECKPOINT_S is left at "auto" on purpose: a longer period measured no faster
      here, and Tune does not save the experiment state when a trial ends, so a long period could
      lose finished trials on `kill -9` before `Tuner.restore`.
    * ray.init: dashboard and usage stats off, worker logs not streamed to the driver.
    """

    env: dict[str, str] = field(default_factory=lambda: {
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
        "RAY_TRAIN_V2_ENABLED": "0",
        "TOKENIZERS_PARALLELISM": "false",
    })

    def apply_env(self) -> None:
        """Set the environment variables (best before `import ray`; a user's own values win)."""
        for key, value in self.env.items():
            os.environ.setdefault(key, value)

    def init_kwargs(self, *, address: str | None = None, num_cpus: int | None = None,
                    worker_env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """`ray.init` keyword arguments: connect to `address`, else start a local Ray; the workers get
        WORKER_ENV and `worker_env`."""
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING,
                                  "runtime_env": {"env_vars": {**WORKER_ENV, **(worker_env or {})}}}
        if address:
            return {"address": address, **kwargs}
        return {**kwargs, "num_cpus": int(num_cpus or os.cpu_count() or 1), "include_dashboard": False}

    def tune_config_kwargs(self) -> dict[str, Any]:
        return {"reuse_actors": True}

    def run_config_kwargs(self, callbacks: list[Any] | tuple[Any, ...] = ()) -> dict[str, Any]:
        """`tune.RunConfig` keyword arguments; `callbacks` go before the JSON logger."""
        return {"verbose": 0, "callbacks": [*callbacks, JsonLoggerCallback()]}


RAY_SETTINGS = RaySettings()


@dataclass(frozen=True)
class Resources:
    per_trial: dict[str, float]  # Tune's per-trial resource request
    max_concurrent: int | None  # resources.max_concurrent_trials; None: as many as the cluster's resources allow
    torch_threads: int  # intra-op threads of one trial
    local_slots: int | None = None  # on a local Ray: trials its resources run at once; None on a cluster

    def describe(self) -> str:
        """The concurrency in words, for the search's first lines."""
        cap = (f"at most {self.max_concurrent} concurrent trial(s)" if self.max_concurrent
               else "as many concurrent trials as the cluster's free resources allow (nodes that join are used)")
        return f"{cap}, each {self.per_trial}"


def slots(per_trial: Mapping[str, float], cluster: Mapping[str, float], cap: int | None = None) -> int:
    """How many trials of `per_trial` resources `cluster`'s run at once (at least 1; `cap` bounds it)."""
    fits = [int(float(cluster.get(name.upper(), 0) or 0) // need) for name, need in per_trial.items() if need > 0]
    count = max(1, min(fits, default=1))
    return min(count, cap) if cap else count


def limit_to_slots(searcher: Searcher, resources: Resources, *, leave: int = 0) -> Searcher:
    """`searcher` in a ConcurrencyLimiter of `resources.local_slots` less `leave` (at least 1) on a
    local Ray (as is, on a cluster): Tune then asks for that many placement groups ahead, so every
    free slot's trial starts at once (Tune's "auto" for a searcher of its own is 1; see
    `RaySettings`); `leave` keeps slots for another Tuner running beside this one."""
    if resources.local_slots is None:
        return searcher
    return ConcurrencyLimiter(searcher, max_concurrent=max(1, resources.local_slots - leave))


class SlotsBeside:
    """The slots of a local Ray that a Tuner running beside another leaves to it (`leave`) until
    `release` gives it them all (the other Tuner ended): `limit` wraps each of its searchers."""

    def __init__(self, resources: Resources, leave: int) -> None:
        self.resources = resources
        self.leave = leave
        self.limiters: list[ConcurrencyLimiter] = []

    def limit(self, searcher: Searcher) -> Searcher:
        limited = limit_to_slots(searcher, self.resources, leave=self.leave)
        if isinstance(limited, ConcurrencyLimiter):
            self.limiters.append(limited)
        return limited

    def release(self) -> None:
        self.leave = 0
        for limiter in self.limiters:  # read by Tune's thread at its next suggest
            limiter.set_max_concurrency(max(1, self.resources.local_slots or 1))


def trial_resources(options: ResourceOptions, cluster: Mapping[str, float]) -> Resources:
    """Per-trial resources from the cluster's, not the driver's, hardware (a CPU-only head or a
    laptop driver still gives every trial on a GPU node its own GPU): `gpus_per_trial` when the
    cluster has GPUs (`auto`: 1), none when it has none; an explicit `gpus_per_trial > 0` on a
    cluster without GPUs is a ConfigError. No concurrency cap is frozen at start unless
    `max_concurrent_trials` asks for one: Tune queues trials against the resources there are, so
    trials start on nodes that join mid-stage (and an autoscaler sees the demand)."""
    cpus = options.cpus_per_trial
    cluster_gpus = float(cluster.get("GPU", 0) or 0)
    if options.gpus_per_trial is None:  # auto
        gpus = 1.0 if cluster_gpus > 0 else 0.0
    elif options.gpus_per_trial > 0 and cluster_gpus <= 0:
        raise ConfigError(
            f"resources.gpus_per_trial={options.gpus_per_trial:g} but the Ray cluster has no GPUs "
            f"({float(cluster.get('CPU', 0) or 0):g} CPUs); set resources.gpus_per_trial=0 to train on CPUs, or add GPU "
            "nodes to the cluster"
        )
    else:
        gpus = float(options.gpus_per_trial)
    return Resources({"cpu": cpus, "gpu": gpus}, options.max_concurrent_trials, max(1, int(cpus)))


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...); none when `pid` is gone."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _same_process(pid: int, created: float) -> psutil.Process | None:
    """Process `pid` if it still runs and started at `created` (not another program that reused the pid)."""
    try:
        process = psutil.Process(pid)
        return process if process.create_time() == created else None
    except psutil.NoSuchProcess:
        return None


def record_local_ray(path: Path) -> None:
    """Write the processes this driver's local Ray runs (head, agents, workers) to `path`, with their
    create times, so a rerun after this driver is killed (`kill -9` leaves them running) can stop
    exactly those."""
    entries = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # ended since the walk
            entries[str(child.pid)] = child.create_time()
    path.write_text(json.dumps(entries))


def stop_recorded_ray(path: Path, grace_s: float = 3.0) -> int:
    """Stop the processes `record_local_ray` wrote that still run (same pid, same create time: never
    another program that reused a pid); SIGTERM, then SIGKILL after `grace_s`; returns how many."""
    if not path.is_file():
        return 0
    try:
        recorded = {int(pid): created for pid, created in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return 0
    alive = [process for pid, created in recorded.items() if (process := _same_process(pid, created)) is not None]
    stopped = len(alive)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in alive:
            with contextlib.suppress(psutil.Error):  # ended, or not ours to signal
                process.send_signal(sig)
        _, alive = psutil.wait_procs(alive, timeout=grace_s)
        if not alive:
            break
    path.unlink(missing_ok=True)
    return stopped


class RaySession:
    """`with RaySession(options) as session:` connects Ray (a local one, or `options.address`) unless
    Ray is already running in this process, and shuts it down on exit only if it connected it."""

    def __init__(self, options: RayOptions, settings: RaySettings = RAY_SETTINGS,
                 worker_env: Mapping[str, str] | None = None) -> None:
        self.options = options
        self.settings = settings
        self.worker_env = dict(worker_env or {})  # e.g. the train.cpu_kernels pin
        self.started = False
        self.record_path: Path | None = None

    def __enter__(self) -> RaySession:
        self.settings.apply_env()
        if ray.is_initialized():
            if self.worker_env:
                raise ConfigError(
                    f"Ray is already running in this process, so its workers cannot get {sorted(self.worker_env)} "
                    "(train.cpu_kernels); call ray.shutdown() first or set train.cpu_kernels=native"
                )
            return self
        address = self.options.address
        if address == "auto":  # the cluster on this machine, found as the preflight found it
            from doktra_tune.ray_compat import (  # private Ray names
                enable_token_auth_as_auto_does,
                local_cluster_addresses,
            )

            address = os.environ.get("RAY_ADDRESS") or next(iter(local_cluster_addresses()), "auto")
            enable_token_auth_as_auto_does()  # `ray start` clusters use token auth by default
        try:
            ray.init(**self.settings.init_kwargs(address=address, num_cpus=self.options.num_cpus,
                                                 worker_env=self.worker_env))
        except (ConnectionError, TimeoutError, RuntimeError) as err:
            raise ConfigError(
                f"ray.address={self.options.address or 'local'} failed ({first_line(err)}); "
                "start a cluster with `ray start --head` or drop ray.address"
            ) from err
        self.started = True
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self.started:
            ray.shutdown()
            self.started = False
            if self.record_path is not None:
                self.record_path.unlink(missing_ok=True)  # shut down cleanly: nothing left to stop

    def record(self, path: Path) -> None:
        """Keep the list of the local Ray processes this session started (see `stop_recorded_ray`)."""
        if self.started and not self.options.address:
            self.record_path = path
            record_local_ray(path)

    @property
    def where(self) -> str:
        return f"on {self.options.address}" if self.options.address else "(local)"

    def resources(self, options: ResourceOptions) -> Resources:
        """Per-trial resources from the connected cluster (`trial_resources`); on a local Ray, with
        the number of trials it runs at once (`local_slots`)."""
        cluster = ray.cluster_resources()
        resources = trial_resources(options, cluster)
        if self.options.address:
            return resources
        return dataclasses.replace(resources, local_slots=slots(resources.per_trial, cluster, resources.max_concurrent))
