"""The MLflow UI for real, as a new user meets it: a real search (the `tiny` preset's whole search,
tests/conftest.py's `chemprot_tiny_search`, or the run directory in DOKTRA_UI_RUN_DIR —
docs/screenshots/ come from the cpu preset's), `mlflow server` on
127.0.0.1 over its mlflow.db, pages loaded in headless Chromium, what they show asserted in the
rendered DOM: the outcome's metric columns on the first view, the ABD trials compared on dev F1,
the registered winners.

Set DOKTRA_UI_SCREENSHOTS=<dir> to also keep the screenshots.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from doktra_tune.tracking import (
    SearchTracker,
    check_tracking_uri,
    default_tracking_uri,
    trial_run,
)
from tests.helpers.search import DATA_ROOT, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--virtual-time-budget=20000",
                  "--window-size=2000,1000"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir() and "DOKTRA_UI_RUN_DIR" not in os.environ,
                       reason=f"no ChemProt data at {DATA_ROOT}"),
]


def _get(url: str, data: dict | None = None) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def _page_text(url: str, screenshot: Path) -> str:
    """Load `url` once: save a screenshot and return the rendered DOM's visible text."""
    assert CHROMIUM is not None
    proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, "--dump-dom", f"--screenshot={screenshot}", url],
                          capture_output=True, text=True, timeout=120)
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", proc.stdout, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    """`mlflow server` over the run directory in DOKTRA_UI_RUN_DIR, else over a copy of the mlflow.db of
    tests/conftest.py's session search (the whole tiny search; a copy, so that the runs the tests here
    log through the server stay out of the store the other tests read)."""
    tmp_path = tmp_path_factory.mktemp("mlflow-ui")
    if os.environ.get("DOKTRA_UI_RUN_DIR"):
        run_dir = Path(os.environ["DOKTRA_UI_RUN_DIR"])
        store = default_tracking_uri(run_dir)
    else:
        run_dir, _, _ = request.getfixturevalue("chemprot_tiny_search")
        shutil.copyfile(run_dir / "mlflow.db", tmp_path / "mlflow.db")
        store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow_cli), "server", "--backend-store-uri", store,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job runner
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("mlflow server did not come up within 90 s")
                time.sleep(0.5)
        experiment = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=doktra-chemprot")
        yield base, experiment["experiment"]["experiment_id"], run_dir
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker: the group we started
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _shots(tmp_path: Path) -> Path:
    shots = Path(os.environ.get("DOKTRA_UI_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    return shots


@needs_chromium
def test_the_first_view_shows_the_outcome(server, tmp_path: Path) -> None:
    base, experiment_id, run_dir = server
    shots = _shots(tmp_path)
    text = _page_text(f"{base}/#/experiments/{experiment_id}/runs", shots / "mlflow_runs_default.png")
    assert "doktra-chemprot" in text and f"search-{run_dir.name}" in text
    assert "chemprot-train" in text  # the Dataset column is filled
    view = json.loads((run_dir / "final" / "outcome.json").read_text())["view"]
    text = _page_text(f"{base}/{view}", shots / "mlflow_runs.png")  # the outcome view the search prints
    assert "shared view" in text and f"search-{run_dir.name}" in text
    for variant in ("doktra", "doktra_no_ctt", "student_ft", "teacher_ctt", "teacher_ft"):
        assert f"test_f1.{variant}" in text  # Table 2's numbers are metric columns of the search run
    search = _get(f"{base}/api/2.0/mlflow/runs/search", {
        "experiment_ids": [experiment_id], "filter": "tags.`doktra.level` = 'search'", "max_results": 1})["runs"][0]
    text = _page_text(f"{base}/#/experiments/{experiment_id}/runs/{search['info']['run_id']}",
                      shots / "mlflow_search_run.png")
    assert "student-DoKTra" in text  # the description: Table 2
    assert "chemprot-train" in text  # the datasets the search used


@needs_chromium
def test_abd_trials_compare_on_dev_f1(server, tmp_path: Path) -> None:
    base, experiment_id, _ = server
    trials = _get(f"{base}/api/2.0/mlflow/runs/search", {
        "experiment_ids": [experiment_id], "max_results": 100,
        "filter": "tags.`doktra.stage` = 'abd' and tags.`doktra.level` = 'trial'"})["runs"]
    ids = [r["info"]["run_id"] for r in trials]
    assert ids and all("epoch" not in {m["key"] for m in r["data"].get("metrics", [])} for r in trials)
    url = (f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
           f"&experiments={urllib.parse.quote(json.dumps([experiment_id]))}")
    text = _page_text(url, _shots(tmp_path) / "mlflow_compare_abd.png")
    assert f"Comparing {len(ids)} Runs" in text
    assert "dev_f1" in text and "dev_ece" in text and "dev_lat" in text


@needs_chromium
def test_the_winners_are_in_the_model_registry(server, tmp_path: Path) -> None:
    base, _, run_dir = server
    text = _page_text(f"{base}/#/models", _shots(tmp_path) / "mlflow_models.png")
    for role in ("teacher", "student", "doktra"):
        assert f"doktra-chemprot-{role}" in text


def test_tracking_through_the_http_server(server, tmp_path: Path) -> None:
    """`mlflow.tracking_uri=http://...`: preflight passes and the same run tree lands on the server."""
    base, experiment_id, _ = server
    check_tracking_uri(base)  # reachable: no error
    tracker = SearchTracker(base, "chemprot", "remote", {"task": "chemprot"}, tmp_path / "remote")
    assert tracker.experiment_id == experiment_id  # the task's experiment is shared
    with trial_run(tracker, tracker.trial_tracking("ctt"), {"beta": 0.3}, {"ray.trial_id": "r0"}) as log:
        log.log_epoch({"dev_f1": 0.7}, step=1)
    tracker.record_outcomes("ctt", {"r0": "completed"})
    tracker.finish()
    found = _get(f"{base}/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [experiment_id],
                  "filter": "tags.`doktra.search_id` = 'remote'", "max_results": 100})
    names = sorted(r["info"]["run_name"] for r in found["runs"])
    assert names == ["ctt", "ctt-r0", "search-remote"]
