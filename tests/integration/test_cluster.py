"""The README's cluster recipe on this machine: `ray start --head`, the search with `ray.address=auto`,
then that cluster's own processes stopped. The search on a cluster of hosts (a CPU-only head, GPU
workers, each with its own /tmp, HOME and Hugging Face cache) is tests/integration/test_cluster_hosts.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers.search import DATA_ROOT, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(), reason=f"no ChemProt data at {DATA_ROOT}"),
]


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line mentions `marker` (our cluster's temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_the_readme_cluster_recipe(tmp_path: Path) -> None:
    """README "On a Ray cluster": `ray start --head`, the search with ray.address=auto, stop the
    cluster. Only the cluster this test started is stopped (its processes, found by its temp dir)."""
    import signal
    import subprocess
    import sys
    import time

    port = free_port()
    temp_dir = Path("/tmp") / f"doktra-ray-{os.getpid()}"  # short: Ray's socket paths must fit 107 bytes
    ray_cli = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "DOKTRA_DATA_ROOT": str(DATA_ROOT)}
    env.pop("RAY_ADDRESS", None)
    start = subprocess.run([str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2",
                            f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
    # `auto` finds a cluster through RAY_ADDRESS, else the newest running one: name ours, so that
    # another Ray session on this machine (a developer's search) cannot answer instead
    env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    try:
        search = subprocess.run(
            [sys.executable, "-m", "doktra_tune.search", "task=chemprot", "preset=tiny", "ray.address=auto",
             f"runs_root={tmp_path / 'runs'}", "search_id=cluster", "search.stop_after=ctt"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )
        assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-3000:]
        assert "on auto" in search.stdout
        info = json.loads((tmp_path / "runs" / "cluster" / "stages" / "ctt" / "winner.json").read_text())
        assert [t["status"] for t in info["trials"]] == ["completed", "completed"]
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # our cluster only, never another Ray on this machine
            for pid in _processes_with(str(temp_dir)):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + 10
            while _processes_with(str(temp_dir)) and time.monotonic() < deadline:
                time.sleep(0.2)
    assert not _processes_with(str(temp_dir))
