"""Paths: every path-like setting absolute once, at plan time (trials run in directories of their own);
what the run directory refers to inside itself stored relative to it, so a moved run directory
resumes; object storage as runs_root and Ray Client refused in one line, creating nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from doktra_tune.errors import ConfigError
from doktra_tune.plan.paths import (
    absolute_model_spec,
    absolute_tracking_uri,
    run_absolute,
    run_relative,
)
from doktra_tune.plan.search_plan import build_plan
from doktra_tune.search import compose_config
from tests.helpers.search import DATA_ROOT, cli_env

needs_chemprot = pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(),
                                    reason=f"no ChemProt data at {DATA_ROOT}")


def _plan(*overrides: str):
    return build_plan(compose_config(["task=chemprot", "preset=tiny", *overrides]))


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


# ----------------------------------------------------------------------------- absolute at plan time


def test_relative_settings_are_absolute_in_the_plan_and_its_raw_config(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "work"
    _model_dir(cwd / "models" / "teacher")
    monkeypatch.chdir(cwd)
    plan = _plan("runs_root=runs", "data_root=../data", "cache_dir=cache", "teacher_model=./models/teacher",
                 "student_model=models/teacher@L1", f"stages.ctt.search_space={os.path.relpath(_grid(tmp_path))}",
                 "mlflow.tracking_uri=sqlite:///store/mlflow.db")
    assert plan.run_dir == cwd / "runs" / plan.search_id
    assert plan.data_root == tmp_path / "data"
    assert plan.data.data_dir == str(tmp_path / "data" / "chemprot_scibert")
    assert plan.data.cache_dir == str(cwd / "cache")
    assert plan.config.teacher_model == str(cwd / "models" / "teacher")
    assert plan.config.student_model == f"{cwd / 'models' / 'teacher'}@L1"
    assert plan.spaces["ctt"].source == tmp_path / "ctt.yaml"
    assert plan.config.tracking_uri == f"sqlite:///{cwd}/store/mlflow.db"
    # what config.yaml, the MLflow params and the trials get
    raw = plan.raw
    assert (raw["runs_root"], raw["data_root"], raw["cache_dir"]) == (str(cwd / "runs"), str(tmp_path / "data"),
                                                                      str(cwd / "cache"))
    assert raw["teacher_model"] == str(cwd / "models" / "teacher")
    assert raw["stages"]["ctt"]["search_space"] == str(tmp_path / "ctt.yaml")
    assert raw["mlflow"]["tracking_uri"] == f"sqlite:///{cwd}/store/mlflow.db"
    assert build_plan(raw).raw == raw  # made absolute once: planning the plan's own config changes nothing


def _grid(tmp_path: Path) -> Path:
    grid = tmp_path / "ctt.yaml"
    grid.write_text("stage: ctt\nparams:\n  beta: [0.0, 0.5]\n  lr: [1.0e-3]\n")
    return grid


def test_data_root_from_the_environment_and_home_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOKTRA_DATA_ROOT", "shared/data")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    plan = _plan("runs_root='~/runs'")
    assert (plan.data_root, plan.data_root_origin) == (tmp_path / "shared" / "data", "DOKTRA_DATA_ROOT")
    assert plan.run_dir == tmp_path / "home" / "runs" / plan.search_id
    # the cache keeps its ~: each node caches in its own home
    assert plan.data.cache_dir == "~/.cache/doktra_tune" and _plan("cache_dir='~/c'").data.cache_dir == "~/c"


def test_model_specs_that_are_no_paths_stay_as_they_are(tmp_path: Path) -> None:
    for spec in ("minilm", "minilm@L2", "random:bert:L1-H32", "dmis-lab/biobert-base-cased-v1.1", "roberta-large"):
        assert absolute_model_spec(spec, tmp_path) == spec
    _model_dir(tmp_path / "org" / "name")  # a hub-id spelling that is a directory here is read as that directory
    assert absolute_model_spec("org/name", tmp_path) == str(tmp_path / "org" / "name")
    assert absolute_model_spec("../m@L3", tmp_path / "x") == f"{tmp_path / 'm'}@L3"
    for uri in ("http://127.0.0.1:5000", "databricks", "postgresql://u@h/db", "sqlite:////abs/m.db"):
        assert absolute_tracking_uri(uri, tmp_path) == uri
    assert absolute_tracking_uri("mlruns", tmp_path) == str(tmp_path / "mlruns")
    assert absolute_tracking_uri("file:mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()


def test_the_search_id_is_the_same_for_relative_and_absolute_spellings(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _model_dir(tmp_path / "models" / "t")
    grid = _grid(tmp_path)
    monkeypatch.chdir(tmp_path)
    relative = _plan("runs_root=runs", "data_root=data", "cache_dir=c", "teacher_model=./models/t",
                     "stages.ctt.search_space=ctt.yaml")
    absolute = _plan(f"runs_root={tmp_path / 'runs'}", f"data_root={tmp_path / 'data'}", f"cache_dir={tmp_path / 'c'}",
                     f"teacher_model={tmp_path / 'models' / 't'}", f"stages.ctt.search_space={grid}")
    assert relative.search_id == absolute.search_id and relative.run_dir == absolute.run_dir
    here = _plan("runs_root=runs", "data_root=data", "cache_dir=c").search_id
    monkeypatch.chdir(tmp_path / "models")  # where things run is not part of the id, whatever the cwd
    assert _plan("runs_root=runs", "data_root=data", "cache_dir=c").search_id == here == _plan().search_id


# ----------------------------------------------------------------------------- refused in one line


@pytest.mark.parametrize("runs_root", ["s3://bucket/runs", "gs://bucket/runs", "abfs://c@acct/runs"])
def test_object_storage_runs_root_is_one_line(runs_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        _plan(f"runs_root={runs_root}")
    assert str(info.value) == (
        f"runs_root={runs_root} is object storage, which doktra-tune does not support yet; mount it (or use a "
        "shared file system such as NFS) and set runs_root=<its path>"
    )
    assert list(tmp_path.iterdir()) == []
    assert _plan(f"runs_root=file://{tmp_path}/runs").run_dir.parent == tmp_path / "runs"  # a file URI is its path


def test_ray_client_is_refused_with_the_ray_jobs_command() -> None:
    with pytest.raises(ConfigError) as info:
        _plan("ray.address=ray://head.example:10001")
    assert str(info.value) == (
        "ray.address=ray://head.example:10001 is Ray Client, which doktra-tune does not run on (Tune needs its "
        "driver on the cluster); submit the search as a Ray job instead: ray job submit --address "
        "http://head.example:8265 --working-dir . -- python -m doktra_tune.search <your overrides> ray.address=auto"
    )


def test_ray_client_from_ray_address_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from doktra_tune.plan.preflight import check_ray_address

    monkeypatch.setenv("RAY_ADDRESS", "ray://10.0.0.1:10001")
    with pytest.raises(ConfigError, match=r"^RAY_ADDRESS=ray://10.0.0.1:10001 is Ray Client.*ray job submit "
                                          r"--address http://10.0.0.1:8265 --working-dir \. --"):
        check_ray_address("auto", 1.0)
    with pytest.raises(ConfigError, match=r"ray.address='http://h:8265' is not auto or <host>:<port>"):
        check_ray_address("http://h:8265", 1.0)


@needs_chemprot
@pytest.mark.parametrize("override", ["runs_root=s3://bucket/runs", "runs_root=gs://bucket/runs",
                                      "ray.address=ray://127.0.0.1:10001"])
def test_the_cli_exits_2_with_the_one_line_and_creates_nothing(override: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "doktra_tune.search", "preset=tiny", override], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=240)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {override} is ")
    assert ("ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m doktra_tune.search"
            in lines[0]) if override.startswith("ray.") else "is object storage" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no ./s3:/bucket/runs, no runs/


# ----------------------------------------------------------------------------- relative inside the run directory


def test_run_dir_json_stores_paths_relative_and_reads_them_absolute(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "s"
    data = {"checkpoint": str(run_dir / "stages" / "ctt" / "winner"), "model": "minilm", "error": "",
            "baseline": {"checkpoint": str(run_dir / "stages/ctt/teacher_ft")}, "outside": str(tmp_path / "x"),
            "runs": [{"params": {"teacher_checkpoint": str(run_dir / "final/models/teacher_ctt-seed1")}}]}
    stored = run_relative(data, run_dir)
    assert stored["checkpoint"] == "stages/ctt/winner" and stored["baseline"]["checkpoint"] == "stages/ctt/teacher_ft"
    assert stored["runs"][0]["params"]["teacher_checkpoint"] == "final/models/teacher_ctt-seed1"
    assert stored["outside"] == str(tmp_path / "x") and stored["model"] == "minilm"
    assert run_absolute(stored, run_dir) == data
    moved = tmp_path / "mnt" / "s"
    assert run_absolute(stored, moved)["checkpoint"] == str(moved / "stages" / "ctt" / "winner")


def test_winner_json_stores_a_relative_checkpoint_and_read_winner_resolves_it(tmp_path: Path) -> None:
    from doktra_tune.search.winners import read_winner, write_winner
    from doktra_tune.selection import SelectionRule
    from doktra_tune.trial_record import TrialRecord

    run_dir = tmp_path / "runs" / "s"
    trial_ckpt = run_dir / "ray" / "ctt" / "trial_1" / "checkpoint_000001"
    trial_ckpt.mkdir(parents=True)
    (trial_ckpt / "config.json").write_text("{}")
    record = TrialRecord(trial_id="t1", status="completed", params={"beta": 0.5}, epochs_run=1, kept_epoch=1,
                         kept_metrics={"dev_f1": 0.5}, last_metrics={"dev_f1": 0.5}, checkpoint=str(trial_ckpt))
    stage_dir = run_dir / "stages" / "ctt"
    baseline = {"trial_id": "t0", "checkpoint": str(stage_dir / "teacher_ft")}
    info = write_winner(stage_dir, "ctt", record, [record], SelectionRule(), {"baseline": baseline})
    assert info["checkpoint"] == str(stage_dir / "winner")  # the caller gets absolute paths
    on_disk = json.loads((stage_dir / "winner.json").read_text())
    assert on_disk["checkpoint"] == "stages/ctt/winner" and on_disk["baseline"]["checkpoint"] == "stages/ctt/teacher_ft"
    assert read_winner(stage_dir) == info
    moved = tmp_path / "elsewhere" / "s"
    shutil.move(run_dir, moved)
    again = read_winner(moved / "stages" / "ctt")
    assert again is not None and again["checkpoint"] == str(moved / "stages" / "ctt" / "winner")
    assert (Path(again["checkpoint"]) / "config.json").is_file()
    assert again["baseline"]["checkpoint"] == str(moved / "stages" / "ctt" / "teacher_ft")


# ----------------------------------------------------------------------------- a moved run directory resumes


@needs_chemprot
@pytest.mark.slow
def test_a_moved_run_directory_resumes_with_relative_settings(tmp_path: Path) -> None:
    """A tiny search given relative runs_root, data_root and cache_dir from its own cwd (its trials run in
    directories of their own) stops after the student; its run directory is moved to another runs_root;
    the same search there finds CTT and the student finished and runs ABD from the moved winners."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    data = os.path.relpath(DATA_ROOT, cwd)
    common = [sys.executable, "-m", "doktra_tune.search", "task=chemprot", "preset=tiny", f"data_root={data}",
              "cache_dir=cache", "search_id=moved", "stages.abd.grid.beta=[0.0]"]
    first = subprocess.run([*common, "runs_root=runs", "search.stop_after=student"], cwd=cwd, env=cli_env(),
                           capture_output=True, text=True, timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    old = cwd / "runs" / "moved"
    assert json.loads((old / "stages" / "student" / "winner.json").read_text())["checkpoint"] == "stages/student/winner"
    assert (cwd / "cache").is_dir()  # the trials' cache is the driver's cache_dir, not one per trial directory
    assert not list((old / "ray").glob("*/*/cache"))

    new_root = tmp_path / "mnt" / "shared-runs"
    new_root.mkdir(parents=True)
    shutil.move(old, new_root / "moved")
    second = subprocess.run([*common, f"runs_root={new_root}", "search.stop_after=abd"], cwd=cwd, env=cli_env(),
                            capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    out = second.stdout
    assert "[ctt] finished earlier" in out and "[student] finished earlier" in out, out[-3000:]
    assert "[abd] start" in out
    moved = new_root / "moved"
    abd = json.loads((moved / "stages" / "abd" / "winner.json").read_text())
    assert abd["checkpoint"] == "stages/abd/winner" and (moved / "stages" / "abd" / "winner" / "config.json").is_file()
    assert [t["status"] for t in abd["trials"]] == ["completed"]
    assert not old.exists()  # nothing wrote to where the run directory was


def test_the_run_directorys_mlflow_store_follows_it_when_moved(tmp_path: Path) -> None:
    """MLflow records the store's artifact root as an absolute URI: after a move, `relocate_artifacts`
    points the experiment and its runs at the moved `mlartifacts/`, so the next run of the search (a
    fresh process) writes its artifacts there (the old directory is not created again) and finds the
    old ones."""
    from mlflow.tracking import MlflowClient

    from doktra_tune.tracking.relocate import artifact_root, relocate_artifacts

    old = tmp_path / "runs" / "s"
    old.mkdir(parents=True)
    client = MlflowClient(f"sqlite:///{old / 'mlflow.db'}")
    exp = client.create_experiment("doktra-chemprot", artifact_location=artifact_root(old / "mlflow.db"))
    run = client.create_run(exp).info.run_id
    client.log_dict(run, {"a": 1}, "before.json")
    assert relocate_artifacts(old / "mlflow.db") == 0  # nothing moved

    new = tmp_path / "mnt" / "s"
    shutil.move(old.parent, new.parent)
    rerun = f"""
import json, sys
from mlflow.tracking import MlflowClient
from doktra_tune.tracking.relocate import relocate_artifacts
changed = relocate_artifacts({str(new / 'mlflow.db')!r})
client = MlflowClient({f"sqlite:///{new / 'mlflow.db'}"!r})
client.log_dict({run!r}, {{"b": 2}}, "after.json")
second = client.create_run({exp!r}).info.run_id
client.log_dict(second, {{"c": 3}}, "new.json")
print(json.dumps({{"changed": changed, "second": second, "location": client.get_experiment({exp!r}).artifact_location,
                  "uri": client.get_run({run!r}).info.artifact_uri,
                  "listed": sorted(a.path for a in client.list_artifacts({run!r}))}}))
"""
    proc = subprocess.run([sys.executable, "-c", rerun], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["changed"] >= 2  # the experiment and its run
    assert got["location"] == (new / "mlartifacts").as_uri()
    assert got["uri"] == (new / "mlartifacts" / run / "artifacts").as_uri()
    assert got["listed"] == ["after.json", "before.json"]
    assert (new / "mlartifacts" / got["second"] / "artifacts" / "new.json").is_file()
    assert not old.exists()
    assert relocate_artifacts(new / "mlflow.db") == 0  # once
