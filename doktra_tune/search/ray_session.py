"""The one owner of the Ray session: the settings every Tuner runs with, connect once, shut down once.

`RAY_SETTINGS` are the settings measured in benchmarks/bench_ray_overhead.py (per-trial overhead
below 1 s on the 2-core box); the driver, the tests and the benchmarks all take them from here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import ray
import torch
from ray.tune.logger import JsonLoggerCallback

from doktra_tune.errors import ConfigError
from doktra_tune.search.schema import RayOptions, ResourceOptions

WORKER_SETUP_HOOK = "trainables.common.preload"  # imports torch/transformers when a worker starts


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
    * TUNE_MAX_PENDING_TRIALS_PG=1: no placement groups requested ahead for trials that cannot run.
    * TUNE_GLOBAL_CHECKPOINT_S is left at "auto" on purpose: a longer period measured no faster
      here, and Tune does not save the experiment state when a trial ends, so a long period could
      lose finished trials on `kill -9` before `Tuner.restore`.
    * ray.init: dashboard and usage stats off, worker logs not streamed to the driver.
    """

    env: dict[str, str] = field(default_factory=lambda: {
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
        "TUNE_MAX_PENDING_TRIALS_PG": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
        "RAY_TRAIN_V2_ENABLED": "0",
        "TOKENIZERS_PARALLELISM": "false",
    })

    def apply_env(self) -> None:
        """Set the environment variables (best before `import ray`; a user's own values win)."""
        for key, value in self.env.items():
            os.environ.setdefault(key, value)

    def init_kwargs(self, *, address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
        """`ray.init` keyword arguments: connect to `address`, else start a local Ray."""
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address:
            return {"address": address, **kwargs}
        return {
            **kwargs, "num_cpus": int(num_cpus or os.cpu_count() or 1), "include_dashboard": False,
            "runtime_env": {"worker_process_setup_hook": WORKER_SETUP_HOOK},
        }

    def tune_config_kwargs(self) -> dict[str, Any]:
        return {"reuse_actors": True}

    def run_config_kwargs(self, callbacks: list[Any] | tuple[Any, ...] = ()) -> dict[str, Any]:
        """`tune.RunConfig` keyword arguments; `callbacks` go before the JSON logger."""
        return {"verbose": 0, "callbacks": [*callbacks, JsonLoggerCallback()]}


RAY_SETTINGS = RaySettings()


@dataclass(frozen=True)
class Resources:
    per_trial: dict[str, float]  # Tune's per-trial resource request
    max_concurrent: int  # what the cluster's resources allow at once (capped by the config)
    torch_threads: int  # intra-op threads of one trial


class RaySession:
    """`with RaySession(options) as session:` connects Ray (a local one, or `options.address`) unless
    Ray is already running in this process, and shuts it down on exit only if it connected it."""

    def __init__(self, options: RayOptions, settings: RaySettings = RAY_SETTINGS) -> None:
        self.options = options
        self.settings = settings
        self.started = False

    def __enter__(self) -> RaySession:
        self.settings.apply_env()
        if ray.is_initialized():
            return self
        try:
            ray.init(**self.settings.init_kwargs(address=self.options.address, num_cpus=self.options.num_cpus))
        except (ConnectionError, TimeoutError, RuntimeError) as err:
            text = str(err).strip().splitlines()
            raise ConfigError(
                f"ray.address={self.options.address or 'local'} failed ({text[0] if text else type(err).__name__}); "
                "start a cluster with `ray start --head` or drop ray.address"
            ) from err
        self.started = True
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self.started:
            ray.shutdown()
            self.started = False

    @property
    def where(self) -> str:
        return f"on {self.options.address}" if self.options.address else "(local)"

    def resources(self, options: ResourceOptions) -> Resources:
        """Per-trial resources (1 GPU when torch sees one, else CPU only) and the concurrency they allow."""
        cpus = options.cpus_per_trial
        gpus = options.gpus_per_trial if torch.cuda.is_available() else 0.0
        total = ray.cluster_resources()
        limits = [int(total.get("CPU", 1) // cpus)]
        if gpus > 0:
            limits.append(int(total.get("GPU", 0) // gpus))
        concurrent = max(1, min(limits))
        if options.max_concurrent_trials:
            concurrent = min(concurrent, options.max_concurrent_trials)
        return Resources({"cpu": cpus, "gpu": gpus}, concurrent, max(1, int(cpus)))
