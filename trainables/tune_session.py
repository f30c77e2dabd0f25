"""What a trial says to Ray Tune and gets back from it: `report` (metrics + checkpoint, every
epoch) and `restored_checkpoint` (the checkpoint of a trial Tune resumes).

A trial process never opens the MLflow store: what its MLflow run records travels in its reports
(the per-epoch metrics; on its first report `RUN_INFO`, the run's params, tags and datasets) and in
the evaluation files it writes to shared storage (`trial_files_dir`), and the driver writes them
(`doktra_tune.search.trial_tracking`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune

from doktra_tune.metrics import SEARCH_METRIC, search_score
from doktra_tune.stages.checkpointing import TRAINING_STATE_FILE

Report = Callable[[dict[str, Any], Path | None], None]
RUN_INFO = "doktra_run"  # report key: JSON of the trial run's params, tags and datasets (first report)
GPU_IDS = "gpu_ids"  # report key: the GPU ids Ray gave the trial (empty on CPUs)
RestoredCheckpoint = Callable[[Path], Path | None]


def _node_id() -> str:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - not inside Ray
        return ""


def _gpu_ids() -> list[str]:
    try:
        return [str(gpu) for gpu in ray.get_gpu_ids()]
    except Exception:  # noqa: BLE001 - not inside Ray
        return []


def trial_id(fallback: str) -> str:
    """The Tune trial id of this process's trial (`fallback` outside Tune)."""
    try:
        return tune.get_context().get_trial_id() or fallback
    except Exception:  # noqa: BLE001 - not inside a Tune session
        return fallback


def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
    """`tune.report` of one epoch's metrics (plus the node and the GPUs it ran on; Tune adds
    `node_ip` and `hostname`) and, if any, its checkpoint."""
    payload: dict[str, Any] = dict(metrics)
    payload["node_id"] = _node_id()
    payload[GPU_IDS] = _gpu_ids()
    if checkpoint_dir is not None:
        tune.report(payload, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
    else:
        tune.report(payload)


def with_search_score(metrics: dict[str, float]) -> dict[str, float]:
    """`metrics` plus the searchers' objective (`SEARCH_METRIC`) when the metrics give one."""
    score = search_score(metrics)
    return {**metrics, SEARCH_METRIC: score} if score is not None else metrics


def restored_checkpoint(dest: Path) -> Path | None:
    """The checkpoint Tune hands a resumed trial, copied to `dest`, if it holds a training state."""
    try:
        checkpoint = tune.get_checkpoint()
    except Exception:  # noqa: BLE001 - not inside a Tune trial
        return None
    if checkpoint is None:
        return None
    path = Path(checkpoint.to_directory(str(dest)))
    return path if (path / TRAINING_STATE_FILE).is_file() else None
