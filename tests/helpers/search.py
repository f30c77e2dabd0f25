"""Paths, ports and the tiny search the tests share (imported by test modules; the fixtures that wrap
them are in tests/conftest.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

# No HF_*_OFFLINE here: the tests run in the environment a user's shell has. A test that needs the hub
# switched off (a cache-miss error, the trials' offline reads) sets it itself and says why.

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = Path(os.environ.get("DOKTRA_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))  # the real shared data

LOCAL_RAY = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}  # the tests' local Ray


def free_port() -> int:
    """A local TCP port nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env() -> dict[str, str]:
    """This process's environment for a CLI subprocess: DOKTRA_DATA_ROOT set, this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["DOKTRA_DATA_ROOT"] = str(DATA_ROOT)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_tiny_search(runs_root: Path, *overrides: str, task: str = "chemprot",
                    data_root: Path = DATA_ROOT) -> tuple[Path, dict, list[str]]:
    """The `tiny` preset on `task` with `overrides`, in a local Ray: (run dir, summary, progress lines).
    The module's Ray when the `local_ray` fixture started one (the search leaves it running), else one
    of its own."""
    import ray

    from doktra_tune.search import compose_config, run_search

    cfg = compose_config([
        f"task={task}", "preset=tiny", f"runs_root={runs_root}", f"data_root={data_root}", *overrides,
    ])
    lines: list[str] = []
    own = not ray.is_initialized()
    if own:
        ray.init(**LOCAL_RAY)
    try:
        summary = run_search(cfg, echo=lines.append)
    finally:
        if own:
            ray.shutdown()
    return Path(summary["run_dir"]), summary, lines


# The nested search of tests/integration/test_search_e2e.py (whose tests say what it shows), run once per
# session by the `chemprot_tiny_search` fixture: those tests and tests/integration/test_mlflow_ui.py (a
# copy of its mlflow.db behind `mlflow server`) only read it.
SHARED_SEARCH_GROUP = "chemprot_tiny_search"  # their pytest-xdist group: one worker runs the search once
CHEMPROT_TINY_SEARCH = (
    "stages.student.grid.lr=[1e-3,1e6]",  # lr=1e6: NaN loss at step 3 -> errored trial
    "search.max_failures=0",  # a NaN loss fails the same way on every retry
    "search.keep_checkpoints=all",  # the tests read the winners' checkpoints
)
