"""Every Ray node checked before the first trial: one small task pinned to each alive node that can
take a trial, all at once, answers whether the models load offline there (config and weights in its
Hugging Face cache), the data files are there with the driver's sizes, `runs_root` is the driver's
(a file the driver just wrote is visible) and writable, `cache_dir` is writable, and doktra-tune,
torch, transformers and ray are the driver's versions; and how many CUDA devices torch sees there.

A node that fails is one line: its address, what is missing, the fix. The lines of all failing nodes
make one `NodeCheckError` (exit 2), before any trial. The node's side is `doktra_tune.cluster.node_probe`
(standard library only at import, so the check costs a worker start per node, not an import of the
search).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from doktra_tune.cluster.node_probe import NodeNeeds, NodeReport, probe, versions
from doktra_tune.errors import ConfigError, first_line
from doktra_tune.models import MINILM_SPEC, parse_random_spec, split_truncation
from doktra_tune.plan.search_plan import Plan

log = logging.getLogger(__name__)

TOKEN_PREFIX = ".doktra-node-check-"
TIMEOUT_S = 60.0  # a node's worker start (and its runtime environment) included


class NodeCheckError(ConfigError):
    """The failing nodes, one line each (a DoktraError's message is otherwise one line)."""

    def __init__(self, message: str) -> None:
        lines = (" ".join(line.split()) for line in message.splitlines())
        Exception.__init__(self, "\n".join(line for line in lines if line))


def model_needs(plan: Plan) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """(hub models, local model directories) of the plan's teacher and student, as (setting, id or
    absolute path); `minilm` (a package) and `random:` specs (built in code) need nothing of a node."""
    hub: list[tuple[str, str]] = []
    dirs: list[tuple[str, str]] = []
    for setting in ("teacher_model", "student_model"):
        base, _ = split_truncation(getattr(plan.config, setting))
        if base == MINILM_SPEC or parse_random_spec(base) is not None:
            continue
        path = Path(base).expanduser()
        if path.is_dir():
            dirs.append((setting, str(path.resolve())))
        elif base not in (repo_id for _, repo_id in hub):
            hub.append((setting, base))
    return tuple(hub), tuple(dirs)


def data_files(data_dir: str | Path) -> tuple[tuple[str, int], ...]:
    """Every file under `data_dir` on the driver, as (relative path, size); none when it is no folder
    (e.g. a hub dataset's `hf:` format)."""
    root = Path(data_dir).expanduser()
    found: list[tuple[str, int]] = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file():
                found.append((str(path.relative_to(root)), path.stat().st_size))
    return tuple(sorted(found))


def write_token(run_dir: Path) -> tuple[Path, str]:
    """A file with a fresh random token in the run directory (created if missing): (its path, the token)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    path = run_dir / f"{TOKEN_PREFIX}{token}"
    path.write_text(token)
    return path, token


def _absolute(path: str) -> str:
    """`path` made absolute on the driver; a `~` path is left for each node to expand."""
    return path if path.startswith("~") else os.path.abspath(path)


def node_needs(plan: Plan, token_path: Path, token: str) -> NodeNeeds:
    """What every node must have for `plan`, as the driver sees it."""
    hub, dirs = model_needs(plan)
    data_dir = os.path.abspath(os.path.expanduser(plan.data.data_dir))
    return NodeNeeds(hub_models=hub, model_dirs=dirs, data_dir=data_dir, data_files=data_files(data_dir),
                     token_path=str(token_path), token=token, cache_dir=_absolute(plan.data.cache_dir),
                     versions=versions())


def trial_nodes(plan: Plan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(alive nodes that can take a trial, alive nodes with fewer CPUs than a trial asks for)."""
    cpus = plan.config.resources.cpus_per_trial
    alive = [node for node in ray.nodes() if node.get("Alive")]
    fit = [node for node in alive if float(node.get("Resources", {}).get("CPU", 0)) >= cpus]
    return fit, [node for node in alive if node not in fit]


def _address(node: dict[str, Any]) -> str:
    return str(node.get("NodeManagerAddress") or node.get("NodeID", "?")[:12])


def _named(node: dict[str, Any], host: str | None = None) -> str:
    """"node <address> (<host name>)", as a failing node's line starts."""
    host = host or node.get("NodeManagerHostname")
    return f"node {_address(node)} ({host})" if host else f"node {_address(node)}"


def _counts(node: dict[str, Any], report: NodeReport) -> str:
    res = node.get("Resources", {})
    said = f"{_address(node)} {res.get('CPU', 0):g} CPU"
    gpus = float(res.get("GPU", 0))
    if gpus:
        said += f" {gpus:g} GPU"
        if report.cuda_devices is not None and report.cuda_devices < gpus:
            said += f" (torch sees {report.cuda_devices} CUDA device(s))"
    return said


class NodeCheck:
    """The node check under way: one task per node that can take a trial, started by
    `start_node_check`; `finish` waits for the answers (the workers start meanwhile, so the driver can
    set up its tracking in between)."""

    def __init__(self, plan: Plan) -> None:
        self.cpus = plan.config.resources.cpus_per_trial
        self.nodes, self.skipped = trial_nodes(plan)
        self.token_path, token = write_token(plan.run_dir)
        self.refs: dict[Any, dict[str, Any]] = {}
        try:
            needs = node_needs(plan, self.token_path, token)
            # On a GPU node the probe asks torch for its CUDA devices: torch counts them through NVML
            # without initialising CUDA, so the worker can host a trial with its own CUDA_VISIBLE_DEVICES.
            task = ray.remote(num_cpus=0, max_retries=0)(probe)
            for node in self.nodes:
                where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                gpus = float(node.get("Resources", {}).get("GPU", 0))
                self.refs[task.options(name="doktra node check", scheduling_strategy=where).remote(needs, gpus)] = node
        except BaseException:
            self.token_path.unlink(missing_ok=True)
            raise

    def finish(self, *, timeout_s: float = TIMEOUT_S) -> None:
        """Wait up to `timeout_s` for every node's answer. On success logs one "[nodes] ..." line;
        otherwise raises NodeCheckError, one line per failing node (a node that did not answer is one)."""
        try:
            refs = list(self.refs)
            done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
            for ref in pending:
                ray.cancel(ref, force=True)
        finally:
            self.token_path.unlink(missing_ok=True)
        failures: list[str] = []
        reports: list[tuple[dict[str, Any], NodeReport]] = []
        for ref in done:
            node = self.refs[ref]
            try:
                report = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - e.g. a node whose doktra-tune lacks the probe
                cause = getattr(err, "cause", None) or err  # a RayTaskError's first line names only the task
                failures.append(f"{_named(node)}: the node check failed there ({type(cause).__name__}: "
                                f"{first_line(cause, 200)}); "
                                "give every node the driver's environment (the same doktra-tune, torch, "
                                "transformers and ray)")
                continue
            if report.problems:
                failures.append(f"{_named(node, report.host)}: {' | '.join(report.problems)}")
            reports.append((node, report))
        failures += [f"{_named(self.refs[ref])}: did not answer the node check within {timeout_s:g} s; "
                     "check that its raylet is healthy (`ray status`) or remove it from the cluster" for ref in pending]
        if failures:
            raise NodeCheckError("\n".join(sorted(failures)))
        reports.sort(key=lambda pair: _address(pair[0]))
        line = f"[nodes] {len(reports)} node(s) checked"
        if reports:
            line += ": " + ", ".join(_counts(node, report) for node, report in reports[:8])
            line += f" and {len(reports) - 8} more" if len(reports) > 8 else ""
        if self.skipped:
            line += (f"; left out (fewer than resources.cpus_per_trial={self.cpus:g} CPUs): "
                     + ", ".join(sorted(_address(node) for node in self.skipped)))
        log.info(line)


def start_node_check(plan: Plan) -> NodeCheck:
    """Start checking every alive node that can take a trial of `plan` (Ray connected); `finish` it
    before the first trial."""
    return NodeCheck(plan)


def check_nodes(plan: Plan, *, timeout_s: float = TIMEOUT_S) -> None:
    """Check every alive node that can take a trial of `plan` (Ray connected) and wait for the answers:
    one "[nodes] ..." line on success, else NodeCheckError (one line per failing node)."""
    start_node_check(plan).finish(timeout_s=timeout_s)
