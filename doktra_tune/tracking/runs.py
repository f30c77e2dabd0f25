"""MLflow tracking for a search: search run -> stage runs -> trial/seed runs (docs/DESIGN.md).

Everything goes through MLflow's own client API (`MlflowClient`: `create_run`, `search_runs`,
`log_batch`, `log_artifact`, `log_dict`, `log_inputs`, `set_terminated`), wrapped by
`TrackingClient`. Ray's `setup_mlflow` / `MLflowLoggerCallback` are not used because both always
*create* a new run, so a resumed search or a restarted trial would get a second one. Here every run
is named by its key tags (`RunKey`: `doktra.level`, `doktra.stage`, `doktra.search_id`,
`ray.trial_id`; get-or-create), which makes resume idempotent and lets a write be queued before its
run exists; the trial run is opened inside the trial process so per-epoch metrics and artifacts
are logged where they are produced.

A tracking server that goes away mid-search never stops training: writes wait seconds, then go to
`<run_dir>/tracking_outbox/` and are sent when it answers again (the trial that wrote them, the
driver after each stage, or at the latest the next run of the same command); the driver says once
that tracking is degraded.

Default store: `sqlite:///<run_dir>/mlflow.db` with artifacts in `<run_dir>/mlartifacts`.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from doktra_tune.errors import ConfigError, first_line
from doktra_tune.jsonable import jsonable
from doktra_tune.tracking.client import TrackingClient, dataset_input, is_remote, retry_locked
from doktra_tune.tracking.outbox import OUTBOX_DIR, Outbox, RunKey
from doktra_tune.tracking.uris import SERVER_FIX, is_local, sqlite_path
from search_spaces import STAGES

LEVEL = "doktra.level"
STAGE = "doktra.stage"
TASK = "doktra.task"
SEARCH_ID = "doktra.search_id"
STATUS = "doktra.status"
TRIAL_ID = "ray.trial_id"

OUTCOME_TO_RUN_STATUS = {"completed": "FINISHED", "pruned": "KILLED", "errored": "FAILED"}
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
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.task = task
        self.search_id = search_id
        self.run_dir = Path(run_dir)
        self.experiment_name = f"doktra-{task}"
        self.echo = echo
        self._degraded_said = False
        # Writes wait on disk only while an http(s) server is away; a local store cannot go away.
        self.outbox: Outbox | None = Outbox(self.run_dir / OUTBOX_DIR) if is_remote(tracking_uri) else None
        if tracking_uri.startswith("sqlite:///"):
            sqlite_path(tracking_uri).parent.mkdir(parents=True, exist_ok=True)
        try:
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
        if sent and echo is not None:
            echo(f"[mlflow] sent {sent} tracking write(s) an earlier run of this search had queued")
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
        if closed and self.echo is not None:
            self.echo(f"[mlflow] {closed} run(s) left RUNNING by an interrupted run of this search marked KILLED")
        return closed

    def _say_degraded(self, reason: str) -> None:
        if self._degraded_said:
            return
        self._degraded_said = True
        if self.echo is not None:
            self.echo(
                f"[mlflow] tracking server {self.tracking_uri} is not answering ({reason}); training goes on, "
                f"its results are kept in {self.outbox_dir} and sent when the server answers again "
                "(at the latest by the next run of this command)"
            )

    @property
    def outbox_dir(self) -> Path:
        """Where writes wait while the tracking server is away."""
        return self.run_dir / OUTBOX_DIR

    def note_trial_outbox(self) -> None:
        """Say once when trials have queued writes (their server calls failed) that still wait."""
        if not self._degraded_said and self.outbox is not None and self.outbox.pending():
            self._say_degraded("trials could not reach it")

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
        """Picklable handle a trainable passes to `trial_run` (one per stage; Ray ships it). The
        stage run is opened here, once, so parallel trials never race to create it."""
        self.client.open_run(self.stage_key(stage), reopen=True)
        return {
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "parent": self.stage_key(stage).as_dict(),
            "outbox_dir": str(self.outbox.directory) if self.outbox is not None else None,
            "tags": {LEVEL: "trial", TASK: self.task, SEARCH_ID: self.search_id, STAGE: stage,
                     **{k: str(v) for k, v in (tags or {}).items()}},
        }

    def record_outcomes(self, stage: str, outcomes: dict[str, str]) -> None:
        """Ray's verdict per trial id: sets `doktra.status` and terminates the trial run
        (completed -> FINISHED, pruned -> KILLED, errored -> FAILED). A trial that died before
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
# the trial side


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
            if name == STEP_KEY or isinstance(value, bool):
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
def trial_run(tracking: dict | None, params: dict, tags: dict) -> Iterator[TrialLogger]:
    """Open (get-or-create) this trial's run under its stage run and yield its logger.

    The run is keyed by `ray.trial_id` (from `tags`, else Ray's trial context, else a fresh id)
    + stage + search id, so a resumed/restarted trial reuses its run. Params: every hyperparameter,
    flattened. Normal exit: `doktra.status=completed`, FINISHED (the driver's `record_outcomes` has
    the last word, e.g. pruned). Exception: `doktra.status=errored`, FAILED, re-raised. Writes the
    tracking server cannot take go to the run directory's outbox. `tracking=None`: no logging.
    """
    if tracking is None:
        yield TrialLogger(None, None)
        return
    all_tags = {**tracking.get("tags", {}), **{k: str(v) for k, v in tags.items()}}
    trial_id = all_tags.get(TRIAL_ID) or _ray_trial_id() or uuid.uuid4().hex[:10]
    all_tags[TRIAL_ID] = trial_id
    stage = all_tags.get(STAGE, "")
    key_tags = {TRIAL_ID: trial_id, STAGE: stage, SEARCH_ID: all_tags.get(SEARCH_ID, "")}
    key = RunKey(tracking["experiment_id"], key_tags,
                 {k: v for k, v in all_tags.items() if k not in key_tags} | {STATUS: "running"},
                 name=_run_name(stage, all_tags, trial_id), parent=RunKey.from_dict(tracking["parent"]))
    outbox_dir = tracking.get("outbox_dir")
    client = TrackingClient(tracking["tracking_uri"], Outbox(Path(outbox_dir)) if outbox_dir else None)
    client.open_run(key, reopen=True)
    client.set_tags(key, {STATUS: "running"})
    client.log_params(key, flatten(params))
    try:
        yield TrialLogger(client, key)
    except Exception:
        client.set_tags(key, {STATUS: "errored"})
        client.set_terminated(key, "FAILED")
        raise
    except BaseException:  # KeyboardInterrupt / SystemExit: stopped, not failed
        client.set_terminated(key, "KILLED")
        raise
    else:
        client.set_tags(key, {STATUS: "completed"})
        client.set_terminated(key, "FINISHED")
    finally:
        with contextlib.suppress(Exception):  # best effort: the driver sends what is left
            client.flush(own_only=True)


__all__ = ["SearchTracker", "TrialLogger", "dataset_input", "flatten", "trial_run"]
