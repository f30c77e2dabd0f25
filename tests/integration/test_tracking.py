"""doktra_tune.tracking against a real sqlite MLflow store (no Ray: the tracker, the trial-run writer
and the Tune callback are driven directly, the way the search driver and Tune call them)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from doktra_tune.errors import ConfigError
from doktra_tune.tracking import (
    SearchTracker,
    check_tracking_uri,
    default_tracking_uri,
    trial_run,
)
from tests.helpers.tracking_store import new_store

CONFIG = {"task": "chemprot", "ctt": {"beta": [0.0, 0.3]}, "seeds": [1, 2, 3]}


def _runs(uri: str):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("doktra-chemprot")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def _fill(run_dir: Path) -> SearchTracker:
    tracker = SearchTracker(new_store(run_dir), "chemprot", "s1", CONFIG, run_dir)
    tracking = tracker.trial_tracking("ctt", {"doktra.teacher_model": "random:bert:L1-H32"})
    for trial_id, beta, f1s in (("t0", 0.0, [0.50, 0.60]), ("t1", 0.3, [0.55, 0.65])):
        params = {"beta": beta, "lr": 2e-5, "data": {"task": "chemprot", "max_len": 32}}
        with trial_run(tracker, tracking, params, {"ray.trial_id": trial_id, "doktra.seed": 1}) as log:
            for epoch, f1 in enumerate(f1s, start=1):
                log.log_epoch({"dev_f1": f1, "dev_ece": 0.1 * epoch, "note": "x"}, step=epoch)
            log.log_dict({"edges": [0.0, 1.0]}, "reliability_dev.json")
    return tracker


def test_default_uri_is_absolute_sqlite(tmp_path: Path) -> None:
    uri = default_tracking_uri(tmp_path / "runs" / "s1")
    assert uri == f"sqlite:///{(tmp_path / 'runs' / 's1').resolve()}/mlflow.db"
    assert uri.startswith("sqlite:////")
    check_tracking_uri(uri)  # parent not created yet, but creatable: fine


def test_unreachable_server_fails_fast_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        check_tracking_uri(f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message
    assert "mlflow server --host 127.0.0.1 --port 5000" in message


def test_unwritable_sqlite_dir_is_rejected(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: permissions are not enforced
            pytest.skip("directory permissions are not enforced for this user")
        with pytest.raises(ConfigError, match="not writable"):
            check_tracking_uri(f"sqlite:///{locked}/mlflow.db")
    finally:
        locked.chmod(0o700)


def test_run_tree_tags_params_and_metric_steps(tmp_path: Path) -> None:
    tracker = _fill(tmp_path)
    client, runs = _runs(default_tracking_uri(tmp_path))
    by_level: dict[str, list] = {}
    for run in runs:
        by_level.setdefault(run.data.tags["doktra.level"], []).append(run)
    assert {k: len(v) for k, v in by_level.items()} == {"search": 1, "stage": 1, "trial": 2}
    search, stage = by_level["search"][0], by_level["stage"][0]
    assert search.info.run_id == tracker.search_run_id
    assert stage.data.tags["mlflow.parentRunId"] == search.info.run_id
    assert stage.data.tags["doktra.stage"] == "ctt"
    assert search.data.params["seeds"] == "[1, 2, 3]"
    assert "config.yaml" in [a.path for a in client.list_artifacts(search.info.run_id)]
    for trial in by_level["trial"]:
        tags = trial.data.tags
        assert tags["mlflow.parentRunId"] == stage.info.run_id
        assert tags["doktra.task"] == "chemprot" and tags["doktra.search_id"] == "s1"
        assert tags["doktra.teacher_model"] == "random:bert:L1-H32"
        assert tags["doktra.status"] == "completed" and trial.info.status == "FINISHED"
        assert trial.data.params["data.max_len"] == "32"
        assert "note" not in trial.data.metrics  # non-numeric values are not metrics
        assert [a.path for a in client.list_artifacts(trial.info.run_id)] == ["reliability_dev.json"]
    t1 = next(r for r in by_level["trial"] if r.data.tags["ray.trial_id"] == "t1")
    history = client.get_metric_history(t1.info.run_id, "dev_f1")
    assert [(m.step, m.value) for m in history] == [(1, 0.55), (2, 0.65)]
    assert t1.data.params["beta"] == "0.3"


def test_resume_reuses_every_run(tmp_path: Path) -> None:
    first = _fill(tmp_path)
    first.finish("FAILED")  # the first invocation died
    again = SearchTracker(default_tracking_uri(tmp_path), "chemprot", "s1", CONFIG, tmp_path)
    assert again.search_run_id == first.search_run_id
    assert again.stage_run_id("ctt") == first.stage_run_id("ctt")
    tracking = again.trial_tracking("ctt")
    params = {"beta": 0.0, "lr": 2e-5, "data": {"task": "chemprot", "max_len": 32}}
    with trial_run(again, tracking, params, {"ray.trial_id": "t0"}) as log:  # Ray restores trial t0
        log.log_epoch({"dev_f1": 0.99}, step=2)  # already logged at step 2: kept once
        log.log_epoch({"dev_f1": 0.70}, step=3)
    client, runs = _runs(default_tracking_uri(tmp_path))
    assert len(runs) == 4
    t0 = next(r for r in runs if r.data.tags.get("ray.trial_id") == "t0")
    assert [(m.step, m.value) for m in client.get_metric_history(t0.info.run_id, "dev_f1")] == [
        (1, 0.50),
        (2, 0.60),
        (3, 0.70),
    ]
    search = client.get_run(again.search_run_id)
    assert search.info.status == "RUNNING"  # reopened by the resumed search


def test_record_outcomes_and_stage_summary(tmp_path: Path) -> None:
    tracker = _fill(tmp_path)
    tracker.record_outcomes("ctt", {"t0": "pruned", "t1": "completed", "t2": "errored"})
    tracker.log_stage_summary("ctt", {"beta": 0.3, "epochs": 2, "dev_f1": 0.65})
    tracker.finish()
    client, runs = _runs(default_tracking_uri(tmp_path))
    trials = {r.data.tags["ray.trial_id"]: r for r in runs if r.data.tags["doktra.level"] == "trial"}
    assert {k: (r.data.tags["doktra.status"], r.info.status) for k, r in trials.items()} == {
        "t0": ("pruned", "KILLED"),
        "t1": ("completed", "FINISHED"),
        "t2": ("errored", "FAILED"),  # died before opening its run: created so it stays visible
    }
    stage = client.get_run(tracker.stage_run_id("ctt"))
    assert stage.data.params["winner.beta"] == "0.3"
    assert stage.data.params["winner.epochs"] == "2"
    assert stage.info.status == "FINISHED"
    assert client.get_run(tracker.search_run_id).info.status == "FINISHED"


def test_exception_marks_trial_errored_and_reraises(tmp_path: Path) -> None:
    tracker = SearchTracker(new_store(tmp_path), "chemprot", "s1", CONFIG, tmp_path)
    tracking = tracker.trial_tracking("abd")
    # a local sqlite store cannot go away: no outbox is built for it (only for http(s) servers);
    # the handle Ray ships to the trials names no store at all (the driver is the only writer)
    assert tracker.outbox is None and set(tracking) == {"stage", "tags", "files_dir"}
    with pytest.raises(RuntimeError, match="nan loss"):
        with trial_run(tracker, tracking, {"gamma": 0.9}, {"ray.trial_id": "bad"}) as log:
            log.log_epoch({"dev_f1": 0.1}, step=1)
            raise RuntimeError("nan loss")
    _, runs = _runs(default_tracking_uri(tmp_path))
    bad = next(r for r in runs if r.data.tags.get("ray.trial_id") == "bad")
    assert (bad.data.tags["doktra.status"], bad.info.status) == ("errored", "FAILED")


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def test_the_driver_writes_trial_runs_from_tune_events(tmp_path: Path) -> None:
    """TrialTracking (the stage Tuner's callback) is the only writer of the trials' runs: the first
    report's RUN_INFO gives params, tags and datasets; each epoch is logged once even when a retried
    trial reports it again; the trial's evaluation files become artifacts and leave the shared
    directory; a failed trial is FAILED; bookkeeping keys never become metrics."""
    from doktra_tune.search.trial_tracking import TrialTracking
    from doktra_tune.tracking import dataset_input
    from trainables.tune_session import GPU_IDS, RUN_INFO

    tracker = SearchTracker(new_store(tmp_path), "chemprot", "s1", CONFIG, tmp_path)
    handle = tracker.trial_tracking("ctt", {"doktra.teacher_model": "random:bert:L1-H32"})
    callback = TrialTracking(tracker, handle)
    files = Path(handle["files_dir"]) / "t0"
    files.mkdir(parents=True)
    (files / "metrics_dev.json").write_text('{"f1": 0.6}')
    info = json.dumps({"params": {"beta": 0.3, "data": {"max_len": 32}}, "tags": {"doktra.seed": "1"},
                       "datasets": [dataset_input("chemprot-train", "/d (x)", "abc123", "train")]})
    trial = _Trial("t0")

    def result(epoch: int, f1: float, **extra) -> dict:
        return {"epoch": float(epoch), "dev_f1": f1, "dev_ece": 0.1, "search_score": f1, "training_iteration": epoch,
                "node_ip": "10.0.0.2", "pid": 123, "node_id": "n", GPU_IDS: ["0"], "time_total_s": 1.0, **extra}

    callback.on_trial_result(0, [], trial, result(1, 0.5, **{RUN_INFO: info}))
    callback.on_trial_result(0, [], trial, result(2, 0.6))
    callback.on_trial_result(0, [], trial, result(2, 0.99, **{RUN_INFO: info}))  # retried from epoch 1's checkpoint
    callback.on_trial_result(0, [], trial, result(3, 0.7))
    callback.on_trial_complete(0, [], trial)
    callback.on_trial_error(0, [], _Trial("t1"))  # died before its first report
    client, runs = _runs(default_tracking_uri(tmp_path))
    trials = {r.data.tags["ray.trial_id"]: r for r in runs if r.data.tags["doktra.level"] == "trial"}
    t0 = trials["t0"]
    assert [(m.step, m.value) for m in client.get_metric_history(t0.info.run_id, "dev_f1")] == [
        (1, 0.5), (2, 0.6), (3, 0.7)]
    assert set(t0.data.metrics) == {"dev_f1", "dev_ece"}  # no pid, time, search score or epoch
    assert t0.data.params["beta"] == "0.3" and t0.data.params["data.max_len"] == "32"
    assert t0.data.tags["doktra.seed"] == "1" and t0.data.tags["doktra.teacher_model"] == "random:bert:L1-H32"
    assert (t0.data.tags["doktra.status"], t0.info.status) == ("completed", "FINISHED")
    assert t0.info.run_name == "ctt-seed1-t0"
    assert [d.dataset.digest for d in client.get_run(t0.info.run_id).inputs.dataset_inputs] == ["abc123"]
    assert [a.path for a in client.list_artifacts(t0.info.run_id)] == ["metrics_dev.json"]
    assert not files.exists()  # logged: MLflow holds it now
    assert (trials["t1"].data.tags["doktra.status"], trials["t1"].info.status) == ("errored", "FAILED")


def test_a_rerun_closes_the_runs_a_killed_driver_left_running(tmp_path: Path, doktra_lines) -> None:
    """kill -9 of the driver mid-trial leaves the trial's and the stage's runs RUNNING for ever;
    the rerun marks them KILLED (trials: doktra.status=interrupted) before it starts."""
    first = SearchTracker(new_store(tmp_path), "chemprot", "s1", CONFIG, tmp_path)
    tracking = first.trial_tracking("ctt")
    context = trial_run(first, tracking, {"beta": 0.0}, {"ray.trial_id": "t9"})
    log = context.__enter__()  # the trial is running when its driver dies: no exit, no complete()
    log.log_epoch({"dev_f1": 0.5}, step=1)
    again = SearchTracker(default_tracking_uri(tmp_path), "chemprot", "s1", CONFIG, tmp_path)
    assert again.closed_stale == 2  # the trial's and the stage's
    client, runs = _runs(default_tracking_uri(tmp_path))
    status = {r.data.tags["doktra.level"]: (r.info.status, r.data.tags.get("doktra.status")) for r in runs}
    assert status == {"search": ("RUNNING", None), "stage": ("KILLED", None), "trial": ("KILLED", "interrupted")}
    assert any("marked KILLED" in line for line in doktra_lines())
