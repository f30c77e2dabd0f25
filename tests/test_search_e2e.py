"""The nested search end to end on the `tiny` preset: real Ray trials, real ChemProt examples.

CTT (β₁ grid) -> student fine-tuning (lr₁ grid, one value blows the loss up: an errored trial the
search survives) -> ABD (β₂ grid, from the two winners' checkpoints) -> final runs on dev + test.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from doktra_tune.search import compose_config, run_search

DATA_ROOT = Path(os.environ.get("DOKTRA_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(), reason=f"no ChemProt data at {DATA_ROOT}"),
]


def _run_tiny_search(runs_root: Path, *overrides: str) -> tuple[Path, dict, list[str]]:
    """The `tiny` preset on ChemProt with `overrides`, in a local Ray: (run dir, summary, progress lines)."""
    import ray

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"
    cfg = compose_config([
        "task=chemprot", "preset=tiny", f"runs_root={runs_root}", f"data_root={DATA_ROOT}", *overrides,
    ])
    lines: list[str] = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_search(cfg, echo=lines.append)
    finally:
        ray.shutdown()
    return Path(summary["run_dir"]), summary, lines


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory):
    return _run_tiny_search(
        tmp_path_factory.mktemp("runs"),
        "stages.student.grid.lr=[1e-3,1e6]",  # lr=1e6: NaN loss at step 3 -> errored trial
    )


def _winner(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / "stages" / stage / "winner.json").read_text())


def test_every_stage_has_a_winner_with_its_checkpoint(search) -> None:
    run_dir, _, _ = search
    assert run_dir.name.startswith("chemprot-tiny-")
    assert (run_dir / "config.yaml").is_file() and (run_dir / "mlflow.db").is_file()
    for stage in ("ctt", "student", "abd"):
        info = _winner(run_dir, stage)
        meta = json.loads((run_dir / "stages" / stage / "winner" / "doktra_meta.json").read_text())
        assert meta["epoch"] == info["best_epoch"]
        assert {t["trial_id"] for t in info["trials"]} >= {info["trial_id"]}
        assert (run_dir / "ray" / stage / "tuner.pkl").is_file()  # one Tune experiment per stage
    assert (run_dir / "stages" / "ctt" / "teacher_ft" / "doktra_meta.json").is_file()  # β₁ = 0 teacher


def test_ctt_winner_is_best_f1_then_lowest_ece(search) -> None:
    run_dir, _, _ = search
    info = _winner(run_dir, "ctt")
    trials = [t for t in info["trials"] if t["status"] == "completed"]
    assert sorted(t["params"]["beta"] for t in info["trials"]) == [0.0, 0.5]
    best_f1 = max(t["dev_f1"] for t in trials)
    tied = [t for t in trials if t["dev_f1"] == best_f1]
    expected = min(tied, key=lambda t: t["dev_ece"])  # min() keeps the first of equal ECEs
    assert info["trial_id"] == expected["trial_id"]
    assert info["selection"]["use_ece"] is True and info["selection"]["kind"] == "lexicographic"


def test_errored_student_trial_is_recorded_and_the_search_goes_on(search) -> None:
    run_dir, summary, lines = search
    info = _winner(run_dir, "student")
    by_lr = {t["params"]["lr"]: t for t in info["trials"]}
    assert by_lr[1e6]["status"] == "errored" and "non-finite" in by_lr[1e6]["error"]
    assert by_lr[1e-3]["status"] == "completed" and info["params"]["lr"] == 1e-3
    assert any(line.startswith("[student] trial") and "ERRORED" in line for line in lines)
    # e1 is the best epoch of the winner's per-epoch curve
    assert info["e1"] == info["best_epoch"] and 1 <= info["e1"] <= 2
    assert "final" in summary

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    exp = client.get_experiment_by_name("doktra-chemprot")
    runs = client.search_runs([exp.experiment_id], f"tags.`ray.trial_id` = '{by_lr[1e6]['trial_id']}'")
    assert [r.data.tags["doktra.status"] for r in runs] == ["errored"]


def test_abd_trials_start_from_the_stage_winners(search) -> None:
    run_dir, _, _ = search
    meta = json.loads((run_dir / "stages" / "abd" / "winner" / "doktra_meta.json").read_text())
    assert meta["config"]["model"] == str(run_dir / "stages" / "student" / "winner")
    assert meta["config"]["teacher_checkpoint"] == str(run_dir / "stages" / "ctt" / "winner")
    info = _winner(run_dir, "abd")
    assert sorted(t["params"]["beta"] for t in info["trials"]) == [0.0, 0.5]
    assert info["params"]["gamma"] == 0.5


def test_final_runs_cover_every_variant_on_dev_and_test(search) -> None:
    run_dir, _, lines = search
    results = json.loads((run_dir / "final" / "results.json").read_text())
    runs = results["runs"]
    assert sorted(r["variant"] for r in runs) == sorted(
        ["teacher_ctt", "teacher_ft", "student_ft", "doktra", "doktra_no_ctt"])
    for r in runs:
        assert r["status"] == "completed" and r["seed"] == 1
        for key in ("dev_f1", "test_f1", "test_ece"):
            assert 0.0 <= r["metrics"][key] <= 1.0
    by = {r["variant"]: r for r in runs}
    student = _winner(run_dir, "student")
    assert by["student_ft"]["params"]["epochs"] == student["e1"]
    assert by["teacher_ft"]["params"]["beta"] == 0.0
    assert by["doktra_no_ctt"]["params"]["teacher_checkpoint"].endswith("stages/ctt/teacher_ft")
    assert by["doktra"]["metrics"]["test_lat"] >= 0.0
    summary = results["summary"]["doktra"]
    assert summary["n"] == 1 and math.isclose(summary["test_f1"]["mean"], by["doktra"]["metrics"]["test_f1"])
    assert any(line.startswith("[final] doktra ") for line in lines)
    assert any(line.startswith("[abd] end in") and "bytes" in line for line in lines)  # disk usage per stage


def test_synchronous_halving_pauses_real_trials_and_resumes_them_from_their_checkpoints(tmp_path) -> None:
    """The student stage with search.pruner=synchronous_halving: 3 lrs x 3 epochs, factor 2 -> rungs
    at 1, 2, 3 epochs keep 2 then 1 trial. Paused trials go on from their checkpoint (optimizer and
    RNG state included), so the survivor's curve is one uninterrupted run of 3 epochs."""
    from mlflow.tracking import MlflowClient

    run_dir, _, lines = _run_tiny_search(
        tmp_path, "search.stop_after=student",
        "search.pruner=synchronous_halving", "search.reduction_factor=2", "search.grace_period=1",
        "stages.student.epochs=3", "stages.student.grid.lr=[1e-4,1e-3,3e-3]",
    )
    info = _winner(run_dir, "student")
    trials = {t["params"]["lr"]: t for t in info["trials"]}
    epochs = sorted(t["epochs_run"] for t in trials.values())
    assert epochs == [1, 2, 3]  # 6 of the grid's 9 epochs
    assert sorted(t["status"] for t in trials.values()) == ["completed", "pruned", "pruned"]
    survivor = next(t for t in trials.values() if t["epochs_run"] == 3)
    assert info["trial_id"] == survivor["trial_id"]
    (trial_dir,) = (run_dir / "ray" / "student").glob(f"*_{survivor['trial_id']}_*")
    reports = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [(r["training_iteration"], r["epoch"]) for r in reports] == [(1, 1), (2, 2), (3, 3)]
    # the linear LR schedule went on across the pauses: 2/3, 1/3, then 0 of the peak lr
    lr = survivor["params"]["lr"]
    assert [r["lr"] for r in reports] == pytest.approx([lr * 2 / 3, lr / 3, 0.0], abs=lr * 1e-6)
    assert any("paused" in line for line in lines)  # the progress line shows trials waiting at a rung

    client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    exp = client.get_experiment_by_name("doktra-chemprot")
    runs = client.search_runs([exp.experiment_id], f"tags.`ray.trial_id` = '{survivor['trial_id']}'")
    assert len(runs) == 1  # the resumed trial logs into its own run, not a second one
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "dev_f1")]
    assert sorted(steps) == [1, 2, 3]
