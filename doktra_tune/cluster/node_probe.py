"""One node's side of the search's node check (`doktra_tune.cluster.node_check`): does this host have
what a trial needs? The driver sends `NodeNeeds`; `probe` answers with a `NodeReport` whose problems
are each one "<what is missing>; <fix>".

This module runs in a fresh Ray worker on every node at every search start, so it imports only the
standard library at import time (not the search, not torch): `huggingface_hub` only when a hub model
is to be looked up, `torch` only when the node advertises GPUs.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

VERSIONED = ("doktra-tune", "torch", "transformers", "ray")  # must equal the driver's on every node
SHARE_CACHE = "or share one cache: export HF_HOME=<shared path> before `ray start`"
# weights transformers loads: one file, or an index naming its shards
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKEN_WAIT_S = 2.0  # a file just written on a network file system may take a moment to show


@dataclass(frozen=True)
class NodeNeeds:
    """What every node must have, as the driver sees it (absolute paths; `~` expands on the node)."""

    hub_models: tuple[tuple[str, str], ...]  # (setting, hub id): config and weights in the HF cache
    model_dirs: tuple[tuple[str, str], ...]  # (setting, local directory): there, with config.json
    data_dir: str
    data_files: tuple[tuple[str, int], ...]  # (path relative to data_dir, size in bytes) on the driver
    token_path: str  # a file the driver just wrote in the run directory
    token: str  # its content
    cache_dir: str
    versions: dict[str, str]  # VERSIONED -> the driver's version


@dataclass(frozen=True)
class NodeReport:
    host: str
    problems: tuple[str, ...]  # each one "<what is missing>; <fix>"
    cuda_devices: int | None  # CUDA devices torch sees there; None when the node advertises no GPU
    seconds: float  # how long the probe took there


def versions() -> dict[str, str]:
    """The installed versions of VERSIONED ("not installed" for a missing one)."""
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "doktra-tune":  # importable without being installed (e.g. a Ray Jobs working_dir)
                import doktra_tune

                found[name] = doktra_tune.__version__
            else:
                found[name] = "not installed"
    return found


def probe(needs: NodeNeeds, advertised_gpus: float = 0.0) -> NodeReport:
    """Check `needs` on this host; `advertised_gpus`: the node's Ray GPU resource."""
    start = time.monotonic()
    problems = [
        *(p for setting, repo_id in needs.hub_models if (p := hub_model_problem(setting, repo_id))),
        *(p for setting, path in needs.model_dirs if (p := model_dir_problem(setting, path))),
        *filter(None, (data_problem(needs.data_dir, needs.data_files),
                       run_dir_problem(needs.token_path, needs.token),
                       writable_problem("cache_dir", needs.cache_dir,
                                        "set cache_dir=<a folder writable on every node>"),
                       version_problem(needs.versions))),
    ]
    cuda = cuda_devices() if advertised_gpus > 0 else None
    return NodeReport(socket.gethostname(), tuple(problems), cuda, time.monotonic() - start)


def hub_model_problem(setting: str, repo_id: str) -> str | None:
    """None when hub model `repo_id`'s config and weights are in this host's Hugging Face cache."""
    from huggingface_hub import constants, try_to_load_from_cache

    def cached(name: str) -> str | None:
        path = try_to_load_from_cache(repo_id, name)
        return path if isinstance(path, str) else None

    missing = None
    if cached("config.json") is None:
        missing = "config.json"
    elif not any(cached(name) for name in _WEIGHTS):
        missing = "weights"
        for index in _WEIGHT_INDEXES:
            index_path = cached(index)
            if index_path is None:
                continue
            try:
                shards = sorted(set(json.loads(Path(index_path).read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            absent = [shard for shard in shards if cached(shard) is None]
            if not absent:
                missing = None
                break
            missing = f"weight shard {absent[0]}"
    if missing is None:
        return None
    return (f"{setting}: model {repo_id} not in its Hugging Face cache {constants.HF_HUB_CACHE} (no {missing}); "
            f"run `hf download {repo_id}` there, {SHARE_CACHE}")


def model_dir_problem(setting: str, path: str) -> str | None:
    """None when the local model directory `path` is there, with its config.json."""
    if (Path(path).expanduser() / "config.json").is_file():
        return None
    return (f"{setting}: no model directory {path} (with config.json) there; copy it to the same path on every "
            "node, or put it on storage every node mounts")


def data_problem(data_dir: str, files: tuple[tuple[str, int], ...]) -> str | None:
    """None when every one of the driver's data `files` is under `data_dir` with the same size."""
    fix = ("give every node the driver's copy at the same path (data_root on storage every node mounts, "
           "or copy it there)")
    root = Path(data_dir).expanduser()
    if files and not root.is_dir():
        return f"no data folder {root} there; {fix}"
    missing: list[str] = []
    differ: list[str] = []
    for rel, size in files:
        try:
            there = (root / rel).stat().st_size
        except OSError:
            missing.append(rel)
            continue
        if there != size:
            differ.append(f"{rel} is {there} bytes there, {size} on the driver")
    if not missing and not differ:
        return None
    said = []
    if missing:
        said.append(f"{len(missing)} data file(s) missing under {root} ({', '.join(missing[:3])}"
                    f"{', ...' if len(missing) > 3 else ''})")
    if differ:
        said.append(f"data under {root} differ: {', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''}")
    return f"{'; '.join(said)}; {fix}"


def run_dir_problem(token_path: str, token: str) -> str | None:
    """None when the driver's token file is visible here with its content, and its folder writable."""
    path = Path(token_path)
    seen = _read_token(path)
    deadline = time.monotonic() + _TOKEN_WAIT_S
    while seen != token and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = _read_token(path)
    if seen != token:
        state = "is missing" if seen is None else "holds another search's token"
        return (f"runs_root is not the driver's there: the file {path} the driver just wrote {state}; mount runs_root "
                "at the same path on every node (a shared file system)")
    return writable_problem("runs_root", str(path.parent), "make runs_root writable there for the user Ray runs as")


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def writable_problem(setting: str, folder: str, fix: str) -> str | None:
    """None when a file can be written to and removed from `folder` here (created if missing)."""
    path = Path(folder).expanduser()
    probe_file = path / f".doktra-node-probe-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_file.write_text("probe")
        probe_file.unlink()
    except OSError as err:
        return f"{setting} {path} is not writable there ({err.strerror or type(err).__name__}); {fix}"
    return None


def version_problem(driver: dict[str, str]) -> str | None:
    """None when the VERSIONED packages here are the driver's versions."""
    here = versions()
    differ = [name for name in VERSIONED if name in driver and here.get(name) != driver[name]]
    if not differ:
        return None
    there = ", ".join(f"{name} {here.get(name)}" for name in differ)
    wanted = " ".join(f"{name}=={driver[name]}" for name in differ)
    return (f"{there} there, not the driver's ({', '.join(driver[name] for name in differ)}); give every node the "
            f"driver's environment (pip install {wanted})")


def cuda_devices() -> int:
    """CUDA devices torch sees here (0 on a CPU build or a machine without a GPU)."""
    import torch

    return int(torch.cuda.device_count())
