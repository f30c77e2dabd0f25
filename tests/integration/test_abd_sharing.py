"""The ABD grid's shared activation-boundary prefix, end to end with real Ray trials (issue 10): the
same search with and without sharing gives every grid point the same per-epoch dev metrics and the
final runs the same test metrics, for fewer epochs; each grid point is still one trial (Tune,
Optuna, MLflow) with its whole curve, the trunk's epochs marked shared; a rerun never recomputes a
published trunk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.search import DATA_ROOT, run_tiny_search

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(), reason=f"no ChemProt data at {DATA_ROOT}"),
    pytest.mark.usefixtures("local_ray"),  # one local Ray for the module's searches (tests/conftest.py)
]
GRID = ["stages.abd.epochs=4", "stages.abd.grid.beta=[0.0,0.5]", "stages.abd.grid.gamma=[0.5,0.75]",
        "stages.abd.grid.lr=[1e-3]", "search.keep_checkpoints=all", "final.variants=[doktra]"]


def _curves(run_dir: Path) -> dict[tuple, list[dict]]:
    """(beta, gamma) -> the per-epoch dev metrics Tune recorded for that grid point."""
    out = {}
    for trial in json.loads((run_dir / "stages" / "abd" / "winner.json").read_text())["trials"]:
        (trial_dir,) = (run_dir / "ray" / "abd").glob(f"*_{trial['trial_id']}_*")
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        out[(trial["params"]["beta"], trial["params"]["gamma"])] = [
            {k: v for k, v in row.items() if k.startswith("dev_") or k in ("epoch", "phase", "train_loss")}
            for row in rows]
    return out


@pytest.fixture(scope="module")
def searches(tmp_path_factory, local_ray):
    shared = run_tiny_search(tmp_path_factory.mktemp("shared"), *GRID, "search_id=shared")
    alone = run_tiny_search(tmp_path_factory.mktemp("alone"), *GRID, "stages.abd.share_prefix=false",
                             "search_id=alone")
    return shared, alone


def test_every_grid_point_and_the_final_runs_are_the_same_to_the_last_digit(searches) -> None:
    (shared_dir, _, shared_lines), (alone_dir, _, _) = searches
    shared, alone = _curves(shared_dir), _curves(alone_dir)
    assert sorted(shared) == [(0.0, 0.5), (0.0, 0.75), (0.5, 0.5), (0.5, 0.75)]
    for point, curve in alone.items():
        assert [r["epoch"] for r in shared[point]] == [1, 2, 3, 4]  # the whole curve, trunk epochs included
        assert shared[point] == curve, point
    results = [json.loads((d / "final" / "results.json").read_text()) for d in (shared_dir, alone_dir)]
    assert [r["metrics"] for r in results[0]["runs"]] == [r["metrics"] for r in results[1]["runs"]]
    info = {name: json.loads((d / "stages" / "abd" / "winner.json").read_text()) for name, d in
            (("shared", shared_dir), ("alone", alone_dir))}
    # 3 trunk epochs (to the latest switch, int(0.75 * 4)) + 2 x 2 (gamma 0.5) + 2 x 1 (gamma 0.75): 9 of 16
    assert info["alone"]["epochs_spent"] == 16 and info["shared"]["epochs_spent"] == 9
    assert info["shared"]["shared_prefix"] == {"trunk_epochs": 3, "shared_epochs": 2 * 2 + 2 * 3}
    assert info["shared"]["params"] == info["alone"]["params"]  # the same winner
    assert any("shared prefix" in line for line in shared_lines)


def test_each_branch_is_one_trial_with_its_trunk_epochs_marked_shared(searches) -> None:
    from mlflow.tracking import MlflowClient

    (run_dir, _, _), _ = searches
    client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    exp = client.get_experiment_by_name("doktra-chemprot").experiment_id
    trials = client.search_runs([exp], "tags.`doktra.stage` = 'abd' and tags.`doktra.level` = 'trial'")
    assert len(trials) == 4
    for run in trials:
        gamma = float(run.data.params["gamma"])
        switch = int(gamma * 4)
        history = client.get_metric_history(run.info.run_id, "dev_f1")
        assert sorted(m.step for m in history) == [1, 2, 3, 4]
        shared = sorted(m.step for m in client.get_metric_history(run.info.run_id, "shared_prefix"))
        assert shared == list(range(1, switch + 1))
        assert run.data.tags["doktra.shared_prefix"] == f"lr=0.001, epochs 1-{switch}"
    (trunk,) = client.search_runs([exp], "tags.`doktra.stage` = 'abd_trunk' and tags.`doktra.level` = 'trial'")
    assert sorted(m.step for m in client.get_metric_history(trunk.info.run_id, "dev_f1")) == [1, 2, 3]


def test_a_rerun_uses_the_published_trunk_and_the_finished_branches(searches) -> None:
    (run_dir, _, _), _ = searches
    trunk = run_dir / "stages" / "abd" / "trunks" / "lr=0.001"
    assert sorted(p.name for p in trunk.iterdir()) == ["epoch_2", "epoch_3"]
    published = {p: p.stat().st_mtime_ns for p in trunk.glob("*/training_state.pt")}
    (run_dir / "stages" / "abd" / "winner.json").unlink()  # as if the driver died after the last branch
    (run_dir / "final" / "results.json").unlink()
    _, _, lines = run_tiny_search(run_dir.parent, *GRID, "search_id=shared")
    assert any("published earlier" in line for line in lines)
    assert not any(line.startswith("[abd_trunk] trial") for line in lines)
    assert not any(line.startswith("[abd] trial") and "epoch" in line for line in lines)  # branches kept
    assert {p: p.stat().st_mtime_ns for p in trunk.glob("*/training_state.pt")} == published
