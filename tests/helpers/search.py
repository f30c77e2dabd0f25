"""Paths, ports and the tiny search the tests share (imported by test modules; the fixtures that wrap
them are in tests/conftest.py)."""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

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


@contextmanager
def search_lines(on_line: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """The lines the search logs (the `doktra_tune` logger, INFO and up) while the block runs, for
    fixtures that outlive one test (`caplog` is per test); `on_line` sees each line as it comes."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())
            if on_line is not None:
                on_line(lines[-1])

    logger, handler = logging.getLogger("doktra_tune"), Collect(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


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
    own = not ray.is_initialized()
    if own:
        ray.init(**LOCAL_RAY)
    try:
        with search_lines() as lines:
            summary = run_search(cfg)
    finally:
        if own:
            ray.shutdown()
    return Path(summary["run_dir"]), summary, lines


# The nested search of tests/integration/test_search_e2e.py (whose tests say what it shows), run once per
# session by the `chemprot_tiny_search` fixture: those tests and tests/integration/test_mlflow_ui.py (a
# copy of its mlflow.db behind `mlflow server`) only read it.
CHEMPROT_TINY_SEARCH = (
    "stages.student.grid.lr=[1e-3,1e6]",  # lr=1e6: NaN loss at step 3 -> errored trial
    "search.max_failures=0",  # a NaN loss fails the same way on every retry
    "search.keep_checkpoints=all",  # the tests read the winners' checkpoints
)
