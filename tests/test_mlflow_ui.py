"""The MLflow UI for real: `mlflow server` on 127.0.0.1 against a filled sqlite store, pages
loaded in headless Chromium, run names asserted in the rendered DOM.

Set DOKTRA_UI_SCREENSHOTS=<dir> to also keep the screenshots (docs/screenshots/ is made so).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from doktra_tune.tracking import (
    SearchTracker,
    check_tracking_uri,
    default_tracking_uri,
    trial_run,
)
from tests.test_tracking import new_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--virtual-time-budget=15000",
                  "--window-size=1400,900"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fill(run_dir: Path) -> tuple[str, list[str]]:
    tracker = SearchTracker(new_store(run_dir), "chemprot", "ui", {"task": "chemprot"},
                            run_dir)
    tracking = tracker.trial_tracking("ctt", {"doktra.teacher_model": "random:bert:L1-H32"})
    for i, beta in enumerate((0.0, 0.3, 0.5)):
        with trial_run(tracking, {"beta": beta, "lr": 2e-5}, {"ray.trial_id": f"ui{i}"}) as log:
            for epoch in (1, 2):
                log.log_epoch({"dev_f1": 0.5 + beta / 10 + epoch / 100, "dev_ece": 0.1 - beta / 10},
                              step=epoch)
    tracker.record_outcomes("ctt", {"ui0": "completed", "ui1": "completed", "ui2": "pruned"})
    tracker.log_stage_summary("ctt", {"beta": 0.3})
    tracker.finish()
    client = MlflowClient(tracking_uri=default_tracking_uri(run_dir))
    runs = client.search_runs([tracker.experiment_id],
                              filter_string="tags.`doktra.level` = 'trial'")
    return tracker.experiment_id, [r.info.run_id for r in runs]


def _get(url: str, data: dict | None = None) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"{}")


def _page_text(url: str, screenshot: Path) -> str:
    """Load `url` once: save a screenshot and return the rendered DOM's visible text."""
    assert CHROMIUM is not None
    proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, "--dump-dom", f"--screenshot={screenshot}",
                           url], capture_output=True, text=True, timeout=90)
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", proc.stdout, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mlflow-ui")
    run_dir = tmp_path / "ui"
    experiment_id, trial_ids = _fill(run_dir)
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow_cli), "server", "--backend-store-uri", default_tracking_uri(run_dir),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job runner
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("mlflow server did not come up within 60 s")
                time.sleep(0.5)
        yield base, experiment_id, trial_ids
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker: the group we started
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@needs_chromium
def test_runs_list_and_stage_comparison_render(server, tmp_path: Path) -> None:
    base, experiment_id, trial_ids = server
    listed = _get(f"{base}/api/2.0/mlflow/runs/search",
                  {"experiment_ids": [experiment_id], "max_results": 100,
                   "filter": "tags.`doktra.search_id` = 'ui'"})
    names = {r["info"]["run_name"] for r in listed["runs"]}
    assert {"search-ui", "ctt", "ctt-ui0", "ctt-ui1", "ctt-ui2"} == names

    shots = Path(os.environ.get("DOKTRA_UI_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    # a search filter + a non-date sort makes the UI list nested runs flat (not under the parent)
    flat = urllib.parse.quote("tags.`doktra.level` = 'trial' and tags.`doktra.search_id` = 'ui'")
    runs_url = (f"{base}/#/experiments/{experiment_id}/runs?searchFilter={flat}"
                "&orderByKey=attributes.run_name&orderByAsc=true")
    text = _page_text(runs_url, shots / "mlflow_runs.png")
    assert "doktra-chemprot" in text and "3 matching runs" in text
    assert [text.find(n) >= 0 for n in ("ctt-ui0", "ctt-ui1", "ctt-ui2")] == [True] * 3

    compare_url = (f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(trial_ids))}"
                   f"&experiments={urllib.parse.quote(json.dumps([experiment_id]))}")
    text = _page_text(compare_url, shots / "mlflow_compare_ctt.png")
    assert "Comparing 3 Runs" in text
    for name in ("ctt-ui0", "ctt-ui1", "ctt-ui2"):
        assert name in text
    assert "doktra.status pruned" in text or "pruned" in text.split("doktra.status", 1)[-1]

    for png in ("mlflow_runs.png", "mlflow_compare_ctt.png"):
        assert (shots / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tracking_through_the_http_server(server, tmp_path: Path) -> None:
    """`mlflow.tracking_uri=http://...`: preflight passes and the same run tree lands on the server."""
    base, experiment_id, _ = server
    check_tracking_uri(base)  # reachable: no error
    tracker = SearchTracker(base, "chemprot", "remote", {"task": "chemprot"}, tmp_path / "remote")
    assert tracker.experiment_id == experiment_id  # the task's experiment is shared
    with trial_run(tracker.trial_tracking("ctt"), {"beta": 0.3}, {"ray.trial_id": "r0"}) as log:
        log.log_epoch({"dev_f1": 0.7}, step=1)
    tracker.record_outcomes("ctt", {"r0": "completed"})
    tracker.finish()
    found = _get(f"{base}/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [experiment_id],
                  "filter": "tags.`doktra.search_id` = 'remote'", "max_results": 100})
    names = sorted(r["info"]["run_name"] for r in found["runs"])
    assert names == ["ctt", "ctt-r0", "search-remote"]
