"""The node check before the first trial (`doktra_tune.cluster.node_check`, its node side
`doktra_tune.cluster.node_probe`): on a local one-CPU Ray whose workers get their own, nearly empty Hugging
Face cache (HF_HOME in the job's runtime_env, as a node's environment would give it), a good plan
passes in one "[nodes]" line; each kind of missing thing is one line naming the node, what is missing
and the fix. The node-side checks are also called directly (a token written elsewhere, a faked
driver version, an unwritable cache_dir)."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

from doktra_tune.cluster import node_probe
from doktra_tune.cluster import node_check
from doktra_tune.cluster.node_check import NodeCheckError, check_nodes, model_needs
from doktra_tune.cluster.node_probe import (
    NodeNeeds,
    probe,
    run_dir_problem,
    version_problem,
    versions,
    writable_problem,
)
from doktra_tune.errors import ConfigError
from doktra_tune.plan.search_plan import build_plan
from doktra_tune.search import compose_config

SHA = "0123456789abcdef0123456789abcdef01234567"
DATA = {"train.jsonl": '{"text": "a", "label": "CPR:3"}\n' * 3, "dev.jsonl": "{}\n", "test.jsonl": "{}\n{}\n"}


def cache_model(hub: Path, repo_id: str, files: dict[str, str]) -> None:
    """`repo_id` with `files` in the Hugging Face cache `hub`, laid out as `hf download` leaves it."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    for name, text in files.items():
        (repo / "snapshots" / SHA / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / SHA / name).write_text(text)


@pytest.fixture(scope="module")
def node_hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nodes' Hugging Face home: two complete models (one file, two shards) and one without weights."""
    home = tmp_path_factory.mktemp("node_hf_home")
    config = json.dumps({"model_type": "bert"})
    cache_model(home / "hub", "doktra-test/cached", {"config.json": config, "model.safetensors": "w"})
    index = json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    cache_model(home / "hub", "doktra-test/sharded", {
        "config.json": config, "model.safetensors.index.json": index,
        "model-00001-of-00002.safetensors": "w", "model-00002-of-00002.safetensors": "w"})
    cache_model(home / "hub", "doktra-test/config-only", {"config.json": config})
    return home


@pytest.fixture(scope="module")
def node_ray(node_hf_home: Path):
    """A local one-CPU Ray whose workers see HF_HOME=`node_hf_home`, offline, passed explicitly in the
    job's runtime_env (not inherited from this process, whose own cache is another)."""
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HOME": str(node_hf_home), "HF_HUB_OFFLINE": "1"}})
    try:
        yield ray
    finally:
        ray.shutdown()


def make_plan(tmp_path: Path, *overrides: str):
    """A tiny ChemProt plan over its own small data folder, runs_root and cache_dir in `tmp_path`."""
    data = tmp_path / "data" / "chemprot_scibert"
    data.mkdir(parents=True, exist_ok=True)
    for name, text in DATA.items():
        (data / name).write_text(text)
    return build_plan(compose_config([
        "task=chemprot", "preset=tiny", f"runs_root={tmp_path / 'runs'}", f"data_root={tmp_path / 'data'}",
        f"cache_dir={tmp_path / 'cache'}", *overrides]))


def node_ip(ray) -> str:
    return next(node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"])


def failure(plan, **kwargs) -> str:
    with pytest.raises(NodeCheckError) as err:
        check_nodes(plan, **kwargs)
    return str(err.value)


def test_a_good_plan_passes_in_one_line_and_leaves_nothing_behind(node_ray, tmp_path: Path, doktra_lines) -> None:
    model_dir = tmp_path / "local_model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    plan = make_plan(tmp_path, "teacher_model=doktra-test/cached@L1", f"student_model={model_dir}")
    assert model_needs(plan) == ((("teacher_model", "doktra-test/cached"),), (("student_model", str(model_dir)),))
    check_nodes(plan)  # the first check waits for a worker to start
    for other in ("doktra-test/sharded", "minilm@L2", "random:bert:L1-H32"):  # all there / nothing to look up
        start = time.monotonic()
        check_nodes(make_plan(tmp_path, f"teacher_model={other}"))
        assert time.monotonic() - start < 2.0
    lines = doktra_lines()
    assert len(lines) == 4
    assert re.fullmatch(rf"\[nodes\] 1 node\(s\) checked: {re.escape(node_ip(node_ray))} 1 CPU", lines[0])
    assert [p.name for p in plan.run_dir.iterdir()] == []  # the driver's token file is gone again
    assert (tmp_path / "cache").is_dir() and not list((tmp_path / "cache").iterdir())  # probed, probe removed


def test_nodes_without_cpus_for_a_trial_are_left_out(node_ray, tmp_path: Path, doktra_lines) -> None:
    check_nodes(make_plan(tmp_path, "resources.cpus_per_trial=2", "teacher_model=doktra-test/absent"))
    lines = doktra_lines()
    assert len(lines) == 1 and re.fullmatch(
        rf"\[nodes\] 0 node\(s\) checked; left out \(fewer than resources.cpus_per_trial=2 CPUs\): "
        rf"{re.escape(node_ip(node_ray))}", lines[0])


def test_data_that_differ_from_the_drivers_are_one_line(node_ray, tmp_path: Path, monkeypatch) -> None:
    plan = make_plan(tmp_path)
    real = node_check.data_files

    def drivers_copy(data_dir):  # the driver's copy: dev.jsonl one byte longer, and one file more
        return tuple((rel, size + 1 if rel == "dev.jsonl" else size) for rel, size in real(data_dir)) + (("extra.tsv", 9),)

    monkeypatch.setattr(node_check, "data_files", drivers_copy)
    message = failure(plan)
    data = tmp_path / "data" / "chemprot_scibert"
    assert message == (
        f"node {node_ip(node_ray)} ({socket.gethostname()}): 1 data file(s) missing under {data} (extra.tsv); "
        f"data under {data} differ: dev.jsonl is 3 bytes there, 4 on the driver; give every node the driver's copy "
        "at the same path (data_root on storage every node mounts, or copy it there)")


def test_models_missing_from_the_nodes_cache_are_one_line_naming_it(node_ray, node_hf_home: Path, tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "teacher_model=doktra-test/absent", "student_model=doktra-test/config-only")
    message = failure(plan)
    hub = node_hf_home / "hub"  # the node's cache, not this process's
    share = "or share one cache: export HF_HOME=<shared path> before `ray start`"
    assert message == (
        f"node {node_ip(node_ray)} ({socket.gethostname()}): teacher_model: model doktra-test/absent not in its "
        f"Hugging Face cache {hub} (no config.json); run `hf download doktra-test/absent` there, {share} | "
        f"student_model: model doktra-test/config-only not in its Hugging Face cache {hub} (no weights); run "
        f"`hf download doktra-test/config-only` there, {share}")
    assert "\n" not in message


def test_a_runs_root_the_node_does_not_share_is_one_line(node_ray, tmp_path: Path, monkeypatch) -> None:
    plan = make_plan(tmp_path)
    elsewhere = tmp_path / "elsewhere"

    def token_not_shared(run_dir: Path):  # the driver writes its token where the node does not look
        path, token = real(elsewhere)
        return run_dir / path.name, token

    real = node_check.write_token
    monkeypatch.setattr(node_check, "write_token", token_not_shared)
    message = failure(plan)
    assert message.startswith(f"node {node_ip(node_ray)} ({socket.gethostname()}): runs_root is not the driver's "
                              f"there: the file {plan.run_dir}/{node_check.TOKEN_PREFIX}")
    assert message.endswith(" the driver just wrote is missing; mount runs_root at the same path on every node "
                            "(a shared file system)")


def test_the_node_side_checks_of_run_dir_versions_and_cache_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(node_probe, "_TOKEN_WAIT_S", 0.0)
    token_file = tmp_path / "runs" / ".doktra-node-check-abc"
    token_file.parent.mkdir()
    token_file.write_text("abc")
    assert run_dir_problem(str(token_file), "abc") is None
    assert run_dir_problem(str(tmp_path / "other" / token_file.name), "abc") == (
        f"runs_root is not the driver's there: the file {tmp_path}/other/{token_file.name} the driver just wrote is "
        "missing; mount runs_root at the same path on every node (a shared file system)")
    assert "holds another search's token" in run_dir_problem(str(token_file), "def")
    assert list(token_file.parent.iterdir()) == [token_file]  # the write probe removed

    here = versions()
    assert set(here) == {"doktra-tune", "torch", "transformers", "ray"} and version_problem(here) is None
    driver = {**here, "torch": "0.0.1"}
    assert version_problem(driver) == (f"torch {here['torch']} there, not the driver's (0.0.1); give every node the "
                                       "driver's environment (pip install torch==0.0.1)")

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert writable_problem("cache_dir", str(a_file / "cache"), "set cache_dir=<a folder writable on every node>") == (
        f"cache_dir {a_file / 'cache'} is not writable there (Not a directory); set cache_dir=<a folder writable on "
        "every node>")

    needs = NodeNeeds(hub_models=(), model_dirs=(("teacher_model", str(tmp_path / "no_model")),),
                      data_dir=str(tmp_path / "no_data"), data_files=(("train.tsv", 1),), token_path=str(token_file),
                      token="abc", cache_dir=str(tmp_path / "cache"), versions=driver)
    report = probe(needs, advertised_gpus=1)
    assert report.host == socket.gethostname() and report.cuda_devices == 0  # a CPU machine advertising a GPU
    assert [p.split(";")[0] for p in report.problems] == [
        f"teacher_model: no model directory {tmp_path / 'no_model'} (with config.json) there",
        f"no data folder {tmp_path / 'no_data'} there", f"torch {here['torch']} there, not the driver's (0.0.1)"]


def test_incomplete_shards_are_missing_weights(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    index = json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    cache_model(tmp_path / "hub", "doktra-test/sharded", {
        "config.json": "{}", "pytorch_model.bin.index.json": index, "model-00001-of-00002.safetensors": "w"})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert node_probe.hub_model_problem("teacher_model", "doktra-test/sharded") == (
        f"teacher_model: model doktra-test/sharded not in its Hugging Face cache {tmp_path / 'hub'} (no weight shard "
        "model-00002-of-00002.safetensors); run `hf download doktra-test/sharded` there, or share one cache: export "
        "HF_HOME=<shared path> before `ray start`")
    snapshot = tmp_path / "hub" / "models--doktra-test--sharded" / "snapshots" / SHA
    (snapshot / "model-00002-of-00002.safetensors").write_text("w")
    assert node_probe.hub_model_problem("teacher_model", "doktra-test/sharded") is None


def test_node_check_error_keeps_one_line_per_node() -> None:
    err = NodeCheckError("node 10.0.0.1:  model  x missing; fix\n\nnode 10.0.0.2: data\t missing; fix")
    assert isinstance(err, ConfigError) and err.exit_code == 2
    assert str(err) == "node 10.0.0.1: model x missing; fix\nnode 10.0.0.2: data missing; fix"
    assert str(type(err)(f"multirun search 2 (x): {err}")).count("\n") == 1  # as multirun re-raises it


def test_a_trials_model_errors_name_the_host_and_its_cache(node_ray, tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    from doktra_tune.models import _wrap_load_error, resolve_model_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    where = f"host {socket.gethostname()} (Ray node {node_ip(node_ray)}), Hugging Face cache {tmp_path / 'hub'}"
    with pytest.raises(ConfigError) as err:
        resolve_model_source("doktra-test/absent")
    assert str(err.value) == (f"model 'doktra-test/absent' is not in the local Hugging Face cache ({where}) and the hub "
                              "is offline; download it there first (`hf download doktra-test/absent`) or use "
                              "model=minilm / a local directory")
    assert str(_wrap_load_error("doktra-test/absent@L2", OSError("no file model.safetensors\nmore"))) == (
        f"cannot load model 'doktra-test/absent@L2' on {where} (no file model.safetensors); run `hf download "
        "doktra-test/absent` there, or check model= (hub id, local dir, minilm, random:...)")


def test_a_node_that_does_not_answer_in_time_is_one_line(node_ray, tmp_path: Path) -> None:
    message = failure(make_plan(tmp_path), timeout_s=0)
    assert message == (f"node {node_ip(node_ray)} ({socket.gethostname()}): did not answer the node check within "
                       "0 s; check that its raylet is healthy (`ray status`) or remove it from the cluster")
