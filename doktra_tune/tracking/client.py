"""MLflow writes that never stall training: `TrackingClient` sends each write to a run named by its
key tags (`RunKey`, get-or-create), waits a bounded time for a tracking server (seconds: the HTTP
timeout and retries are set short), and when the server does not answer puts the write in the
outbox (`doktra_tune.tracking.outbox`) and carries on; the queued writes are sent, in order, as soon
as the server answers again.

Local stores (sqlite, file) cannot go away; their only transient error is sqlite's lock contention
between parallel trial processes, which is retried.
"""

from __future__ import annotations

import functools
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from doktra_tune.errors import first_line
from doktra_tune.jsonable import jsonable
from doktra_tune.tracking.outbox import Outbox, RunKey

T = TypeVar("T")
PARENT_TAG = "mlflow.parentRunId"

# a tracking server that does not answer costs seconds, not MLflow's default minutes of retries
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
RETRY_AFTER_S = 15.0  # while the server is away, writes go to the outbox; a send is tried again after this
_BATCH = 100  # items per log_batch call (MLflow's limits are larger)
_PARAM_VALUE_MAX = 500


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _is_lock_error(err: BaseException) -> bool:
    text = str(err).lower()
    return "database is locked" in text or "database table is locked" in text


def is_outage(err: BaseException, uri: str) -> bool:
    """Whether `err` means the tracking server did not answer (as opposed to a refused request)."""
    if not is_remote(uri):
        return False
    if isinstance(err, (ConnectionError, TimeoutError, OSError)):
        return True
    text = str(err)
    markers = ("Max retries exceeded", "Connection refused", "Failed to establish", "timed out", "Read timed out",
               "RemoteDisconnected", "Connection aborted", "503", "502", "504")
    return isinstance(err, MlflowException) and any(m in text for m in markers)


def retry_locked(fn: Callable[..., T], *args: Any, attempts: int = 30, **kwargs: Any) -> T:
    """Call `fn`, retrying sqlite lock contention from parallel trial processes."""
    delay = 0.05
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - mlflow wraps sqlite errors in MlflowException
            if not _is_lock_error(err) or attempt == attempts - 1:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def param_text(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
    return text[:_PARAM_VALUE_MAX]


def dataset_input_entity(data: Mapping[str, Any]) -> DatasetInput:
    dataset = Dataset(name=data["name"], digest=data["digest"], source_type="local",
                      source=json.dumps({"uri": data["source"]}), schema=json.dumps(data.get("schema") or {}),
                      profile=json.dumps(data.get("profile") or {}))
    return DatasetInput(dataset=dataset, tags=[InputTag(key="mlflow.data.context", value=data["context"])])


def _filter(tags: Mapping[str, str]) -> str:
    def quote(value: str) -> str:
        return "'" + str(value).replace("'", "\\'") + "'"

    return " and ".join(f"tags.`{k}` = {quote(v)}" for k, v in tags.items())


def serialized(method: Callable[..., T]) -> Callable[..., T]:
    """One write at a time per client: the driver runs two Tuners at once (the final stage's
    teacher and student runs beside ABD), whose callbacks write from two threads."""

    @functools.wraps(method)
    def locked(self: TrackingClient, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class TrackingClient:
    """The MLflow client of one process: writes addressed by `RunKey`, bounded waits, an outbox."""

    def __init__(self, uri: str, outbox: Outbox | None = None, on_degraded: Callable[[str], None] | None = None) -> None:
        if is_remote(uri):
            for key, value in HTTP_SETTINGS.items():
                os.environ.setdefault(key, value)
        self.uri = uri
        self.mlflow = MlflowClient(tracking_uri=uri)
        self.outbox = outbox
        self.on_degraded = on_degraded
        self._ids: dict[str, str] = {}  # RunKey.ident -> run id
        self._steps: dict[str, set[tuple[str, int]]] = {}  # run id -> (metric, step) already on the run
        self._params: dict[str, set[str]] = {}  # run id -> param keys already on the run
        self._away_since: float | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ reads (no outbox)
    def find_run(self, experiment_id: str, tags: Mapping[str, str]) -> Any:
        """The earliest run of `experiment_id` carrying all `tags`, or None."""
        runs = retry_locked(self.mlflow.search_runs, [experiment_id], filter_string=_filter(tags), max_results=10,
                            order_by=["attributes.start_time ASC"])
        return runs[0] if runs else None

    def run_id(self, key: RunKey) -> str | None:
        """The id of `key`'s run when it is known (created or found), None while it waits in the outbox."""
        return self._ids.get(key.ident)

    @property
    def degraded(self) -> bool:
        return self._away_since is not None

    # ------------------------------------------------------------------ writes
    def open_run(self, key: RunKey, reopen: bool = True) -> None:
        """Get or create `key`'s run; with `reopen` a terminated run goes back to RUNNING."""
        self._write(key, "open", {"reopen": reopen})

    def log_metrics(self, key: RunKey, metrics: Mapping[str, float], step: int) -> None:
        """Metrics at `step`; a (metric, step) the run already has is not logged again."""
        now = int(time.time() * 1000)
        self._write(key, "log_metrics", {"metrics": {k: float(v) for k, v in metrics.items()}, "step": int(step),
                                         "timestamp": now})

    def log_params(self, key: RunKey, params: Mapping[str, Any]) -> None:
        """Params not yet on the run (MLflow params are immutable: a resumed run keeps its own)."""
        self._write(key, "log_params", {"params": {str(k): param_text(v) for k, v in params.items()}})

    def set_tags(self, key: RunKey, tags: Mapping[str, Any]) -> None:
        self._write(key, "set_tags", {"tags": {str(k): str(v) for k, v in tags.items()}})

    def log_dict(self, key: RunKey, data: Any, name: str) -> None:
        self._write(key, "log_dict", {"data": jsonable(data), "name": name})

    def log_artifact(self, key: RunKey, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._write(key, "log_artifact", {"local_path": str(local_path), "artifact_path": artifact_path})

    def log_table(self, key: RunKey, columns: Mapping[str, list[Any]], name: str) -> None:
        """A table artifact (`columns`: name -> values) the MLflow UI shows as a table."""
        self._write(key, "log_table", {"columns": jsonable(columns), "name": name})

    def log_inputs(self, key: RunKey, datasets: list[dict[str, Any]]) -> None:
        """Dataset inputs (`dataset_input(...)` dicts): the Dataset column of the runs list."""
        self._write(key, "log_inputs", {"datasets": datasets})

    def set_terminated(self, key: RunKey, status: str, only_if_running: bool = False) -> None:
        """End the run with `status` (a run already in that status keeps its end time); with
        `only_if_running`, a run that already ended is left as it is."""
        self._write(key, "terminate", {"status": status, "only_if_running": only_if_running})

    @serialized
    def flush(self, own_only: bool = True) -> int:
        """Send what waits in the outbox (this process's, or every process's); 0 if the server is away."""
        if self.outbox is None:
            return 0
        try:
            sent = self.outbox.replay(self._send, own_only=own_only)
        except Exception as err:  # noqa: BLE001 - still away: the writes stay queued
            if not is_outage(err, self.uri):
                raise
            self._away(err)
            return 0
        self._away_since = None
        return sent

    # ------------------------------------------------------------------ internals
    @serialized
    def _write(self, key: RunKey, op: str, args: dict[str, Any]) -> None:
        if self.outbox is not None and self._away_since is not None:
            if time.monotonic() - self._away_since >= RETRY_AFTER_S:
                self.flush(own_only=True)  # the server may be back: what waits goes first
            if self._away_since is not None:
                self.outbox.append(key, op, args)
                return
        try:
            self._send(key, op, args)
        except Exception as err:  # noqa: BLE001 - an outage is queued, anything else is a real error
            if self.outbox is None or not is_outage(err, self.uri):
                raise
            self._away(err)
            self.outbox.append(key, op, args)

    def _away(self, err: BaseException) -> None:
        first = self._away_since is None
        self._away_since = time.monotonic()
        if first and self.on_degraded is not None:
            self.on_degraded(first_line(err, 200))

    def _resolve(self, key: RunKey, reopen: bool = False) -> str:
        run_id = self._ids.get(key.ident)
        if run_id is not None and not reopen:
            return run_id
        run = self.find_run(key.experiment_id, key.key_tags)
        tags = {**key.tags, **key.key_tags}
        if key.parent is not None:
            tags[PARENT_TAG] = self._resolve(key.parent)
        if run is None:
            run = retry_locked(self.mlflow.create_run, key.experiment_id, tags=tags, run_name=key.name or None)
        else:
            if reopen and run.info.status != "RUNNING":
                retry_locked(self.mlflow.update_run, run.info.run_id, status="RUNNING")
            self._batch(run.info.run_id, tags=tags)
        self._ids[key.ident] = run.info.run_id
        return run.info.run_id

    def _batch(self, run_id: str, metrics: list[Metric] = (), params: list[Param] = (), tags: Mapping[str, str] = ()) -> None:
        items_tags = [RunTag(k, v) for k, v in dict(tags).items()]
        for start in range(0, max(len(metrics), len(params), len(items_tags)), _BATCH):
            retry_locked(self.mlflow.log_batch, run_id, metrics=list(metrics[start:start + _BATCH]),
                         params=list(params[start:start + _BATCH]), tags=items_tags[start:start + _BATCH])

    def _existing_steps(self, run_id: str) -> set[tuple[str, int]]:
        if run_id not in self._steps:
            run = retry_locked(self.mlflow.get_run, run_id)
            self._steps[run_id] = {(k, int(m.step)) for k in run.data.metrics
                                   for m in retry_locked(self.mlflow.get_metric_history, run_id, k)}
        return self._steps[run_id]

    def _send(self, key: RunKey, op: str, args: dict[str, Any]) -> None:
        if op == "open":
            self._resolve(key, reopen=bool(args["reopen"]))
            return
        run_id = self._resolve(key)
        if op == "log_metrics":
            seen = self._existing_steps(run_id)
            step = int(args["step"])
            fresh = [Metric(k, v, int(args["timestamp"]), step) for k, v in args["metrics"].items() if (k, step) not in seen]
            self._batch(run_id, metrics=fresh)
            seen.update((m.key, step) for m in fresh)
        elif op == "log_params":
            if run_id not in self._params:
                self._params[run_id] = set(retry_locked(self.mlflow.get_run, run_id).data.params)
            fresh = [Param(k, v) for k, v in args["params"].items() if k not in self._params[run_id]]
            self._batch(run_id, params=fresh)
            self._params[run_id].update(p.key for p in fresh)
        elif op == "set_tags":
            self._batch(run_id, tags=args["tags"])
        elif op == "log_dict":
            retry_locked(self.mlflow.log_dict, run_id, args["data"], args["name"])
        elif op == "log_artifact":
            retry_locked(self.mlflow.log_artifact, run_id, args["local_path"], args.get("artifact_path"))
        elif op == "log_table":
            retry_locked(self.mlflow.log_table, run_id, data=args["columns"], artifact_file=args["name"])
        elif op == "log_inputs":
            retry_locked(self.mlflow.log_inputs, run_id, datasets=[dataset_input_entity(d) for d in args["datasets"]])
        elif op == "terminate":
            status = retry_locked(self.mlflow.get_run, run_id).info.status
            if status == args["status"] or (args.get("only_if_running") and status != "RUNNING"):
                return
            retry_locked(self.mlflow.set_terminated, run_id, args["status"])
        else:
            raise ValueError(f"unknown tracking operation {op!r}")
