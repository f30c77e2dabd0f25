"""MLflow tracking for a search: search run -> stage runs -> trial/seed runs (docs/DESIGN.md).

Everything goes through MLflow's own client API (`mlflow.tracking.MlflowClient`: `create_run`,
`search_runs`, `log_batch`, `log_artifact`, `log_dict`, `set_terminated`). Ray's
`ray.air.integrations.mlflow.setup_mlflow` / `MLflowLoggerCallback` are not used because both
always *create* a new run (setup_mlflow: `mlflow.start_run` under a fresh name; the callback keeps
its trial->run map in driver memory), so a resumed search or a restarted trial would get a second
run. Here every run is get-or-create by tags (`doktra.level`, `doktra.stage`, `doktra.search_id`,
`ray.trial_id`, `mlflow.parentRunId`), which makes resume idempotent, and the trial run is opened
inside the trial process so per-epoch metrics and artifacts (reliability diagrams, confusion
matrices) are logged where they are produced.

Default store: `sqlite:///<run_dir>/mlflow.db` with artifacts in `<run_dir>/mlartifacts`.
Parallel trial processes write the same sqlite file; MLflow's SQLAlchemy store serialises writes
through sqlite's file lock, and every client call here retries on "database is locked".
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from doktra_tune.errors import ConfigError

LEVEL = "doktra.level"
STAGE = "doktra.stage"
TASK = "doktra.task"
SEARCH_ID = "doktra.search_id"
STATUS = "doktra.status"
TRIAL_ID = "ray.trial_id"
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"

OUTCOME_TO_RUN_STATUS = {"completed": "FINISHED", "pruned": "KILLED", "errored": "FAILED"}
SERVER_FIX = (
    "start it with `mlflow server --host 127.0.0.1 --port 5000` or drop the override to use "
    "the embedded sqlite store"
)
_PARAM_VALUE_MAX = 500  # characters kept of a param value (MLflow's own limit is larger)

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# URIs


def default_tracking_uri(run_dir: Path | str) -> str:
    """The embedded default store: `sqlite:///<absolute run_dir>/mlflow.db`."""
    return f"sqlite:///{Path(run_dir).expanduser().resolve()}/mlflow.db"


def _sqlite_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///") :])


def _is_local(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def _http_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (user's URI)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_tracking_uri(uri: str, timeout: float = 3.0) -> None:
    """Fail fast (before any training) when the tracking store cannot be used.

    http(s): GET `<uri>/health`, then `<uri>/api/2.0/mlflow/experiments/search`, each with a short
    timeout; sqlite / file: the store's directory must be writable (created later if missing).
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(f"mlflow.tracking_uri is empty; {SERVER_FIX}")
    uri = uri.strip()
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        if _http_ok(f"{base}/health", timeout) or _http_ok(
            f"{base}/api/2.0/mlflow/experiments/search?max_results=1", timeout
        ):
            return
        raise ConfigError(
            f"MLflow tracking server mlflow.tracking_uri={uri} is unreachable; {SERVER_FIX}"
        )
    if uri.startswith("sqlite:"):
        if not uri.startswith("sqlite:///") or uri == "sqlite:///":
            raise ConfigError(
                f"mlflow.tracking_uri={uri} is not a sqlite file URI; use sqlite:////abs/path/mlflow.db "
                "or drop the override to use the embedded sqlite store"
            )
        directory = _nearest_existing(_sqlite_path(uri).parent)
    elif uri.startswith("file:"):
        directory = _nearest_existing(Path(urllib.parse.urlparse(uri).path or "/"))
    elif "://" not in uri:
        directory = _nearest_existing(Path(uri).expanduser().resolve())
    else:
        return  # other MLflow schemes (databricks, postgresql, ...): SearchTracker's first call checks
    if not os.access(directory, os.W_OK):
        raise ConfigError(
            f"mlflow.tracking_uri={uri}: directory {directory} is not writable; "
            "choose a writable run directory or drop the override to use the embedded sqlite store"
        )


# --------------------------------------------------------------------------------------------
# retries and small helpers


def _is_lock_error(err: BaseException) -> bool:
    text = str(err).lower()
    return "database is locked" in text or "database table is locked" in text


def _retry(fn: Callable[..., T], *args: Any, attempts: int = 30, **kwargs: Any) -> T:
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


def _client(uri: str):  # -> MlflowClient
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys (`data.task`)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _param_str(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
    return text[:_PARAM_VALUE_MAX]


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def _filter(tags: Mapping[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())


def _find_run(client, experiment_id: str, tags: Mapping[str, str]):
    runs = _retry(
        client.search_runs,
        [experiment_id],
        filter_string=_filter(tags),
        max_results=10,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0] if runs else None


def _get_or_create_run(
    client,
    experiment_id: str,
    key_tags: Mapping[str, str],
    tags: Mapping[str, str],
    name: str,
    reopen: bool = True,
) -> tuple[str, str]:
    """(run id, status) of the earliest run carrying all `key_tags`, created if absent; with
    `reopen` a terminated run goes back to RUNNING (a resumed search / restarted trial)."""
    run = _find_run(client, experiment_id, key_tags)
    all_tags = {**{k: str(v) for k, v in tags.items()}, **{k: str(v) for k, v in key_tags.items()}}
    if run is None:
        run = _retry(client.create_run, experiment_id, tags=all_tags, run_name=name)
        return run.info.run_id, "RUNNING"
    status = run.info.status
    if reopen and status != "RUNNING":
        _retry(client.update_run, run.info.run_id, status="RUNNING")
        status = "RUNNING"
    _set_tags(client, run.info.run_id, all_tags)
    return run.info.run_id, status


def _set_tags(client, run_id: str, tags: Mapping[str, Any]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(str(k), str(v)) for k, v in tags.items()]
    for start in range(0, len(items), 100):
        _retry(client.log_batch, run_id, tags=items[start : start + 100])


def _log_new_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params not yet on the run (MLflow params are immutable; a resumed run keeps its own)."""
    from mlflow.entities import Param

    existing = _retry(client.get_run, run_id).data.params
    items = [
        Param(str(k), _param_str(v)) for k, v in flatten(params).items() if str(k) not in existing
    ]
    for start in range(0, len(items), 100):
        _retry(client.log_batch, run_id, params=items[start : start + 100])


# --------------------------------------------------------------------------------------------
# the driver side


class SearchTracker:
    """The search run and its stage runs in experiment `doktra-<task>` (get-or-create by tags)."""

    def __init__(
        self,
        tracking_uri: str,
        task: str,
        search_id: str,
        resolved_config: dict,
        run_dir: Path,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.task = task
        self.search_id = search_id
        self.run_dir = Path(run_dir)
        self.experiment_name = f"doktra-{task}"
        if tracking_uri.startswith("sqlite:///"):
            _sqlite_path(tracking_uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = _client(tracking_uri)
            self.experiment_id = self._experiment_id()
            self.search_run_id, _ = _get_or_create_run(
                self.client,
                self.experiment_id,
                {LEVEL: "search", SEARCH_ID: search_id},
                {TASK: task},
                name=f"search-{search_id}",
            )
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - one line for the user, not a library traceback
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"MLflow tracking store mlflow.tracking_uri={tracking_uri} failed ({first[:200]}); "
                f"{SERVER_FIX}"
            ) from err
        _log_new_params(self.client, self.search_run_id, resolved_config)
        _retry(self.client.log_dict, self.search_run_id, _jsonable(resolved_config), "config.yaml")
        self._stage_runs: dict[str, str] = {}

    def _experiment_id(self) -> str:
        experiment = _retry(self.client.get_experiment_by_name, self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if _is_local(self.tracking_uri):
            store_dir = (
                _sqlite_path(self.tracking_uri).parent
                if self.tracking_uri.startswith("sqlite:///")
                else self.run_dir
            )
            location = (store_dir.resolve() / "mlartifacts").as_uri()
        try:
            return _retry(
                self.client.create_experiment,
                self.experiment_name,
                artifact_location=location,
                # the MLflow UI opens a model-training experiment on its runs list
                tags={"mlflow.experimentKind": "custom_model_development"},
            )
        except Exception:  # noqa: BLE001 - created concurrently by another process
            experiment = _retry(self.client.get_experiment_by_name, self.experiment_name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _base_tags(self, stage: str) -> dict[str, str]:
        return {TASK: self.task, SEARCH_ID: self.search_id, STAGE: stage}

    def stage_run_id(self, stage: str) -> str:
        """The stage's run under the search run (created on first use, reused on resume)."""
        if stage not in self._stage_runs:
            self._stage_runs[stage], _ = _get_or_create_run(
                self.client,
                self.experiment_id,
                {LEVEL: "stage", SEARCH_ID: self.search_id, STAGE: stage, PARENT: self.search_run_id},
                {TASK: self.task},
                name=stage,
            )
        return self._stage_runs[stage]

    def trial_tracking(self, stage: str, tags: dict[str, str] | None = None) -> dict:
        """Picklable handle a trainable passes to `trial_run` (one per stage; Ray ships it)."""
        return {
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.stage_run_id(stage),
            "tags": {
                LEVEL: "trial",
                **self._base_tags(stage),
                **{k: str(v) for k, v in (tags or {}).items()},
            },
        }

    def record_outcomes(self, stage: str, outcomes: dict[str, str]) -> None:
        """Ray's verdict per trial id: sets `doktra.status` and terminates the trial run
        (completed -> FINISHED, pruned -> KILLED, errored -> FAILED). A trial that died before
        opening its run gets an (empty) run so it stays visible."""
        parent = self.stage_run_id(stage)
        for trial_id, outcome in outcomes.items():
            if outcome not in OUTCOME_TO_RUN_STATUS:
                raise ConfigError(
                    f"unknown trial outcome {outcome!r} for trial {trial_id}; "
                    f"use one of {sorted(OUTCOME_TO_RUN_STATUS)}"
                )
            run_id, status = _get_or_create_run(
                self.client,
                self.experiment_id,
                {TRIAL_ID: trial_id, STAGE: stage, SEARCH_ID: self.search_id, PARENT: parent},
                {LEVEL: "trial", TASK: self.task, STATUS: outcome},
                name=f"{stage}-{trial_id}",
                reopen=False,
            )
            if status != OUTCOME_TO_RUN_STATUS[outcome]:  # keep the end time of a finished run
                _retry(self.client.set_terminated, run_id, OUTCOME_TO_RUN_STATUS[outcome])

    def log_stage_summary(
        self, stage: str, winner: dict, artifacts: list[Path] | tuple[Path, ...] = ()
    ) -> None:
        """The stage's winner as params `winner.<key>` (+ `winner.json`), extra artifacts, and
        the stage run marked FINISHED."""
        run_id = self.stage_run_id(stage)
        _log_new_params(self.client, run_id, {f"winner.{k}": v for k, v in flatten(winner).items()})
        _retry(self.client.log_dict, run_id, _jsonable(winner), "winner.json")
        for path in artifacts:
            _retry(self.client.log_artifact, run_id, str(path))
        _retry(self.client.set_terminated, run_id, "FINISHED")

    def finish(self, status: str = "FINISHED") -> None:
        """Terminate the search run and any stage run still RUNNING with `status`."""
        for run_id in self._stage_runs.values():
            if _retry(self.client.get_run, run_id).info.status == "RUNNING":
                _retry(self.client.set_terminated, run_id, status)
        _retry(self.client.set_terminated, self.search_run_id, status)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------------------------
# the trial side


class TrialLogger:
    """Logs one trial's per-epoch metrics, artifacts and tags to its MLflow run."""

    def __init__(self, client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._logged: set[tuple[str, int]] = set()
        run = _retry(client.get_run, run_id)
        for key in run.data.metrics:  # a reopened run: never log the same (metric, step) twice
            for metric in _retry(client.get_metric_history, run_id, key):
                self._logged.add((key, int(metric.step)))

    def log_epoch(self, metrics: Mapping[str, Any], step: int) -> None:
        """Numeric metrics at `step` (= epoch); (key, step) pairs already on the run are skipped."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                try:
                    value = float(value)  # numpy / torch scalars
                except (TypeError, ValueError):
                    continue
            if (key, int(step)) in self._logged:
                continue
            items.append(Metric(str(key), float(value), now, int(step)))
            self._logged.add((str(key), int(step)))
        for start in range(0, len(items), 1000):
            _retry(self.client.log_batch, self.run_id, metrics=items[start : start + 1000])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        _retry(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_dict(self, d: dict, name: str) -> None:
        _retry(self.client.log_dict, self.run_id, _jsonable(d), name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        _set_tags(self.client, self.run_id, tags)


class NoopTrialLogger(TrialLogger):
    """`trial_run(None, ...)`: tracking disabled, every call does nothing."""

    def __init__(self) -> None:  # noqa: D107 - no client, no run
        self.client = None
        self.run_id = ""

    def log_epoch(self, metrics: Mapping[str, Any], step: int) -> None:
        return None

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        return None

    def log_dict(self, d: dict, name: str) -> None:
        return None

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        return None


def _ray_trial_id() -> str | None:
    try:
        import ray.tune

        return ray.tune.get_context().get_trial_id()
    except Exception:  # noqa: BLE001 - not inside a Tune session
        return None


def _run_name(stage: str, tags: Mapping[str, str], trial_id: str) -> str:
    parts = [stage]
    if tags.get("doktra.variant"):
        parts.append(str(tags["doktra.variant"]))
    if tags.get("doktra.seed") not in (None, ""):
        parts.append(f"seed{tags['doktra.seed']}")
    parts.append(trial_id)
    return "-".join(parts)


@contextlib.contextmanager
def trial_run(
    tracking: dict | None, params: dict, tags: dict
) -> Iterator[TrialLogger]:
    """Open (get-or-create) this trial's run under its stage run and yield its logger.

    The run is keyed by `ray.trial_id` (from `tags`, else Ray's trial context, else a fresh id)
    + stage + search id + parent, so a resumed/restarted trial reuses its run. Params: every
    hyperparameter, flattened. Normal exit: `doktra.status=completed`, FINISHED (the driver's
    `record_outcomes` has the last word, e.g. pruned). Exception: `doktra.status=errored`,
    FAILED, re-raised. `tracking=None` yields a no-op logger.
    """
    if tracking is None:
        yield NoopTrialLogger()
        return
    all_tags = {**tracking.get("tags", {}), **{k: str(v) for k, v in tags.items()}}
    trial_id = all_tags.get(TRIAL_ID) or _ray_trial_id() or uuid.uuid4().hex[:10]
    all_tags[TRIAL_ID] = trial_id
    stage = all_tags.get(STAGE, "")
    key = {
        TRIAL_ID: trial_id,
        STAGE: stage,
        SEARCH_ID: all_tags.get(SEARCH_ID, ""),
        PARENT: tracking["parent_run_id"],
    }
    client = _client(tracking["tracking_uri"])
    run_id, _ = _get_or_create_run(
        client,
        tracking["experiment_id"],
        key,
        {k: v for k, v in all_tags.items() if k not in key} | {STATUS: "running"},
        name=_run_name(stage, all_tags, trial_id),
    )
    _log_new_params(client, run_id, params)
    logger = TrialLogger(client, run_id)
    try:
        yield logger
    except Exception:
        _set_tags(client, run_id, {STATUS: "errored"})
        _retry(client.set_terminated, run_id, "FAILED")
        raise
    except BaseException:  # KeyboardInterrupt / SystemExit: stopped, not failed
        _retry(client.set_terminated, run_id, "KILLED")
        raise
    _set_tags(client, run_id, {STATUS: "completed"})
    _retry(client.set_terminated, run_id, "FINISHED")
