"""A lost worker (node lost, OOM, kill -9) is survived by default: the trial whose worker process is
killed mid-epoch is retried from its last checkpoint (search.max_failures=2; trials save their
optimizer and RNG state), and the stage ends with every grid point, each epoch logged once. The search's
first stage (CTT, stopped after it) is the one: every stage's trials are the same `StageTrial`."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.search import DATA_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(), reason=f"no ChemProt data at {DATA_ROOT}"),
]
EPOCHS = 4


def _kill_a_worker_mid_trial(stage_dir: Path, killed: dict, stop: threading.Event) -> None:
    """Wait for a trial to report epoch 2 of 4, then SIGKILL the worker process running it."""
    while not stop.is_set():
        for result in stage_dir.glob("*/result.json"):
            lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
            if lines and lines[-1].get("epoch") == 2:
                killed["trial_id"], killed["pid"] = lines[-1]["trial_id"], lines[-1]["pid"]
                os.kill(int(lines[-1]["pid"]), signal.SIGKILL)
                return
        time.sleep(0.05)


def test_a_trial_whose_worker_is_killed_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    import ray
    from mlflow.tracking import MlflowClient

    from doktra_tune.search import compose_config, run_search

    runs = tmp_path / "runs"
    cfg = compose_config([
        "task=chemprot", "preset=tiny", f"runs_root={runs}", f"data_root={DATA_ROOT}", "search_id=loss",
        "search.stop_after=ctt", f"stages.ctt.epochs={EPOCHS}", "data.train_limit=400",
        "stages.ctt.grid.beta=[0.0,0.5]",
    ])
    killed: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_a_worker_mid_trial, args=(runs / "loss" / "ray" / "ctt", killed, stop),
                               daemon=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        watcher.start()
        summary = run_search(cfg)
    finally:
        stop.set()
        ray.shutdown()
    assert killed, "no trial reached epoch 2"
    info = summary["ctt"]
    trials = {t["trial_id"]: t for t in info["trials"]}
    assert sorted(t["params"]["beta"] for t in trials.values()) == [0.0, 0.5]  # every grid point
    assert all(t["status"] == "completed" and t["epochs_run"] == EPOCHS for t in trials.values())
    (trial_dir,) = (runs / "loss" / "ray" / "ctt").glob(f"*_{killed['trial_id']}_*")
    reports = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    epochs = [r["epoch"] for r in reports]
    assert epochs[-1] == EPOCHS and epochs.count(1) == 1  # resumed, not restarted from scratch
    assert len({r["pid"] for r in reports}) == 2  # a new worker took over
    client = MlflowClient(f"sqlite:///{runs / 'loss' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("doktra-chemprot").experiment_id
    (run,) = client.search_runs([experiment], f"tags.`ray.trial_id` = '{killed['trial_id']}'")
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "dev_f1")) == list(range(1, EPOCHS + 1))
    assert run.data.tags["doktra.status"] == "completed"
