"""Two Tuners at once (`final.beside_abd`: the final stage's teacher and student runs beside the ABD
search), and the one in the thread cancelled (the search failed or was interrupted meanwhile): the
trial the cancel stopped is not taken for finished (Tune marks a stopped trial TERMINATED, as it does
a finished one), its MLflow run ends KILLED, and the resumed stage runs it again while the finished
one is kept."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray import tune

from doktra_tune.cluster.ray_session import Resources
from doktra_tune.search.beside import BesideStage
from doktra_tune.search.stage_runner import CANCELLED_FILE, StageRunner, StageSpec
from doktra_tune.tracking import TRIAL_ID, SearchTracker
from doktra_tune.trial_record import TrialRecord
from tests.helpers.tracking_store import new_store


def epochs_of_pause(config: dict[str, Any]) -> None:
    """Three epochs of `pause` seconds each."""
    for epoch in range(1, 4):
        time.sleep(config["pause"])
        tune.report({"epoch": epoch, "dev_f1": 0.1 * epoch})


def spec_for(name: str, pauses: list[float]) -> Any:
    def build(prior: list[TrialRecord]) -> StageSpec:
        done = {r.params["pause"] for r in prior}
        todo = [p for p in pauses if p not in done]
        return StageSpec(name=name, trainable=epochs_of_pause, trainable_kwargs={},
                         param_space={"pause": tune.grid_search(todo or [0.0])}, max_t=3,
                         num_samples=1 if todo else 0)
    return build


def _epochs_reported(exp: Path) -> dict[float, int]:
    out = {}
    for result in exp.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            out[float(lines[0]["config"]["pause"])] = len(lines)
    return out


@pytest.mark.slow
def test_a_tuner_beside_another_then_cancelled_resumes_only_what_it_stopped(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    uri = new_store(run_dir)
    tracker = SearchTracker(uri, "chemprot", "beside", {"task": {"name": "chemprot"}}, run_dir)
    runner = StageRunner(run_dir, Resources(per_trial={"cpu": 1}, max_concurrent=None, torch_threads=1), tracker,
                         max_failures=0)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # the quick trial finishes, the slow one (3 x 60 s) is still in its first epoch at the cancel
        beside = BesideStage("final-beside-abd", lambda cancel: runner.run("final", spec_for("final", [0.01, 60.0]),
                                                                           cancel=cancel))
        deadline = time.monotonic() + 120
        while _epochs_reported(run_dir / "ray" / "final").get(0.01, 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        main = runner.run("abd", spec_for("abd", [0.02]))  # a second Tuner, in the main thread, meanwhile
        assert [(r.status, r.epochs_run) for r in main] == [("completed", 3)]
        assert beside.thread.is_alive()
        t0 = time.monotonic()
        beside.cancel()
        assert time.monotonic() - t0 < 60  # stopped, not waited for
        kept = beside.join()
        assert [(r.params["pause"], r.status, r.epochs_run) for r in kept] == [(0.01, "completed", 3)]
        (stopped,) = json.loads((run_dir / "ray" / "final" / CANCELLED_FILE).read_text())
        run = MlflowClient(uri).search_runs([tracker.experiment_id], f"tags.`{TRIAL_ID}` = '{stopped}'")[0]
        assert (run.info.status, run.data.tags["doktra.status"]) == ("KILLED", "cancelled")

        resumed = runner.run("final", spec_for("final", [0.01, 0.03]))  # the slow one, resumed quick
        assert sorted((r.params["pause"], r.status, r.epochs_run) for r in resumed) == [
            (0.01, "completed", 3), (0.03, "completed", 3)]
        assert _epochs_reported(run_dir / "ray" / "final-resume1") == {0.03: 3}  # only the stopped trial re-ran
    finally:
        ray.shutdown()
