"""Trainable adapters (trainables/): config merge, per-epoch reports, artifacts, errors.

Runs the real stage functions on a tiny random BERT outside Ray (the report hook is captured);
the captured reports go through the driver's Tune callback (`TrialTracking`) into a real sqlite
MLflow store, as on a search: the trial itself never opens the store.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from doktra_tune.config import DataConfig, StageConfig
from doktra_tune.errors import ConfigError, NonFiniteLossError
from doktra_tune.run_spec import RunSpec
from tests.helpers.search import DATA_ROOT
from trainables import final_trainable
from trainables.trial import STAGE_OUTPUT, StageTrial

CHEMPROT = DATA_ROOT / "chemprot_scibert"
needs_data = pytest.mark.skipif(not CHEMPROT.is_dir(), reason=f"ChemProt data not found at {CHEMPROT}")


def test_run_spec_applies_the_grid_point_then_the_run_and_labels_it() -> None:
    base = StageConfig(data=DataConfig(task="chemprot", data_dir="/d", max_len=128), model="m", output_dir="",
                       lr=1e-5, epochs=3)
    spec = RunSpec.of_trial({
        "lr": 2e-5,
        "run": RunSpec("abd", {"seed": 7, "lr": 3e-5, "data": {"max_len": 64}},
                       {"variant": "doktra", "fold": 3, "origin": "seed re-run", "teacher": "teacher_ctt-seed7-fold3"},
                       needs=("teacher_ctt-seed7-fold3",)).to_json(),
    })
    assert spec.tags() == {"doktra.variant": "doktra", "doktra.fold": "3", "doktra.origin": "seed re-run",
                           "doktra.teacher": "teacher_ctt-seed7-fold3"}
    cfg = spec.stage_config(base)
    assert cfg.lr == 3e-5  # the run's own overrides win over the grid point's
    assert (cfg.seed, cfg.epochs, cfg.beta, cfg.data.max_len, cfg.data.data_dir) == (7, 3, 0.0, 64, "/d")
    assert base.lr == 1e-5 and base.data.max_len == 128  # base untouched
    # what a finished trial's record (results.json, a resumed search) holds: one flat mapping
    assert spec.record() == {"variant": "doktra", "fold": 3, "origin": "seed re-run", "teacher": "teacher_ctt-seed7-fold3",
                             "stage": "abd", "lr": 3e-5, "seed": 7, "data": {"max_len": 64},
                             "needs": ["teacher_ctt-seed7-fold3"]}
    point = RunSpec.of_trial({"beta": 0.5})  # a search trial: its grid point, no labels
    assert (point.stage, point.tags(), point.stage_config(base).beta) == (None, {}, 0.5)
    with pytest.raises(ConfigError, match=r"lr=-1\.0 must be a number > 0"):
        RunSpec(overrides={"lr": -1.0}).stage_config(base)  # checked like any config: one line
    with pytest.raises(ConfigError, match="unknown StageConfig field"):
        RunSpec(overrides={"gamma": 0.5}).stage_config(base)
    with pytest.raises(ConfigError, match="run labels"):
        RunSpec(labels={"colour": "red"})


def test_final_trainable_rejects_unknown_stage() -> None:
    with pytest.raises(ConfigError, match="run stage 'nope' is unknown"):
        final_trainable({"run": {"stage": "nope"}}, bases={})
    with pytest.raises(ValueError, match="a final run needs a stage"):
        final_trainable({"run": {"overrides": {}}}, bases={})


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def _as_driver(tracker, tracking: dict, trial_id: str, reports: list[dict], ended: str = "complete") -> None:
    """What the driver does with a trial's reports and end (Tune's events on its callback)."""
    from doktra_tune.search.trial_tracking import TrialTracking

    callback, trial = TrialTracking(tracker, tracking), _Trial(trial_id)
    for epoch, metrics in enumerate(reports, start=1):
        callback.on_trial_result(0, [], trial, {"training_iteration": epoch, **metrics})
    getattr(callback, f"on_trial_{ended}")(0, [], trial)


def _base(tmp_path: Path, **kw) -> StageConfig:
    data = DataConfig(task="chemprot", data_dir=str(CHEMPROT), max_len=32, train_limit=32, dev_limit=16,
                      test_limit=16, cache_dir=str(tmp_path / "cache"))
    return StageConfig(data=data, model="random:bert:L1-H32", output_dir="", epochs=2, batch_size=16,
                       lr=1e-3, keep_checkpoints="last", torch_threads=1, **kw)


@needs_data
def test_stage_trial_reports_every_epoch_and_logs_artifacts(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from doktra_tune.stages import train_teacher
    from doktra_tune.tracking import SearchTracker

    monkeypatch.chdir(tmp_path)  # outside Tune the trial directory is the cwd
    tracker = SearchTracker(f"sqlite:///{tmp_path}/mlflow.db", "chemprot", "sid", {"x": 1}, tmp_path)
    tracking = tracker.trial_tracking("ctt", {"ray.trial_id": "t0"})
    reports: list[tuple[dict, list[str]]] = []

    def report(metrics: dict, ckpt: Path | None) -> None:
        assert ckpt is not None and (ckpt / "doktra_meta.json").is_file()
        reports.append((metrics, sorted(p.name for p in ckpt.iterdir())))

    with StageTrial("ctt", RunSpec(overrides={"beta": 0.5, "eval_splits": ["dev", "test"]}), _base(tmp_path), tracking,
                    report=report) as trial:
        result = trial.finish(train_teacher(trial.stage_config, on_epoch=trial.on_epoch))
    assert [int(m["epoch"]) for m, _ in reports] == [1, 2]
    for metrics, files in reports:
        assert 0.0 <= metrics["dev_f1"] <= 1.0 and 0.0 <= metrics["dev_ece"] <= 1.0
        assert "test_f1" in metrics and "config.json" in files
        assert metrics["search_score"] == pytest.approx(metrics["dev_f1"] - 1e-6 * metrics["dev_loss"], abs=1e-12)
    assert len(result.history) == 2
    assert not (tmp_path / STAGE_OUTPUT).exists()  # the stage's own copies are cleaned up
    assert "doktra_run" in reports[0][0] and "doktra_run" not in reports[1][0]  # run info: first report only
    files = Path(tracking["files_dir"]) / "t0"  # the evaluation files, on shared storage for the driver
    assert {"metrics_test.json", "reliability_dev.png"} <= {p.name for p in files.iterdir()}
    _as_driver(tracker, tracking, "t0", [m for m, _ in reports])

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([tracker.experiment_id], "tags.`ray.trial_id` = 't0'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["doktra.status"] == "completed" and run.data.params["beta"] == "0.5"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_f1")] == [1, 2]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    for split in ("dev", "test"):
        assert {f"reliability_{split}.json", f"reliability_{split}.png", f"confusion_{split}.json",
                f"confusion_{split}.png", f"metrics_{split}.json"} <= names
    # the logged metrics_<split>.json is the stage's own last-epoch evaluation
    logged = json.loads(open(client.download_artifacts(run.info.run_id, "metrics_test.json", str(tmp_path))).read())
    assert logged["f1"] == pytest.approx(result.history[-1]["test_f1"])


@needs_data
def test_non_finite_loss_raises_and_marks_the_run_errored(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from doktra_tune.stages import train_student
    from doktra_tune.tracking import SearchTracker

    monkeypatch.chdir(tmp_path)
    tracker = SearchTracker(f"sqlite:///{tmp_path}/mlflow.db", "chemprot", "sid", {"x": 1}, tmp_path)
    tracking = tracker.trial_tracking("student", {"ray.trial_id": "bad"})
    reports: list[dict] = []
    with pytest.raises(NonFiniteLossError):
        with StageTrial("student", RunSpec(overrides={"lr": 1e6}), _base(tmp_path), tracking,
                        report=lambda m, c: reports.append(m)) as trial:
            trial.finish(train_student(trial.stage_config, on_epoch=trial.on_epoch))
    _as_driver(tracker, tracking, "bad", reports, ended="error")
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(
        [tracker.experiment_id], "tags.`ray.trial_id` = 'bad'")[0]
    assert run.data.tags["doktra.status"] == "errored" and run.info.status == "FAILED"


@needs_data
def test_run_evaluation_scores_a_checkpoint_once_as_a_final_run(tmp_path: Path, monkeypatch) -> None:
    """final.protocol=winners: the search's own teacher is scored (not re-trained) and logged like a run."""
    from mlflow.tracking import MlflowClient

    from doktra_tune.stages import evaluate_checkpoint, train_teacher
    from doktra_tune.tracking import SearchTracker
    from trainables.evaluate import run_evaluation

    monkeypatch.chdir(tmp_path)
    base = _base(tmp_path)
    teacher = train_teacher(dataclasses.replace(base, output_dir=str(tmp_path / "t"), beta=0.3))
    tracker = SearchTracker(f"sqlite:///{tmp_path}/mlflow.db", "chemprot", "sid", {"x": 1}, tmp_path)
    tracking = tracker.trial_tracking("final", {"ray.trial_id": "e0"})
    reports: list[dict] = []
    metrics = run_evaluation(
        {"run": RunSpec("evaluate", {"seed": 42, "model": str(teacher.last_checkpoint), "eval_splits": ["dev", "test"]},
                        {"variant": "teacher_ctt", "origin": "search winner"}).to_json()},
        base, tracking, report=lambda m, c: reports.append(m),
    )
    direct = evaluate_checkpoint(teacher.last_checkpoint, base.data, "test")
    assert metrics["test_f1"] == pytest.approx(direct.metrics["f1"]) and metrics["epoch"] == 2.0
    assert len(reports) == 1 and reports[0]["dev_f1"] == metrics["dev_f1"]
    _as_driver(tracker, tracking, "e0", reports)
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(
        [tracker.experiment_id], "tags.`ray.trial_id` = 'e0'")[0]
    assert run.data.tags["doktra.origin"] == "search winner" and run.data.tags["doktra.variant"] == "teacher_ctt"
    assert run.data.params["beta"] == "0.3" and run.data.metrics["test_f1"] == pytest.approx(metrics["test_f1"])
