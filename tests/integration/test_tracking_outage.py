"""A tracking server that goes away never stops training and loses nothing: writes wait seconds, go
to the run directory's outbox, and are sent once — when the server answers again, or at the latest
by the next run of the same command. Against a real `mlflow server`, killed and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from doktra_tune.tracking import Outbox, RunKey, TrackingClient
from doktra_tune.tracking import client as tracking_client
from tests.helpers.search import DATA_ROOT, free_port, search_lines

pytestmark = pytest.mark.slow


class Server:
    """`mlflow server` on a local port over a sqlite store in `store`; stop() / start() again."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        mlflow_cli = Path(sys.executable).with_name("mlflow")
        self.proc = subprocess.Popen(
            [str(mlflow_cli), "server", "--backend-store-uri", f"sqlite:///{self.store}/mlflow.db",
             "--artifacts-destination", str(self.store / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=self.store,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                MlflowClient(self.uri).search_experiments(max_results=1)
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    pytest.fail("mlflow server did not come up within 90 s")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its worker: the group we started
            self.proc.wait(10)


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory):
    srv = Server(tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def server(module_server: Server) -> Server:
    """The module's server (one start for both tests; each writes to an experiment of its own), up."""
    if module_server.proc is None or module_server.proc.poll() is not None:
        module_server.start()  # a test before this one stopped it and did not start it again
    return module_server


def test_writes_wait_seconds_then_queue_and_are_sent_once_when_the_server_is_back(server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    said: list[str] = []
    client = TrackingClient(server.uri, Outbox(tmp_path / "outbox"), on_degraded=said.append)
    experiment = MlflowClient(server.uri).create_experiment("outage")
    key = RunKey(experiment, {"doktra.trial": "t0"}, {"doktra.stage": "ctt"}, name="t0",
                 parent=RunKey(experiment, {"doktra.level": "stage"}, name="ctt"))
    client.open_run(key)
    client.log_params(key, {"beta": 0.3})
    client.log_metrics(key, {"dev_f1": 0.5}, step=1)
    server.stop()
    artifact = tmp_path / "scratch" / "reliability_dev.json"
    artifact.parent.mkdir()
    artifact.write_text('{"ece": 0.1}')
    t0 = time.monotonic()
    client.log_metrics(key, {"dev_f1": 0.6}, step=2)  # fails: seconds, then queued
    client.log_artifact(key, artifact)
    client.log_metrics(key, {"dev_f1": 0.7}, step=3)  # queued at once (the server is known away)
    client.set_terminated(key, "FINISHED")
    assert time.monotonic() - t0 < 30
    assert client.degraded and len(said) == 1 and len(list(Outbox(tmp_path / "outbox").entries())) == 4
    artifact.unlink()  # the trial's scratch directory is gone: the outbox kept its own copy
    server.start()
    monkeypatch.setattr(tracking_client, "RETRY_AFTER_S", 0.0)
    client.log_metrics(key, {"dev_f1": 0.8}, step=4)  # the server is back: what waited goes first
    assert not client.degraded and not Outbox(tmp_path / "outbox").pending()
    mlflow = MlflowClient(server.uri)
    (run,) = mlflow.search_runs([experiment], "tags.`doktra.trial` = 't0'")
    assert [(m.step, m.value) for m in mlflow.get_metric_history(run.info.run_id, "dev_f1")] == [
        (1, 0.5), (2, 0.6), (3, 0.7), (4, 0.8)]
    assert run.data.params == {"beta": "0.3"} and run.info.status == "FINISHED"
    assert {a.path for a in mlflow.list_artifacts(run.info.run_id)} == {"reliability_dev.json"}
    parents = mlflow.search_runs([experiment], "tags.`doktra.level` = 'stage'")
    assert len(parents) == 1 and run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert client.flush(own_only=False) == 0  # nothing sent twice


@pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(), reason=f"no ChemProt data at {DATA_ROOT}")
def test_a_search_trains_through_an_outage_and_the_next_run_sends_what_waited(server, tmp_path) -> None:
    import ray

    from doktra_tune.search import compose_config, run_search

    overrides = ["task=chemprot", "preset=tiny", f"runs_root={tmp_path / 'runs'}", f"data_root={DATA_ROOT}",
                 f"mlflow.tracking_uri={server.uri}", "search.stop_after=ctt", "stages.ctt.epochs=2",
                 "search_id=outage"]
    def on_line(line: str) -> None:
        if line.startswith("[ctt] start"):
            server.stop()  # the tracking server goes away mid-search (its search run and config already sent)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.monotonic()
        with search_lines(on_line) as lines:
            summary = run_search(compose_config(overrides))
        assert time.monotonic() - t0 < 240  # no minutes-long stalls in MLflow's retries
        info = summary["ctt"]
        assert [t["status"] for t in info["trials"]] == ["completed", "completed"]  # training went on
        degraded = [line for line in lines if "is not answering" in line]
        assert len(degraded) == 1  # said once
        assert any("wait in" in line for line in lines)
        run_dir = Path(summary["run_dir"])
        assert list((run_dir / "tracking_outbox").glob("*.jsonl"))

        server.start()
        with search_lines() as again:
            run_search(compose_config(overrides))
        assert any(line.startswith("[mlflow] sent") for line in again)
        assert any(line.startswith("[ctt] finished earlier") for line in again)
    finally:
        ray.shutdown()
    assert not list((run_dir / "tracking_outbox").glob("*.jsonl"))
    mlflow = MlflowClient(server.uri)
    experiment = mlflow.get_experiment_by_name("doktra-chemprot").experiment_id
    trials = mlflow.search_runs([experiment], "tags.`doktra.stage` = 'ctt' and tags.`doktra.level` = 'trial'")
    assert sorted(r.data.tags["ray.trial_id"] for r in trials) == sorted(t["trial_id"] for t in info["trials"])
    for run in trials:  # every epoch exactly once, every run ended as Ray said
        assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "dev_f1")] == [1, 2]
        assert run.data.tags["doktra.status"] == "completed" and run.info.status == "FINISHED"
    (stage,) = mlflow.search_runs([experiment], "tags.`doktra.level` = 'stage' and tags.`doktra.stage` = 'ctt'")
    assert stage.data.tags["doktra.winner.trial_id"] == info["trial_id"]
