"""Resume: kill -9 the search mid-stage, re-run the same command, lose no finished trial.

The first run is a real subprocess whose driver is killed with SIGKILL once the CTT stage has at
least one finished trial and more to go — its lease and its local Ray (head, agents, workers) stay
behind, as after a real `kill -9`. The second run takes the stale lease over (one `[lease]` line),
stops exactly those Ray processes, marks the MLflow runs the killed driver left RUNNING as KILLED,
restores the Tune experiment (`Tuner.restore`), keeps the finished trials as they were, runs the
rest and releases the lease; a third run finds the stage's winner.json and skips it.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doktra_tune.cluster.lease import LEASE_FILE, read_owner
from tests.helpers.search import DATA_ROOT, cli_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(), reason=f"no ChemProt data at {DATA_ROOT}"),
]


def _trial_states(exp: Path) -> dict[str, str]:
    states: dict[str, str] = {}
    for path in sorted(glob.glob(str(exp / "experiment_state-*.json"))):
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue  # being written
        for trial_json, _meta in data.get("trial_data", []):
            trial = json.loads(trial_json)
            states[trial["trial_id"]] = trial["status"]
    return states


def _result_lines(exp: Path, trial_id: str) -> int | None:
    """Lines of the trial's result.json in storage; None when Tune had not synced it before the kill."""
    paths = glob.glob(str(exp / f"*_{trial_id}_*" / "result.json"))
    return len(Path(paths[0]).read_text().splitlines()) if paths else None


def test_kill_9_mid_stage_then_resume_keeps_finished_trials(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "doktra_tune.search", "task=chemprot", "preset=tiny", f"runs_root={runs}",
        "search_id=resume", "search.stop_after=ctt", "stages.ctt.grid.beta=[0.0,0.3,0.5]",
        "resources.max_concurrent_trials=1",
    ]
    exp = runs / "resume" / "ray" / "ctt"
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    finished: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            states = _trial_states(exp)
            finished = [t for t, s in states.items() if s == "TERMINATED"]
            if finished and len(finished) < 3:
                break
            time.sleep(0.5)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)  # the driver only: its Ray stays behind, as after a real kill -9
        first.wait()
        log.close()
    recorded = json.loads((runs / "resume" / "ray_processes.json").read_text())
    left = [int(pid) for pid in recorded if Path(f"/proc/{pid}").exists()]
    try:
        assert read_owner(runs / "resume").pid == first.pid  # the killed driver's lease is still there
        _check_resume(tmp_path, cmd, runs, exp, finished, left, first.pid)
    finally:
        for pid in left:  # never leave the killed run's Ray behind, whatever failed above
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _check_resume(tmp_path: Path, cmd: list[str], runs: Path, exp: Path, finished: list[str], left: list[int],
                  killed_pid: int) -> None:
    assert finished, (tmp_path / "first.log").read_text()[-2000:]
    assert left, "the killed driver's local Ray should still run"
    assert not (runs / "resume" / "stages" / "ctt" / "winner.json").exists()
    lines_before = {t: _result_lines(exp, t) for t in finished}

    second = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "resuming the interrupted stage" in second.stdout
    took_over = [line for line in second.stdout.splitlines() if line.startswith("[lease]")]
    assert len(took_over) == 1 and took_over[0].startswith(
        f"[lease] took over a stale lease from pid {killed_pid} on `{socket.gethostname()}` (search `resume` since "
    ) and took_over[0].endswith(": its process is no longer running)"), second.stdout[:2000]
    assert not (runs / "resume" / LEASE_FILE).exists()  # released at the end
    assert "process(es) the killed earlier run of this search had left running" in second.stdout
    assert not [pid for pid in left if Path(f"/proc/{pid}").exists() and
                "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
    info = json.loads((runs / "resume" / "stages" / "ctt" / "winner.json").read_text())
    trials = {t["trial_id"]: t for t in info["trials"]}
    assert sorted(t["params"]["beta"] for t in trials.values()) == [0.0, 0.3, 0.5]  # each grid point once
    for trial_id in finished:
        assert trials[trial_id]["status"] == "completed"
        if lines_before[trial_id] is not None:
            assert _result_lines(exp, trial_id) == lines_before[trial_id]  # not re-run
    for line in second.stdout.splitlines():
        for trial_id in finished:
            assert not (line.startswith("[ctt] trial") and trial_id in line and "epoch" in line)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs / 'resume' / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("doktra-chemprot").experiment_id
    for trial_id in trials:
        assert len(client.search_runs([exp_id], f"tags.`ray.trial_id` = '{trial_id}'")) == 1  # no duplicates
    assert len(client.search_runs([exp_id], "tags.`doktra.level` = 'search'")) == 1
    assert not client.search_runs([exp_id], "attributes.status = 'RUNNING'")  # nothing left open

    third = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "[ctt] finished earlier" in third.stdout and "[ctt] trial" not in third.stdout
