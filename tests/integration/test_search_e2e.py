"""The nested search end to end on the `tiny` preset: real Ray trials, real ChemProt examples.

CTT (β₁ grid) -> student fine-tuning (lr₁ grid, one value blows the loss up: an errored trial the
search survives) -> ABD (β₂ grid, from the two winners' checkpoints) -> final runs on dev + test
(the chain protocol: each seed's DoKTra distils from that seed's teacher into that seed's student).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from doktra_tune.search.winners import read_run_json
from tests.helpers.search import DATA_ROOT, run_tiny_search

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(), reason=f"no ChemProt data at {DATA_ROOT}"),
    pytest.mark.usefixtures("local_ray"),  # one local Ray for the module's searches (tests/conftest.py)
]


@pytest.fixture(scope="module")
def search(chemprot_tiny_search):
    """tests/conftest.py's session search: the student lr grid [1e-3, 1e6] (1e6: an errored trial),
    search.max_failures=0, search.keep_checkpoints=all; tests/integration/test_mlflow_ui.py reads it too."""
    return chemprot_tiny_search


def _winner(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / "stages" / stage / "winner.json").read_text())


def test_every_stage_has_a_winner_with_its_checkpoint(search) -> None:
    run_dir, _, _ = search
    assert run_dir.name.startswith("chemprot-tiny-")
    assert (run_dir / "config.yaml").is_file() and (run_dir / "mlflow.db").is_file()
    for stage, epochs in (("ctt", 1), ("student", 2), ("abd", 2)):
        info = _winner(run_dir, stage)
        meta = json.loads((run_dir / "stages" / stage / "winner" / "doktra_meta.json").read_text())
        # the paper's hand-off: a trial's model is its last epoch (e, e1, e2), and it is ranked there
        assert meta["epoch"] == info["epoch"] == epochs and info["handoff"] == "last"
        assert info["metrics"]["epoch"] == epochs
        assert {t["trial_id"] for t in info["trials"]} >= {info["trial_id"]}
        assert (run_dir / "ray" / stage / "tuner.pkl").is_file()  # one Tune experiment per stage


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
    # e1 is the winner's own schedule length (the e1 grid of the tiny preset is [2])
    assert info["e1"] == info["params"]["epochs"] == 2
    assert "final" in summary

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    exp = client.get_experiment_by_name("doktra-chemprot")
    runs = client.search_runs([exp.experiment_id], f"tags.`ray.trial_id` = '{by_lr[1e6]['trial_id']}'")
    assert [r.data.tags["doktra.status"] for r in runs] == ["errored"]


def test_the_outcome_is_on_the_search_run_and_the_winners_are_registered(search) -> None:
    """MLflow's first view shows the outcome: Table 2's metrics, tables, plots, datasets and a
    description on the search run; a leaderboard and winner tags on each stage run; per-epoch
    metrics with the epoch as their step; the three winners in the Model Registry, usable on raw text."""
    import mlflow
    from mlflow.tracking import MlflowClient

    run_dir, _, lines = search
    uri = f"sqlite:///{run_dir}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("doktra-chemprot").experiment_id
    (top,) = client.search_runs([exp], "tags.`doktra.level` = 'search'")
    results = json.loads((run_dir / "final" / "results.json").read_text())
    assert top.data.metrics["test_f1.doktra"] == pytest.approx(results["summary"]["doktra"]["test_f1"]["mean"])
    assert {"test_f1.doktra.std", "test_ece.teacher_ctt", "test_lat.doktra"} <= set(top.data.metrics)
    note = top.data.tags["mlflow.note.content"]
    assert re.search(r"^\| student-DoKTra +\|", note, re.MULTILINE)  # Table 2's row (Markdown, padded cells)
    assert "doktra-chemprot-doktra" in note and "python -m doktra_tune.search" in note
    view = json.loads(client.get_experiment(exp).tags[f"mlflow.sharedViewState.outcome-{run_dir.name}"])
    assert view["selectedColumns"][:2] == ["attributes.`Dataset`", "metrics.`test_f1.doktra`"]
    assert f"viewStateShareKey=outcome-{run_dir.name}" in note
    artifacts = {a.path for a in client.list_artifacts(top.info.run_id, "tables")}
    assert {"tables/table2.md", "tables/table2.csv", "tables/table2.tex"} <= artifacts
    assert any(a.path.endswith(".png") for a in client.list_artifacts(top.info.run_id, "plots"))
    inputs = client.get_run(top.info.run_id).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == ["chemprot-dev", "chemprot-test", "chemprot-train"]
    assert all(len(i.dataset.digest) == 16 for i in inputs)
    (ctt_stage,) = client.search_runs([exp], "tags.`doktra.level` = 'stage' and tags.`doktra.stage` = 'ctt'")
    assert "leaderboard.json" in {a.path for a in client.list_artifacts(ctt_stage.info.run_id)}
    assert ctt_stage.data.tags["doktra.winner.trial_id"] == _winner(run_dir, "ctt")["trial_id"]
    trial = client.search_runs([exp], "tags.`doktra.stage` = 'ctt' and tags.`doktra.level` = 'trial'")[0]
    assert "epoch" not in trial.data.metrics and "dev_f1" in trial.data.metrics  # the epoch is the step
    # logged first, so MLflow's compare view plots dev F1 by default (it takes a run's first metric)
    assert list(client.get_run(trial.info.run_id).data.metrics)[:2] == ["dev_f1", "dev_ece"]
    assert {i.dataset.name for i in client.get_run(trial.info.run_id).inputs.dataset_inputs} >= {"chemprot-train"}
    labels = {"CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false"}
    for role in ("teacher", "student", "doktra"):
        (version,) = client.search_model_versions(f"name='doktra-chemprot-{role}'")
        assert version.tags["doktra.search_id"] == run_dir.name
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/doktra-chemprot-doktra/1")
    predicted = model.predict(["<< aspirin >> inhibits [[ COX-2 ]] .", "<< caffeine >> activates [[ PKA ]] ."])
    assert len(predicted) == 2 and set(predicted["label"]) <= labels
    assert any(line.startswith("[outcome] tables and plots") for line in lines)


def test_abd_trials_start_from_the_stage_winners(search) -> None:
    run_dir, _, _ = search
    meta = json.loads((run_dir / "stages" / "abd" / "winner" / "doktra_meta.json").read_text())
    assert meta["config"]["model"] == str(run_dir / "stages" / "student" / "winner")
    assert meta["config"]["teacher_checkpoint"] == str(run_dir / "stages" / "ctt" / "winner")
    info = _winner(run_dir, "abd")
    assert sorted(t["params"]["beta"] for t in info["trials"]) == [0.0, 0.5]
    assert info["params"]["gamma"] == 0.5


def test_final_runs_chain_every_seed_and_cover_every_variant(search) -> None:
    run_dir, _, lines = search
    results = read_run_json(run_dir / "final" / "results.json", run_dir)  # paths inside the run dir resolved
    runs = results["runs"]
    assert results["protocol"] == "shared_models"  # the default; with tiny's one seed the same runs as chain
    assert sorted(r["variant"] for r in runs) == sorted(
        ["teacher_ctt", "teacher_ft", "student_ft", "doktra", "doktra_no_ctt"])
    for r in runs:
        assert r["status"] == "completed" and r["seed"] == 1 and r["origin"] == "seed re-run"
        for key in ("dev_f1", "test_f1", "test_ece"):
            assert 0.0 <= r["metrics"][key] <= 1.0
    by = {r["variant"]: r for r in runs}
    student = _winner(run_dir, "student")
    assert by["student_ft"]["params"]["epochs"] == student["e1"]
    assert by["teacher_ft"]["params"]["beta"] == 0.0
    # DoKTra of seed 1 distilled from the seed-1 teacher into the seed-1 student, kept under final/models/
    models = run_dir / "final" / "models"
    assert by["doktra"]["params"]["teacher_checkpoint"] == str(models / "teacher_ctt-seed1")
    assert by["doktra"]["params"]["model"] == str(models / "student_ft-seed1")
    beta0 = float(_winner(run_dir, "ctt")["params"]["beta"]) == 0.0  # β₁ = 0 won: teacher_ft is teacher_ctt's run
    assert by["doktra_no_ctt"]["params"]["teacher_checkpoint"] == str(models / f"teacher_{'ctt' if beta0 else 'ft'}-seed1")
    assert (by["doktra"]["teacher"], by["doktra"]["student"]) == ("teacher_ctt-seed1", "student_ft-seed1")
    meta = json.loads((models / "teacher_ctt-seed1" / "doktra_meta.json").read_text())
    assert meta["seed"] == 1 and meta["epoch"] == 1  # the seed-1 teacher, after its e epochs
    assert by["doktra"]["metrics"]["test_lat"] >= 0.0 and by["doktra"]["metrics"]["epoch"] == 2
    summary = results["summary"]["doktra"]
    assert summary["n"] == 1 and math.isclose(summary["test_f1"]["mean"], by["doktra"]["metrics"]["test_f1"])
    assert any(line.startswith("[final] doktra ") for line in lines)
    assert any(line.startswith("[abd] end in") and "bytes" in line for line in lines)  # disk usage per stage


def test_student_e1_grid_runs_each_schedule_to_its_own_end(tmp_path) -> None:
    """App. A: lr1 x e1 is a grid; each run's linear schedule decays to 0 at its own e1, and the
    student handed to ABD is the winner's last epoch. A 1-epoch run is complete, not pruned, although
    the stage's longest run has 2 epochs."""
    run_dir, _, _ = run_tiny_search(
        tmp_path, "search.stop_after=student", "stages.student.grid.epochs=[1,2]",
        "stages.student.grid.lr=[1e-3,3e-3]", "search.pruner=median",
    )
    info = _winner(run_dir, "student")
    assert sorted((t["params"]["lr"], t["params"]["epochs"], t["epochs_run"], t["status"]) for t in info["trials"]) == [
        (1e-3, 1, 1, "completed"), (1e-3, 2, 2, "completed"), (3e-3, 1, 1, "completed"), (3e-3, 2, 2, "completed")]
    for trial in info["trials"]:
        (trial_dir,) = (run_dir / "ray" / "student").glob(f"*_{trial['trial_id']}_*")
        reports = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in reports] == list(range(1, trial["params"]["epochs"] + 1))
        assert reports[-1]["lr"] == 0.0  # the schedule ended at this run's own e1
        assert trial["epoch"] == trial["params"]["epochs"]  # ranked at its last epoch
    assert info["e1"] == info["params"]["epochs"] == info["epoch"]
    meta = json.loads((run_dir / "stages" / "student" / "winner" / "doktra_meta.json").read_text())
    assert meta["epoch"] == info["e1"]


def test_synchronous_halving_pauses_real_trials_and_resumes_them_from_their_checkpoints(tmp_path) -> None:
    """The student stage with search.pruner=synchronous_halving: 3 lrs x 3 epochs, factor 2 -> rungs
    at 1, 2, 3 epochs keep 2 then 1 trial. Paused trials go on from their checkpoint (optimizer and
    RNG state included), so the survivor's curve is one uninterrupted run of 3 epochs."""
    from mlflow.tracking import MlflowClient

    run_dir, _, lines = run_tiny_search(
        tmp_path, "search.stop_after=student",
        "search.pruner=synchronous_halving", "search.reduction_factor=2", "search.grace_period=1",
        "stages.student.grid.epochs=[3]", "stages.student.grid.lr=[1e-4,1e-3,3e-3]",
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


def test_gad_final_runs_chain_over_every_fold(tmp_path, fixtures_dir) -> None:
    """GAD (Table 2): the search runs on fold 1, the final chain on each listed fold; the summary is
    the mean over folds x seeds, its std over the seeds' fold means. Fold 2 here is the fixture's fold 1 with its test sentences reversed."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(fixtures_dir / "gad", data / "gad")
    fold2 = data / "gad" / "2"
    shutil.copytree(data / "gad" / "1", fold2)
    lines = (fold2 / "test.tsv").read_text().splitlines()
    (fold2 / "test.tsv").write_text("\n".join(lines[:1] + lines[:0:-1]) + "\n")
    run_dir, summary, _ = run_tiny_search(
        tmp_path / "runs", "final.folds=[1,2]", "final.variants=[teacher_ctt,doktra]",
        "data.train_limit=null", "data.dev_limit=null", "data.test_limit=null", task="gad", data_root=data,
    )
    results = json.loads((run_dir / "final" / "results.json").read_text())
    doktra = [r for r in results["runs"] if r["variant"] == "doktra"]
    assert sorted(r["fold"] for r in doktra) == [1, 2] and all(r["status"] == "completed" for r in doktra)
    assert [r["params"]["teacher_checkpoint"].rsplit("/", 1)[-1] for r in sorted(doktra, key=lambda r: r["fold"])] == [
        "teacher_ctt-seed1-fold1", "teacher_ctt-seed1-fold2"]
    student = [r for r in results["runs"] if r["variant"] == "student_ft"]  # run for DoKTra, reported too
    assert sorted(r["fold"] for r in student) == [1, 2]
    mean = sum(r["metrics"]["test_f1"] for r in doktra) / 2
    assert results["summary"]["doktra"]["n"] == 2 and math.isclose(results["summary"]["doktra"]["test_f1"]["mean"], mean)
    assert results["summary"]["doktra"]["std_over"] == "seeds (fold means)"  # final.gad_std=over_seeds (§4.2)
    # each fold trains its whole train file and scores the fold's test file as dev (the paper's GAD)
    assert all(r["params"]["data"] == {"data_format": f"gad_folds:{r['fold']}:test"} for r in doktra + student)
    # search.keep_checkpoints=needed (the default): once the winners are registered, only they remain
    assert not list((run_dir / "ray").glob("*/*/checkpoint_*")) and not (run_dir / "final" / "models").exists()
    assert not list((run_dir / "stages").glob("*/winner")) and (run_dir / "stages" / "abd" / "winner.json").is_file()
    from mlflow.tracking import MlflowClient

    registered = MlflowClient(f"sqlite:///{run_dir}/mlflow.db").search_registered_models()
    assert sorted(m.name for m in registered) == ["doktra-gad-doktra", "doktra-gad-student", "doktra-gad-teacher"]


@pytest.mark.skipif(not (DATA_ROOT / "hoc_raw").is_dir(), reason=f"no HoC data at {DATA_ROOT}")
def test_a_beta0_ctt_winner_trains_each_shared_run_once(tmp_path) -> None:
    """HoC with β₁ = 0 the only CTT value (the paper's HoC winner, Table A1), two seeds, the default
    shared_models protocol: teacher_ft is teacher_ctt's runs and doktra_no_ctt doktra's, so Ray runs
    2 x (teacher_ctt, student_ft, doktra) = 6 final trials, not 10; results.json and Tables 2 and 5
    still show every variant's row, the aliases with their targets' numbers."""
    from analysis.results import final_results
    from analysis.runs import load_runs, resolve_source
    from analysis.tables import table2, table5

    run_dir, _, lines = run_tiny_search(tmp_path, "stages.ctt.grid.beta=[0.0]", "final.seeds=[1,2]", task="hoc")
    results = read_run_json(run_dir / "final" / "results.json", run_dir)
    assert results["protocol"] == "shared_models"
    trials = [d for exp in (run_dir / "ray").glob("final*") for d in exp.iterdir()
              if d.is_dir() and (d / "params.json").is_file()]  # final: the runs beside ABD; final-resume1: the rest
    assert len(trials) == 6  # de-duplicated: 2 seeds x (teacher_ctt, student_ft, doktra)
    runs = results["runs"]
    variants = ("teacher_ctt", "teacher_ft", "student_ft", "doktra", "doktra_no_ctt")
    assert sorted(r["variant"] for r in runs) == sorted(v for v in variants for _ in (1, 2))
    assert sum(r["trained"] for r in runs) == 6 and len({r["trial_id"] for r in runs}) == 6
    assert all(r["status"] == "completed" for r in runs)
    by = {(r["variant"], r["seed"]): r for r in runs}
    for alias, target in (("teacher_ft", "teacher_ctt"), ("doktra_no_ctt", "doktra")):
        for seed in (1, 2):
            assert by[(alias, seed)]["same_as"] == target and by[(alias, seed)]["trial_id"] == by[(target, seed)]["trial_id"]
            assert by[(alias, seed)]["metrics"] == by[(target, seed)]["metrics"]
        assert results["summary"][alias]["same_as"] == target
        assert results["summary"][alias]["test_f1"] == results["summary"][target]["test_f1"]
    # shared_models: seed 2's DoKTra distilled from seed 1's teacher into seed 1's student
    assert (by[("doktra", 2)]["teacher"], by[("doktra", 2)]["student"]) == ("teacher_ctt-seed1", "student_ft-seed1")
    (start,) = [line for line in lines if line.startswith("[final] start")]
    assert "β₁ = 0 won CTT: teacher_ft = teacher_ctt, doktra_no_ctt = doktra, each trained once (4 runs fewer)" in start
    table = final_results(load_runs(resolve_source(str(run_dir))))
    assert table["variant"].value_counts().to_dict() == {v: 2 for v in variants}
    t2 = table2(table)
    cells = dict(zip(t2["Model"], t2["HoC"]))
    assert {"teacher-ft (CTT, tuned beta1)", "teacher-ft (beta1 = 0)", "student-ft", "student-DoKTra"} <= set(cells)
    assert cells["teacher-ft (beta1 = 0)"] == cells["teacher-ft (CTT, tuned beta1)"] != "–"
    which = dict(zip(t2["Model"], t2["Which model"]))["teacher-ft (beta1 = 0)"]
    assert "= teacher_ctt's runs (β₁ = 0 won CTT: trained once)" in which
    t5 = table5(table).iloc[0]
    assert t5["DoKTra−CTT F1"] == t5["DoKTra F1"] != "–" and t5["teacher ECE (beta1 = 0)"] == t5["teacher ECE (CTT)"]
    assert "teacher-ft (beta1 = 0)" in (run_dir / "tables" / "table2.md").read_text()  # the outcome's table too


def test_the_rehearsal_counting_agrees_with_a_finished_search(search) -> None:
    """benchmarks/bench_paper_rehearsal.py's counting on the session search: every trial of every stage
    ran exactly its horizon (ABD trunks to their switch, final students their e1), the one errored
    student trial (lr 1e6) aside; the search stages' trial and epoch counts are the plan's."""
    import importlib.util
    import sys

    import yaml

    from doktra_tune.plan.budget import plan_budget
    from doktra_tune.plan.search_plan import build_plan

    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_paper_rehearsal", repo / "benchmarks" / "bench_paper_rehearsal.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    run_dir, _, _ = search
    plan = build_plan(yaml.safe_load((run_dir / "config.yaml").read_text()))
    budget = plan_budget(plan)
    for stage in bench.STAGES:
        counted = bench.count_stage(run_dir, stage)
        bad = bench.incomplete(counted, plan)
        if stage == "student":
            assert len(bad) == 1 and "lr=1000000.0" in bad[0] and "epochs []" in bad[0], bad  # it errored at once
        else:
            assert bad == [], bad
        if stage != "final":  # the final count depends on the CTT winner (β₁ = 0: fewer runs)
            assert len(counted.main_trials()) == budget.stage(stage).trials, stage
