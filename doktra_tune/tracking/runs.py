"""MLflow tracking for a search: search run -> stage runs -> trial/seed runs (docs/DESIGN.md).

Everything goes through MLflow's own client API (`MlflowClient`: `create_run`, `search_runs`,
`log_batch`, `log_artifact`, `log_dict`, `log_inputs`, `set_terminated`), wrapped by
`TrackingClient`. Ray's `setup_mlflow` / `MLflowLoggerCallback` are not used because both always
*create* a new run, so a resumed search or a restarted trial would get a second one. Here every run
is named by its key tags (`RunKey`: `doktra.level`, `doktra.stage`, `doktra.search_id`,
`ray.trial_id`; get-or-create), which makes resume idempotent and lets a write be queued before its
run exists. The driver is the only writer: no trial process opens the store (on a cluster, SQLite
over a network file system is unsafe and a server needs no more clients than one); the trials'
runs are written from Tune's events (`doktra_tune.tracking.trial_writer`,
`doktra_tune.search.trial_tracking`).

A tracking server that goes away mid-search never stops training: writes wait seconds, then go to
`<run_dir>/tracking_outbox/` and are sent when it answers again (the driver's next write after
`RETRY_AFTER_S`, its flush after each stage, or at the latest the next run of the same command);
the driver says once that tracking is degraded.

Default store: `sqlite:///<run_dir>/mlflow.db` with artifacts in `<run_dir>/mlartifacts`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

from doktra_tune.errors import ConfigError, first_line
from doktra_tune.jsonable import jsonable
from doktra_tune.tracking.client import (
    TrackingClient,
    is_remote,
    retry_locked,
)
from doktra_tune.tracking.outbox import OUTBOX_DIR, Outbox, RunKey
from doktra_tune.tracking.relocate import relocate_artifacts
from doktra_tune.tracking.uris import (
    SERVER_FIX,
    default_tracking_uri,
    is_local,
    sqlite_path,
)
from search_spaces import STAGES

log = logging.getLogger(__name__)

LEVEL = "doktra.level"
STAGE = "doktra.stage"
TASK = "doktra.task"
SEARCH_ID = "doktra.search_id"
STATUS = "doktra.status"
TRIAL_ID = "ray.trial_id"

OUTCOME_TO_RUN_STATUS = {"completed": "FINISHED", "pruned": "KILLED", "errored": "FAILED", "cancelled": "KILLED"}
STEP_KEY = "epoch"  # the step of every per-epoch metric; not logged as a metric of its own
LEAD_METRICS = ("dev_f1", "dev_ece", "dev_lat")  # logged first: what MLflow's views show first


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


# --------------------------------------------------------------------------------------------
# the driver side


class SearchTracker:
    """The search run and its stage runs in experiment `doktra-<task>` (get-or-create by tags)."""

    def __init__(
        self, tracking_uri: str, task: str, search_id: str, resolved_config: dict, run_dir: Path,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.task = task
        self.search_id = search_id
        self.run_dir = Path(run_dir)
        self.experiment_name = f"doktra-{task}"
        self._degraded_said = False
        # Writes wait on disk only while an http(s) server is away; a local store cannot go away.
        self.outbox: Outbox | None = Outbox(self.run_dir / OUTBOX_DIR) if is_remote(tracking_uri) else None
        if tracking_uri.startswith("sqlite:///"):
            sqlite_path(tracking_uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            if tracking_uri == default_tracking_uri(self.run_dir):  # the run directory's own store, maybe moved
                relocate_artifacts(sqlite_path(tracking_uri))
            self.client = TrackingClient(tracking_uri, self.outbox, on_degraded=self._say_degraded)
            self.experiment_id = self._experiment_id()
            self.search_key = RunKey(self.experiment_id, {LEVEL: "search", SEARCH_ID: search_id}, {TASK: task},
                                     name=f"search-{search_id}")
            self.client.open_run(self.search_key)
            self.search_run_id = self.client.run_id(self.search_key)
            sent = self.client.flush(own_only=False)  # writes an earlier run of this search could not send
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - one line for the user, not a library traceback
            raise ConfigError(
                f"MLflow tracking store mlflow.tracking_uri={tracking_uri} failed ({first_line(err, 200)}); "
                f"{SERVER_FIX}"
            ) from err
        if sent:
            log.info(f"[mlflow] sent {sent} tracking write(s) an earlier run of this search had queued")
        self.closed_stale = self._close_stale_runs()
        self.client.log_params(self.search_key, flatten(resolved_config))
        self.client.log_dict(self.search_key, jsonable(resolved_config), "config.yaml")

    def _experiment_id(self) -> str:
        client = self.client.mlflow
        experiment = retry_locked(client.get_experiment_by_name, self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if is_local(self.tracking_uri):
            store_dir = (sqlite_path(self.tracking_uri).parent if self.tracking_uri.startswith("sqlite:///")
                         else self.run_dir)
            location = (store_dir.resolve() / "mlartifacts").as_uri()
        try:
            return retry_locked(
                client.create_experiment, self.experiment_name, artifact_location=location,
                # the MLflow UI opens a model-training experiment on its runs list
                tags={"mlflow.experimentKind": "custom_model_development"},
            )
        except Exception:  # noqa: BLE001 - created concurrently by another process
            experiment = retry_locked(client.get_experiment_by_name, self.experiment_name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _close_stale_runs(self) -> int:
        """Runs of this search left RUNNING by a driver that was killed: marked KILLED (and
        `doktra.status=interrupted` for trials) before the rerun starts. Returns how many."""
        flt = f"tags.`{SEARCH_ID}` = '{self.search_id}' and attributes.status = 'RUNNING'"
        stale = retry_locked(self.client.mlflow.search_runs, [self.experiment_id], filter_string=flt, max_results=5000)
        closed = 0
        for run in stale:
            if run.info.run_id == self.search_run_id:
                continue
            if run.data.tags.get(LEVEL) == "trial":
                retry_locked(self.client.mlflow.set_tag, run.info.run_id, STATUS, "interrupted")
            retry_locked(self.client.mlflow.set_terminated, run.info.run_id, "KILLED")
            closed += 1
        if closed:
            log.info(f"[mlflow] {closed} run(s) left RUNNING by an interrupted run of this search marked KILLED")
        return closed

    def _say_degraded(self, reason: str) -> None:
        if self._degraded_said:
            return
        self._degraded_said = True
        log.warning(
            f"[mlflow] tracking server {self.tracking_uri} is not answering ({reason}); training goes on, "
            f"its results are kept in {self.outbox_dir} and sent when the server answers again "
            "(at the latest by the next run of this command)"
        )

    @property
    def outbox_dir(self) -> Path:
        """Where writes wait while the tracking server is away."""
        return self.run_dir / OUTBOX_DIR

    def stage_key(self, stage: str) -> RunKey:
        return RunKey(self.experiment_id, {LEVEL: "stage", SEARCH_ID: self.search_id, STAGE: stage}, {TASK: self.task},
                      name=stage, parent=self.search_key)

    def stage_run_id(self, stage: str) -> str | None:
        """The stage's run id (None while the server is away and the run waits in the outbox)."""
        key = self.stage_key(stage)
        self.client.open_run(key, reopen=False)
        return self.client.run_id(key)

    def trial_key(self, stage: str, trial_id: str, tags: Mapping[str, str] | None = None, name: str = "") -> RunKey:
        return RunKey(self.experiment_id, {TRIAL_ID: trial_id, STAGE: stage, SEARCH_ID: self.search_id},
                      {LEVEL: "trial", TASK: self.task, **(tags or {})}, name=name or f"{stage}-{trial_id}",
                      parent=self.stage_key(stage))

    def trial_tracking(self, stage: str, tags: dict[str, str] | None = None) -> dict:
        """The picklable handle of `stage`'s trials (one per stage; Ray ships it to every trial):
        the stage name, the tags every trial run gets, and where on shared storage a trial writes
        its evaluation files (`<run_dir>/trials/<stage>/<trial id>/`) for the driver to log. It holds
        no tracking URI: trials never open the store. The stage run is opened here, once."""
        self.client.open_run(self.stage_key(stage), reopen=True)
        return {
            "stage": stage,
            "files_dir": str(self.trial_files_dir(stage)),
            "tags": {LEVEL: "trial", TASK: self.task, SEARCH_ID: self.search_id, STAGE: stage,
                     **{k: str(v) for k, v in (tags or {}).items()}},
        }

    def trial_files_dir(self, stage: str) -> Path:
        """Where the trials of `stage` write their evaluation files (shared storage: the run directory)."""
        return self.run_dir / "trials" / stage

    def record_outcomes(self, stage: str, outcomes: dict[str, str]) -> None:
        """Ray's verdict per trial id: sets `doktra.status` and terminates the trial run
        (completed -> FINISHED, pruned or cancelled -> KILLED, errored -> FAILED). A trial that died before
        opening its run gets an (empty) run so it stays visible."""
        for trial_id, outcome in outcomes.items():
            if outcome not in OUTCOME_TO_RUN_STATUS:
                raise ConfigError(
                    f"unknown trial outcome {outcome!r} for trial {trial_id}; use one of {sorted(OUTCOME_TO_RUN_STATUS)}"
                )
            key = self.trial_key(stage, trial_id)
            self.client.open_run(key, reopen=False)
            self.client.set_tags(key, {STATUS: outcome})
            self.client.set_terminated(key, OUTCOME_TO_RUN_STATUS[outcome])

    def log_stage_summary(self, stage: str, winner: dict, artifacts: list[Path] | tuple[Path, ...] = ()) -> None:
        """The stage's winner as params `winner.<key>` and tags `doktra.winner.<key>` (+ `winner.json`),
        extra artifacts, and the stage run marked FINISHED."""
        key = self.stage_key(stage)
        flat = flatten(winner)
        self.client.log_params(key, {f"winner.{k}": v for k, v in flat.items()})
        self.client.set_tags(key, {f"doktra.winner.{k}": v for k, v in flat.items()})
        self.client.log_dict(key, jsonable(winner), "winner.json")
        for path in artifacts:
            self.client.log_artifact(key, path)
        self.client.set_terminated(key, "FINISHED")

    def log_leaderboard(self, stage: str, rows: list[dict[str, Any]], csv_path: Path | None = None) -> None:
        """Every trial of the stage (hyperparameters, status, epochs, dev F1/ECE of its model) as the
        stage run's `leaderboard.json` table (and a CSV artifact)."""
        key = self.stage_key(stage)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        self.client.log_table(key, {c: [row.get(c) for row in rows] for c in columns}, "leaderboard.json")
        if csv_path is not None:
            self.client.log_artifact(key, csv_path)

    def finish(self, status: str = "FINISHED") -> int:
        """Terminate the search run and any stage run still RUNNING with `status`; send what waits
        in the outbox. Returns the number of writes still queued (the server is away)."""
        for stage in (*STAGES, "abd_trunk", "final"):
            key = self.stage_key(stage)
            if self.client.run_id(key) is not None:  # opened by this driver
                self.client.set_terminated(key, status, only_if_running=True)
        self.client.set_terminated(self.search_key, status)
        self.client.flush(own_only=False)
        return sum(1 for _ in self.outbox.entries()) if self.outbox is not None else 0


# --------------------------------------------------------------------------------------------
# the trials' runs, written by the driver


class TrialLogger:
    """Logs one trial's per-epoch metrics, artifacts, tags and datasets to its MLflow run."""

    def __init__(self, client: TrackingClient | None, key: RunKey | None) -> None:
        self.client = client
        self.key = key

    def log_epoch(self, metrics: Mapping[str, Any], step: int) -> None:
        """Numeric metrics at `step` (= epoch; `epoch` itself is the step, not a metric); a
        (metric, step) already on the run is skipped."""
        if self.client is None or self.key is None:
            return
        values: dict[str, float] = {}
        # MLflow lists a run's metrics in the order they were first logged, and its compare view
        # plots the first one: dev F1 / ECE / L_AT go first
        lead = {name: metrics[name] for name in LEAD_METRICS if name in metrics}
        for name, value in {**lead, **metrics}.items():
            if name == STEP_KEY or isinstance(value, (bool, str, list, tuple, dict)):
                continue
            try:
                values[str(name)] = float(value)  # numpy / torch scalars too
            except (TypeError, ValueError):
                continue
        if values:
            self.client.log_metrics(self.key, values, int(step))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.client is not None and self.key is not None:
            self.client.log_artifact(self.key, path, artifact_path)

    def log_dict(self, d: dict, name: str) -> None:
        if self.client is not None and self.key is not None:
            self.client.log_dict(self.key, jsonable(d), name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.client is not None and self.key is not None:
            self.client.set_tags(self.key, tags)

    def log_datasets(self, datasets: list[dict[str, Any]]) -> None:
        """`dataset_input(...)` dicts: what the trial trained and was scored on."""
        if self.client is not None and self.key is not None and datasets:
            self.client.log_inputs(self.key, datasets)


def run_name(stage: str, tags: Mapping[str, str], trial_id: str) -> str:
    """`<stage>[-<variant>][-seed<k>]-<trial id>`: a trial run's name in the MLflow UI."""
    parts = [stage]
    if tags.get("doktra.variant"):
        parts.append(str(tags["doktra.variant"]))
    if tags.get("doktra.seed") not in (None, ""):
        parts.append(f"seed{tags['doktra.seed']}")
    parts.append(trial_id)
    return "-".join(parts)


class TrialRuns:
    """The MLflow runs of one stage's trials, written by the driver alone.

    `handle` is the stage's `SearchTracker.trial_tracking` (its stage, the tags every trial run
    gets, the directory of the trials' evaluation files). A run is keyed by `ray.trial_id` + stage
    + search id (get-or-create), so a retried, resumed or re-reported trial adds nothing twice:
    params once, each (metric, epoch) once. Writes a tracking server cannot take go to the
    driver's outbox (`SearchTracker.outbox`)."""

    def __init__(self, tracker: SearchTracker, handle: Mapping[str, Any]) -> None:
        self.tracker = tracker
        self.stage = str(handle["stage"])
        self.tags = {str(k): str(v) for k, v in handle.get("tags", {}).items()}
        self.files_dir = Path(handle["files_dir"]) if handle.get("files_dir") else None
        self._loggers: dict[str, TrialLogger] = {}

    def open(self, trial_id: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
             datasets: list[dict[str, Any]] | None = None) -> TrialLogger:
        """The trial's run, created (or found) on first use and marked running; `params`, `tags`
        and `datasets` are added when given (a trial's first report carries them)."""
        logger = self._loggers.get(trial_id)
        if logger is not None and params is None and tags is None and datasets is None:
            return logger
        all_tags = {**self.tags, **{k: str(v) for k, v in (tags or {}).items()}, TRIAL_ID: trial_id}
        key = self.tracker.trial_key(self.stage, trial_id, {**all_tags, STATUS: "running"},
                                     name=run_name(self.stage, all_tags, trial_id))
        client = self.tracker.client
        client.open_run(key, reopen=True)
        client.set_tags(key, {**all_tags, STATUS: "running"})
        if params:
            client.log_params(key, flatten(params))
        logger = TrialLogger(client, key)
        if datasets:
            logger.log_datasets(datasets)
        self._loggers[trial_id] = logger
        return logger

    def result(self, trial_id: str, metrics: Mapping[str, Any], step: int, info: Mapping[str, Any] | None = None) -> None:
        """One reported epoch: its numeric metrics at `step`; `info` (params, tags, datasets) opens the run fully."""
        if info is not None:
            logger = self.open(trial_id, info.get("params") or {}, info.get("tags") or {}, info.get("datasets") or [])
        else:
            logger = self.open(trial_id)
        logger.log_epoch(metrics, step)

    def complete(self, trial_id: str) -> None:
        """The trial ended well: its evaluation files become the run's artifacts (then leave the
        shared directory: MLflow, or the outbox, holds them), `doktra.status=completed`, FINISHED
        (the stage's `record_outcomes` has the last word, e.g. pruned)."""
        logger = self.open(trial_id)
        files = self.trial_files(trial_id)
        if files is not None and files.is_dir():
            for path in sorted(p for p in files.iterdir() if p.is_file()):
                logger.log_artifact(path)
            shutil.rmtree(files, ignore_errors=True)
            for empty in (files.parent, files.parent.parent):  # trials/<stage>/, trials/: gone once empty
                with contextlib.suppress(OSError):
                    empty.rmdir()
        logger.set_tags({STATUS: "completed"})
        self.tracker.client.set_terminated(logger.key, "FINISHED")  # type: ignore[arg-type]

    def error(self, trial_id: str) -> None:
        """The trial failed (after its retries): `doktra.status=errored`, FAILED."""
        logger = self.open(trial_id)
        logger.set_tags({STATUS: "errored"})
        self.tracker.client.set_terminated(logger.key, "FAILED")  # type: ignore[arg-type]

    def trial_files(self, trial_id: str) -> Path | None:
        """Where trial `trial_id` wrote its evaluation files."""
        return self.files_dir / trial_id if self.files_dir is not None else None


@contextlib.contextmanager
def trial_run(tracker: SearchTracker, handle: Mapping[str, Any], params: Mapping[str, Any],
              tags: Mapping[str, Any]) -> Iterator[TrialLogger]:
    """One trial run written from this process, outside Tune (analysis tools and tests that record
    runs of their own): opened under `handle`'s stage run with `params` and `tags` (`ray.trial_id`
    from `tags`, else a fresh id); completed on a normal exit, errored (re-raised) on an exception."""
    runs = TrialRuns(tracker, handle)
    all_tags = {**handle.get("tags", {}), **tags}
    trial_id = str(all_tags.get(TRIAL_ID) or uuid.uuid4().hex[:10])
    logger = runs.open(trial_id, params, tags)
    try:
        yield logger
    except Exception:
        runs.error(trial_id)
        raise
    else:
        runs.complete(trial_id)


__all__ = ["SearchTracker", "TrialLogger", "TrialRuns", "flatten", "run_name", "trial_run"]
