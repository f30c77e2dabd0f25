"""What a stage's Tune experiment left behind, as plain records: one `TrialRecord` per trial.

Pure functions over Tune's `ResultGrid` (or anything shaped like it) and its experiment-state
files, so they are unit-tested on fakes; plus what remains to run after an interruption.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from doktra_tune.metrics import SEARCH_METRIC, SHARED_METRIC
from doktra_tune.run_spec import RunSpec, trial_record
from doktra_tune.search_space import grid_points
from doktra_tune.trial_record import TrialRecord

# Tune result keys that are bookkeeping, not metrics
_METRIC_SKIP = ("config", "date", "hostname", "pid", "timestamp", "time_since_restore", "iterations_since_restore",
                "checkpoint_dir_name", "should_checkpoint", "done", "trial_id", "experiment_tag",
                "doktra_run", "gpu_ids")  # the trial run's params/tags (driver's MLflow), the GPUs it had


def clean(value: Any) -> Any:
    """`value` made JSON-safe: NaN/inf -> None, numpy scalars -> Python, keys -> str."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return clean(value.item())
        except (TypeError, ValueError):
            return str(value)
    return value


def error_line(err: BaseException) -> str:
    """`Type: message` of the exception a trial raised (unwrapping Ray's RayTaskError)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"[:500]


def experiment_trial_states(exp_path: Path) -> dict[str, str]:
    """Tune's last recorded status (TERMINATED, ERROR, RUNNING, ...) of every trial of an experiment,
    read through Tune's public `ExperimentAnalysis` (its `trials`)."""
    from ray.tune import ExperimentAnalysis

    return {str(trial.trial_id): str(trial.status) for trial in ExperimentAnalysis(str(exp_path)).trials}


def trial_index(trial_id: str, path: str) -> int:
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


def _metrics_only(result: dict[str, Any]) -> dict[str, Any]:
    return {k: clean(v) for k, v in result.items() if k not in _METRIC_SKIP and not k.startswith("config/")}


def _history(result: Any) -> list[dict[str, Any]]:
    df = result.metrics_dataframe
    return [_metrics_only(r) for r in df.to_dict("records")] if df is not None and len(df) else []


def _kept_checkpoint(result: Any, history: list[dict[str, Any]]) -> str | None:
    """The checkpoint Tune kept for the trial (the only one it keeps: its last, or its best dev F1)."""
    try:
        best = result.get_best_checkpoint("dev_f1", "max") if history else None
    except Exception:  # noqa: BLE001 - no checkpoint recorded
        best = None
    if best is None and result.checkpoint is not None:
        best = result.checkpoint
    return best.path if best is not None else None


def collect_trial(result: Any, max_t: int, pruned_ids: set[str], pruner_on: bool) -> tuple[int, TrialRecord]:
    """(creation order, record) of one Tune `Result`. A trial that ran fewer epochs than its own
    horizon (its `epochs` param, else `max_t`) under a pruner was pruned."""
    trial_id = str(result.metrics.get("trial_id") if result.metrics else "") or Path(result.path).name
    history = _history(result)
    raw_last = dict(result.metrics or {})
    last = history[-1] if history else _metrics_only(raw_last)
    epochs_run = int(last.get("training_iteration", len(history)) or 0) if last else 0
    kept_epoch, kept = (int(last.get("epoch") or epochs_run), last) if history else (0, {})
    checkpoint = _kept_checkpoint(result, history)
    if checkpoint is not None:
        meta_file = Path(checkpoint) / "doktra_meta.json"
        if meta_file.is_file():
            kept_epoch = int(json.loads(meta_file.read_text()).get("epoch", kept_epoch))
            kept = next((r for r in history if int(r.get("epoch") or 0) == kept_epoch), kept)
    params = {k: clean(v) for k, v in trial_record(result.config or {}).items()}
    horizon = int(params.get("epochs") or max_t)
    if result.error is not None:
        status = "errored"
    elif trial_id in pruned_ids or (pruner_on and epochs_run < horizon):
        status = "pruned"
    else:
        status = "completed"
    return trial_index(trial_id, result.path), TrialRecord(
        trial_id=trial_id, status=status, params=params, epochs_run=epochs_run,
        kept_epoch=kept_epoch, kept_metrics=kept, last_metrics=last, checkpoint=checkpoint,
        node_id=str(last.get("node_id", "")) if last else "",
        node_ip=str(raw_last.get("node_ip") or ""),
        gpu_ids=[str(g) for g in (raw_last.get("gpu_ids") or [])],
        error=error_line(result.error) if result.error is not None else "",
        curve={int(r["training_iteration"]): float(r.get(SEARCH_METRIC, r["dev_f1"])) for r in history
               if r.get("training_iteration") is not None and r.get("dev_f1") is not None},
        shared_epochs=sum(1 for r in history if r.get(SHARED_METRIC)),
    )


def collect_trials(results: Iterable[Any], max_t: int, pruned_ids: set[str], pruner_on: bool) -> list[TrialRecord]:
    """A `TrialRecord` per trial of a finished `ResultGrid`, in trial creation order."""
    records = [collect_trial(result, max_t, pruned_ids, pruner_on) for result in results]
    records.sort(key=lambda pair: (pair[0], pair[1].trial_id))
    return [record for _, record in records]


def remaining_grid_points(grid: dict[str, list], prior: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """The points of the full grid (`grid_points`, in search order) no finished trial covered."""
    seen = {tuple(r.params.get(k) for k in sorted(grid)) for r in prior}
    return [point for point in grid_points(grid) if tuple(point[k] for k in sorted(grid)) not in seen]


def remaining_runs(runs: Sequence[RunSpec], keys: Sequence[str], prior: Sequence[TrialRecord]) -> list[RunSpec]:
    """The explicit runs (identified by `keys`) no finished trial covered."""
    seen = {tuple(r.params.get(k) for k in keys) for r in prior}
    return [run for run in runs if run.key(keys) not in seen]
