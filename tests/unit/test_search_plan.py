"""The orchestration's pure parts, in process and fast: the typed config and its checks, the plan
(grids, search id, run dir), trial collection from a (fake) Tune result grid, what a resume still
has to run, winner selection, the final run specs and their summary."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from doktra_tune.errors import ConfigError
from doktra_tune.plan.final import FinalPlan, final_runs, missing_runs, summarize
from doktra_tune.plan.schema import SearchConfig
from doktra_tune.plan.search_plan import build_plan, search_id_for
from doktra_tune.run_spec import RunSpec
from doktra_tune.search import compose_config
from doktra_tune.search.trials import (
    TrialRecord,
    collect_trials,
    remaining_grid_points,
    remaining_runs,
    trial_index,
)
from doktra_tune.search.winners import pick_winner, selection_rule


def _plan(*overrides: str):
    return build_plan(compose_config(["task=chemprot", *overrides]))


# ----------------------------------------------------------------------------- config and plan


def test_cpu_preset_plan_is_typed_and_keeps_its_search_id(tmp_path: Path) -> None:
    plan = _plan("preset=cpu", f"runs_root={tmp_path}")
    c = plan.config
    assert isinstance(c, SearchConfig)
    assert (c.teacher_model, c.student_model, c.preset) == ("minilm", "random:bert:L4-H192", "cpu")
    # fp32 on AVX2-pinned kernels: the same numbers on any x86-64 CPU
    assert c.stages["ctt"].precision == "auto" and c.stages["student"].precision == "auto"
    assert c.cpu_kernels == "avx2" and _plan("preset=paper").config.cpu_kernels == "native"
    assert c.stages["abd"].margin == 1.0 and c.stages["abd"].projection == "auto"
    assert plan.stage_epochs == {"ctt": 2, "student": 5, "abd": 4}  # the student's: the longest e1
    assert plan.spaces["student"].params == {"lr": [3e-4, 5e-4], "epochs": [3, 5]}
    assert plan.spaces["abd"].params == {"lr": [3e-4], "beta": [0.0, 0.5], "gamma": [0.5, 0.75]}
    assert plan.spaces["ctt"].grid_size == 2
    assert (plan.data.train_limit, plan.data.dev_limit, plan.data.test_limit, plan.data.max_len) == (1000, 200, 300, 96)
    assert plan.data.cache_dir == "~/.cache/doktra_tune"
    # the search id hashes what changes the computation (a changed hash is a changed search)
    assert plan.search_id == "chemprot-cpu-22682373"
    assert plan.run_dir == tmp_path.resolve() / plan.search_id
    assert c.final.seeds == (1, 2, 3) and c.search.pruner == "none" and not c.search.pauses_trials


BIOBERT, FINBERT = "dmis-lab/biobert-base-cased-v1.1", "yiyanghkust/finbert-pretrain"
SMALL_PRESETS = {"cpu": ("minilm", "random:bert:L4-H192"), "proxy": ("minilm", "minilm@L2"),
                 "tiny": ("random:bert:L1-H32", "random:bert:L1-H48")}


@pytest.mark.parametrize(("task", "teacher", "roberta"), [
    ("chemprot", BIOBERT, "roberta-large"), ("gad", BIOBERT, "roberta-large"), ("i2b2", BIOBERT, "roberta-large"),
    ("fpb", FINBERT, "roberta-base"), ("fts", FINBERT, "roberta-base"),
])
def test_each_task_has_the_papers_teacher_and_students(task: str, teacher: str, roberta: str) -> None:
    """§4.2 / §4.7, App. A.2: BioBERT-base for the biomedical and clinical tasks, FinBERT-base for FPB/FTS;
    ALBERT-xlarge by default, RoBERTa-large / RoBERTa-base as the paper's second student. The small
    presets keep their own models on every task."""
    plan = build_plan(compose_config([f"task={task}"]))  # the default preset: paper
    assert plan.config.preset == "paper"
    assert (plan.config.teacher_model, plan.config.student_model) == (teacher, "albert-xlarge-v2")
    assert plan.raw["task"]["paper_students"] == ["albert-xlarge-v2", roberta]
    assert build_plan(compose_config([f"task={task}", f"student_model={roberta}"])).config.student_model == roberta
    for preset, models in SMALL_PRESETS.items():
        c = build_plan(compose_config([f"task={task}", f"preset={preset}"])).config
        assert (c.teacher_model, c.student_model) == models, preset


def test_paper_preset_trains_random_batches_of_50_in_tf32_and_bf16_is_an_option() -> None:
    """The authors' commands pass --batch_size=50 to scripts with a RandomSampler and no autocast, on
    PyTorch 1.8.1, whose fp32 matmuls ran in TF32: tf32, random batches."""
    c = _plan().config
    assert c.train.batch_size == 50 and c.train.precision == "tf32" and c.train.batching == "random"
    assert {s.precision for s in c.stages.values()} == {"tf32"}
    fast = _plan("train.precision=bf16").config
    assert {s.precision for s in fast.stages.values()} == {"bf16"} and _plan().search_id != _plan(
        "train.precision=bf16").search_id
    assert _plan().search_id != _plan("train.precision=fp32").search_id != _plan("train.batching=bucketed").search_id
    for preset in SMALL_PRESETS:  # the CPU presets keep their own batches and precision
        small = _plan(f"preset={preset}").config
        # proxy: bf16 autocast on this CPU's native bf16, to fit 90 minutes (its caveat line says so)
        assert small.train.batch_size == 16 and small.train.precision == ("bf16" if preset == "proxy" else "auto"), preset
        assert small.train.batching == "bucketed", preset


def test_the_papers_models_of_a_task_are_not_part_of_the_search_id() -> None:
    """Only the models a search trains count (teacher_model / student_model): the cpu preset's id stays."""
    assert _plan("preset=cpu", "task.paper_teacher=other/model").search_id == "chemprot-cpu-22682373"
    assert _plan("student_model=roberta-large").search_id != _plan().search_id


def test_search_id_ignores_where_things_run_but_not_what_is_computed() -> None:
    raw = _plan("preset=tiny").raw
    same = _plan("preset=tiny", "runs_root=/elsewhere", "ray.num_cpus=1", "search.max_failures=3").raw
    other = _plan("preset=tiny", "train.seed=7").raw
    assert search_id_for(raw) == search_id_for(same) != search_id_for(other)
    assert search_id_for(raw).startswith("chemprot-tiny-")


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.max_len=4"], "data.max_len=4 must be an integer >= 8; e.g. data.max_len=128"),
    (["data.train_limit=0"], "data.train_limit=0 must be an integer >= 1"),
    (["train.batch_size=2.5"], "train.batch_size=2.5 must be an integer >= 1; e.g. train.batch_size=32"),
    (["train.warmup_ratio=1"], "train.warmup_ratio=1 must be a number in [0, 1); e.g. train.warmup_ratio=0.0"),
    (["train.cpu_kernels=sse"], "train.cpu_kernels='sse' is unknown; use one of native, avx2"),
    (["train.precision=fp16"], "train.precision='fp16' is unknown; use one of auto, fp32, tf32, bf16"),
    (["stages.abd.precision=fp8"], "stages.abd.precision='fp8' is unknown"),
    (["stages.abd.projection=diagonal"],
     "stages.abd.projection='diagonal' is unknown; use one of auto, identity, fixed_random, learned"),
    (["search.pruner=random"], "search.pruner='random' is unknown"),
    (["search.mode=tpe"], "search.mode=tpe needs a trial budget; set search.num_samples=<n>"),
    (["search.reduction_factor=1"], "search.reduction_factor=1 must be an integer >= 2"),
    (["search.stop_after=final"], "search.stop_after='final' is unknown; use one of ctt, student, abd or null"),
    (["search.selection.kind=best"], "search.selection.kind='best' is unknown; use one of lexicographic, pareto"),
    (["search.selection.f1_tolerance=-0.1"], "search.selection.f1_tolerance=-0.1 must be a number >= 0"),
    (["final.seeds=[]"], "final.seeds is empty"),
    (["final.variants=[doktra,magic]"], "final.variants has unknown ['magic']"),
    (["final.eval_splits=[test]"], "must hold dev"),
    (["resources.cpus_per_trial=0"], "resources.cpus_per_trial=0 must be a number > 0"),
    (["stages.ctt.grid.beta=oops"], "stages.ctt.grid.beta='oops' must be a list of numbers"),
    (["stages.abd.grid.gamma=[0.5,1.5]"], "stages.abd: override gamma=[0.5,1.5]: gamma: value 1.5 is out of range"),
    (["search.num_samples=3"], "search.num_samples=3 but the ctt grid has 2 points"),
    (["search_id=a/b"], "search_id='a/b' must be a plain name"),
])
def test_bad_values_are_one_line_config_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _plan("preset=tiny", *overrides)
    text = str(err.value)
    assert message in text and "\n" not in text and ";" in text


# ----------------------------------------------------------------------------- trial collection


@dataclass
class FakeCheckpoint:
    path: str


@dataclass
class FakeResult:
    """The parts of a Tune `Result` that collect_trials reads."""

    trial_id: str
    rows: list[dict[str, Any]]
    config: dict[str, Any]
    path: str
    error: BaseException | None = None
    best_checkpoint: str | None = None
    metrics: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = {**(self.rows[-1] if self.rows else {}), "trial_id": self.trial_id}

    @property
    def metrics_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame([{**r, "trial_id": self.trial_id, "config/lr": self.config.get("lr")} for r in self.rows])

    @property
    def checkpoint(self) -> FakeCheckpoint | None:
        return FakeCheckpoint(self.best_checkpoint) if self.best_checkpoint else None

    def get_best_checkpoint(self, metric: str, mode: str) -> FakeCheckpoint | None:
        return self.checkpoint


def _rows(f1s: list[float]) -> list[dict[str, Any]]:
    return [{"training_iteration": i, "epoch": float(i), "dev_f1": f, "dev_ece": 0.1 * i, "dev_loss": 1.0,
             "search_score": f - 1e-6, "node_id": "n1"} for i, f in enumerate(f1s, start=1)]


def test_collect_trials_reads_curves_status_and_creation_order(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "doktra_meta.json").write_text('{"epoch": 2}')  # Tune kept the epoch-2 checkpoint
    results = [
        FakeResult("b_00001", _rows([0.5]), {"lr": 2e-4}, "/r/student_b_00001_1_lr=0.0002_2026"),
        FakeResult("a_00000", _rows([0.4, 0.7, 0.6]), {"lr": 1e-4}, "/r/student_a_00000_0_lr=0.0001_2026",
                   best_checkpoint=str(ckpt)),
        FakeResult("c_00002", _rows([0.3]), {"lr": 1e6}, "/r/student_c_00002_2_lr=1e6_2026",
                   error=RuntimeError("boom\nNonFiniteLossError: loss became non-finite")),
    ]
    records = collect_trials(results, max_t=3, pruned_ids=set(), pruner_on=True)
    assert [r.trial_id for r in records] == ["a_00000", "b_00001", "c_00002"]  # creation order
    a, b, c = records
    assert (a.status, a.epochs_run, a.kept_epoch, a.kept_metrics["dev_f1"]) == ("completed", 3, 2, 0.7)
    assert a.checkpoint == str(ckpt) and a.curve == {1: 0.4 - 1e-6, 2: 0.7 - 1e-6, 3: 0.6 - 1e-6}
    assert a.params == {"lr": 1e-4} and a.node_id == "n1"
    assert b.status == "pruned"  # 1 of 3 epochs with a pruner on
    assert c.status == "errored" and c.error == "RuntimeError: NonFiniteLossError: loss became non-finite"
    assert collect_trials(results[:1], 3, set(), pruner_on=False)[0].status == "completed"
    assert trial_index("a_00000", "/x/y_a_00000_7_p=1") == 7 and trial_index("t_00012", "/x/odd") == 12


def _record(trial_id: str, f1: float, ece: float, status: str = "completed", **params: Any) -> TrialRecord:
    return TrialRecord(trial_id=trial_id, status=status, params=params, epochs_run=2, kept_epoch=2,
                       kept_metrics={"dev_f1": f1, "dev_ece": ece}, last_metrics={}, checkpoint=f"/c/{trial_id}")


def test_a_resume_runs_only_the_missing_grid_points_and_runs() -> None:
    done = [_record("t1", 0.5, 0.1, lr=1e-4, beta=0.0), _record("t2", 0.6, 0.2, lr=1e-4, beta=0.5)]
    grid = {"lr": [1e-4, 3e-4], "beta": [0.0, 0.5]}
    assert remaining_grid_points(grid, done) == [{"lr": 3e-4, "beta": 0.0}, {"lr": 3e-4, "beta": 0.5}]
    assert remaining_grid_points({"lr": [1e-4], "beta": [0.0, 0.5]}, done) == []
    runs = [RunSpec("abd", {"seed": s}, {"variant": v}) for v in ("doktra", "student_ft") for s in (1, 2)]
    finished = [TrialRecord("f", "completed", {"variant": "doktra", "seed": 2}, 1, 1, {}, {}, None)]
    assert remaining_runs(runs, ("variant", "seed"), finished) == [runs[0], runs[2], runs[3]]


def test_winner_rule_per_stage(tmp_path: Path) -> None:
    from doktra_tune.plan.schema import SelectionOptions

    records = [_record("a", 0.80, 0.20, beta=0.0), _record("b", 0.80, 0.10, beta=0.5),
               _record("c", 0.90, 0.30, "pruned", beta=0.7), _record("d", 0.79, 0.01, beta=0.3)]
    exact = SelectionOptions(kind="lexicographic", f1_tolerance=0.0)
    assert pick_winner("ctt", records, selection_rule(exact, "ctt"), tmp_path).trial_id == "b"  # F1 tie: ECE
    assert pick_winner("abd", records, selection_rule(exact, "abd"), tmp_path).trial_id == "a"  # F1 alone
    loose = SelectionOptions(kind="lexicographic", f1_tolerance=0.02)
    assert pick_winner("ctt", records, selection_rule(loose, "ctt"), tmp_path).trial_id == "d"


# ----------------------------------------------------------------------------- final runs


WINNERS = {
    "ctt": {"params": {"beta": 0.5, "lr": 1.5e-4, "epochs": 2}, "checkpoint": "/w/ctt",
            "baseline": {"checkpoint": "/w/ctt_ft"}},
    "student": {"params": {"lr": 3e-4, "epochs": 6}, "e1": 6, "checkpoint": "/w/student"},
    "abd": {"params": {"lr": 3e-4, "beta": 0.5, "gamma": 0.5, "epochs": 4}, "checkpoint": "/w/abd"},
}


def _final_plan(**kw: Any) -> FinalPlan:
    base = dict(winners=WINNERS, variants=("teacher_ctt", "student_ft", "doktra", "doktra_no_ctt"), seeds=(1, 2),
                folds=None, eval_splits=("dev", "test"), protocol="chain", every_epoch=False, search_seed=42)
    return FinalPlan(**{**base, **kw})


def test_chain_protocol_distils_each_seed_from_its_own_teacher_and_student() -> None:
    plan = _final_plan()
    runs = {(r.labels["variant"], r.overrides["seed"]): r for r in plan.runs("/m")}
    by = {key: r.record() for key, r in runs.items()}  # each run as its finished trial's record shows it
    # teacher_ft is not asked for, but doktra_no_ctt distils from it: it is trained too
    assert sorted(by) == sorted([(v, seed) for v in ("student_ft", "teacher_ctt", "teacher_ft", "doktra", "doktra_no_ctt")
                                 for seed in (1, 2)])
    assert by[("teacher_ft", 1)] == {"variant": "teacher_ft", "seed": 1, "fold": None, "origin": "seed re-run",
                                     "eval_splits": ["dev", "test"], "eval_every_epoch": False, "stage": "ctt",
                                     "beta": 0.0, "lr": 1.5e-4, "epochs": 2, "publish": "teacher_ft-seed1"}
    assert by[("student_ft", 2)]["epochs"] == 6 and by[("student_ft", 2)]["publish"] == "student_ft-seed2"
    doktra = by[("doktra", 2)]
    assert (doktra["teacher_checkpoint"], doktra["model"]) == ("/m/teacher_ctt-seed2", "/m/student_ft-seed2")
    assert doktra["needs"] == ["teacher_ctt-seed2", "student_ft-seed2"] and doktra["distill_loss"] == "abd"
    assert by[("doktra_no_ctt", 1)]["needs"] == ["teacher_ft-seed1", "student_ft-seed1"]
    assert {k: doktra[k] for k in ("lr", "beta", "gamma", "epochs")} == WINNERS["abd"]["params"]
    (hole,) = missing_runs([runs[("doktra_no_ctt", 2)]])
    assert hole["status"] == "errored" and "teacher_ft-seed2" in hole["error"]


def test_dependent_runs_start_a_distillation_once_its_inputs_exist(tmp_path: Path) -> None:
    """No wave barrier: seed 1's DoKTra starts while seed 2's teacher still trains; a failed teacher
    blocks only the distillations that read it."""
    from ray.tune.search import Searcher

    from doktra_tune.search.dependent_runs import DependentRuns

    plan = _final_plan(variants=("teacher_ctt", "student_ft", "doktra"))
    specs = plan.runs(str(tmp_path))
    searcher = DependentRuns(specs, tmp_path)

    def publish(name: str) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")

    def suggest(trial_id: str) -> dict:
        return RunSpec.from_json(searcher.suggest(trial_id)["run"]).record()

    started = {f"t{i}": suggest(f"t{i}") for i in range(4)}  # the 2 teachers, 2 students
    assert sorted((r["variant"], r["seed"]) for r in started.values()) == [
        ("student_ft", 1), ("student_ft", 2), ("teacher_ctt", 1), ("teacher_ctt", 2)]
    assert searcher.suggest("t4") is None  # the distillations wait for their inputs
    ids = {(r["variant"], r["seed"]): t for t, r in started.items()}
    for key in (("teacher_ctt", 1), ("student_ft", 1)):
        publish(started[ids[key]]["publish"])
        searcher.on_trial_complete(ids[key], {})
    first = suggest("t5")
    assert (first["variant"], first["seed"]) == ("doktra", 1)
    searcher.on_trial_complete(ids[("teacher_ctt", 2)], {}, error=True)  # seed 2's teacher fails
    publish(started[ids[("student_ft", 2)]]["publish"])
    searcher.on_trial_complete(ids[("student_ft", 2)], {})
    assert searcher.suggest("t6") is None  # doktra seed 1 still runs
    searcher.on_trial_complete("t5", {})
    assert searcher.suggest("t7") == Searcher.FINISHED
    assert [s.key(("variant", "seed")) for s in searcher.blocked] == [("doktra", 2)]


def test_dependent_runs_take_completion_from_tune_not_from_the_file_system(tmp_path: Path) -> None:
    """On a cluster the driver's network file system may not show a model another node just
    published: a run whose trial completed without error has published it, file seen or not; a
    model from an earlier run of the stage (made by no spec here) is looked for once, on disk."""
    from doktra_tune.search.dependent_runs import DependentRuns

    plan = _final_plan(variants=("teacher_ctt", "student_ft", "doktra"), seeds=(1,))
    specs = plan.runs(str(tmp_path))
    searcher = DependentRuns(specs, tmp_path)
    started = {f"t{i}": RunSpec.from_json(searcher.suggest(f"t{i}")["run"]).record() for i in range(2)}
    assert searcher.suggest("t2") is None
    for trial_id in started:
        searcher.on_trial_complete(trial_id, {})  # nothing on disk: Tune's word is enough
    assert RunSpec.from_json(searcher.suggest("t3")["run"]).record()["variant"] == "doktra"
    (doktra,) = [s for s in specs if s.labels.get("variant") == "doktra"]
    for name in doktra.needs:  # a rerun of the stage: the inputs were published by the interrupted run
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    again = DependentRuns([doktra], tmp_path)
    assert RunSpec.from_json(again.suggest("r0")["run"]).record()["variant"] == "doktra"
    assert DependentRuns([doktra], tmp_path / "elsewhere").blocked == [doktra]  # inputs gone: blocked


def test_a_final_run_waits_a_bounded_time_for_an_input_model(tmp_path: Path) -> None:
    import threading

    from doktra_tune.errors import ConfigError
    from trainables.inputs import wait_for_models

    model = tmp_path / "models" / "teacher_ctt-seed1"
    with pytest.raises(ConfigError, match=r"model .*teacher_ctt-seed1 is not visible on host .* runs_root on storage"):
        wait_for_models([model], timeout_s=0.3, poll_s=0.05)

    def publish() -> None:
        model.mkdir(parents=True)
        (model / "config.json").write_text("{}")

    timer = threading.Timer(0.3, publish)
    timer.start()
    wait_for_models([model], timeout_s=10, poll_s=0.05)  # returns once the copy shows up
    timer.join()


def test_winners_protocol_scores_the_search_models_once_and_distils_from_them() -> None:
    plan = _final_plan(protocol="winners", variants=("teacher_ctt", "student_ft", "doktra", "student_ft_cpl"))
    specs = [r.record() for r in plan.runs("/m")]
    evaluated = {s["variant"]: s for s in specs if s["stage"] == "evaluate"}
    assert {v: (s["model"], s["seed"], s["origin"]) for v, s in evaluated.items()} == {
        "teacher_ctt": ("/w/ctt", 42, "search winner"), "student_ft": ("/w/student", 42, "search winner")}
    cpl = [s for s in specs if s["variant"] == "student_ft_cpl"]
    assert [s["seed"] for s in cpl] == [1, 2] and cpl[0]["beta"] == 0.5  # CPL with the CTT winner's beta1
    assert not any("publish" in s or "needs" in s for s in specs)  # the search's models exist already
    assert [(s["seed"], s["teacher_checkpoint"], s["model"]) for s in specs if s["variant"] == "doktra"] == [
        (1, "/w/ctt", "/w/student"), (2, "/w/ctt", "/w/student")]


def test_gad_final_runs_cover_every_fold() -> None:
    plan = _final_plan(folds=(1, 2), seeds=(1,), variants=("doktra",))
    specs = [r.record() for r in plan.runs("/m")]
    trained = [s for s in specs if s["variant"] != "doktra"]
    assert sorted((s["variant"], s["fold"]) for s in trained) == [
        ("student_ft", 1), ("student_ft", 2), ("teacher_ctt", 1), ("teacher_ctt", 2)]
    assert all(s["data"] == {"data_format": f"gad_folds:{s['fold']}:test"} for s in specs)  # dev: the fold's test file
    carve = _final_plan(folds=(3,), seeds=(1,), variants=("doktra",), data_format="gad_folds:1:carve")
    assert {r.record()["data"]["data_format"] for r in carve.runs("/m")} == {"gad_folds:3:carve"}  # the search's dev mode
    doktra = [s for s in specs if s["variant"] == "doktra"]
    assert [(s["fold"], s["teacher_checkpoint"]) for s in doktra] == [
        (1, "/m/teacher_ctt-seed1-fold1"), (2, "/m/teacher_ctt-seed1-fold2")]


@pytest.mark.parametrize(("task", "overrides", "message"), [
    ("gad", ["final.protocol=winners", "final.folds=[1,2]"], "final.protocol=winners reuses the search's models"),
    ("chemprot", ["final.folds=[1]"], "final.folds=[1] is for GAD's ten folds only"),
    ("gad", ["final.folds=[0]"], "must list GAD folds in 1..10"),
    ("chemprot", ["stages.student.e1_mode=best_epoch", "stages.student.grid.epochs=[2]"],
     "stages.student.grid.epochs is the e1 grid"),
    ("chemprot", ["stages.student.grid.epochs=[2,20]"], "stages.student.epochs=10 is the longest e1"),
    ("chemprot", ["stages.student.grid.epochs=[1,2]", "search.pruner=asha"],
     "search.pruner=asha cannot keep runs of different length"),
    ("chemprot", ["search.handoff=middle"], "search.handoff='middle' is unknown; use one of final_epoch, best_epoch"),
])
def test_protocol_options_are_checked(task: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_plan(compose_config([f"task={task}", "preset=tiny", *overrides]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_e1_grid_and_schedule_groups() -> None:
    from doktra_tune.plan.search_plan import schedule_group

    paper = _plan("preset=paper")
    assert paper.spaces["student"].params == {"lr": [6e-6, 8e-6, 1e-5], "epochs": [5, 6, 7, 8, 9, 10]}
    assert paper.stage_epochs["student"] == 10 and schedule_group(paper.spaces["student"]) == "epochs"
    assert paper.config.search.pruner == "none" and paper.config.final.protocol == "shared_models"
    assert paper.config.stages["abd"].projection == "auto" and paper.config.search.handoff == "final_epoch"
    assert paper.config.search.selection.f1_tolerance == 0.01
    cheap = _plan("preset=paper", "stages.student.e1_mode=best_epoch")
    assert cheap.spaces["student"].params == {"lr": [6e-6, 8e-6, 1e-5]} and cheap.spaces["student"].fixed == {"epochs": 10}
    assert schedule_group(cheap.spaces["student"]) is None
    assert build_plan(compose_config(["task=gad", "preset=paper"])).config.final.folds == tuple(range(1, 11))


def test_final_runs_and_summary() -> None:
    def final_record(variant: str, seed: int, f1: float, status: str = "completed") -> TrialRecord:
        params = {"variant": variant, "seed": seed, "stage": "abd", "lr": 1.0, "origin": "seed re-run",
                  "teacher": f"teacher_ctt-seed{seed}", "fold": None}
        return TrialRecord(f"{variant}{seed}", status, params, 2, 2,
                           {"test_f1": f1, "dev_f1": f1, "epoch": 2.0, "time_total_s": 3.0}, {}, None)

    runs = final_runs([final_record("doktra", 1, 0.6), final_record("doktra", 2, 0.7),
                       final_record("doktra", 3, 0.1, "errored")])
    assert runs[0]["metrics"] == {"test_f1": 0.6, "dev_f1": 0.6, "epoch": 2.0}
    assert runs[0]["params"] == {"lr": 1.0} and runs[0]["teacher"] == "teacher_ctt-seed1"
    s = summarize(runs)["doktra"]
    assert s["n"] == 2 and s["errored"] == 1 and s["origin"] == "seed re-run"
    assert math.isclose(s["test_f1"]["mean"], 0.65) and math.isclose(s["test_f1"]["std"], math.sqrt(0.005))


def test_gad_dev_and_std_follow_the_paper() -> None:
    """GAD, paper preset: the fold's test file is dev (the authors' scripts), all ten folds, ± over the
    seeds of each seed's fold mean (§4.2); the alternatives are named and do not train anything else
    (gad_std leaves the search id alone)."""
    paper = build_plan(compose_config(["task=gad", "preset=paper"]))
    assert paper.data.data_format == "gad_folds:1:test" and paper.config.final.gad_std == "over_seeds"
    over_runs = build_plan(compose_config(["task=gad", "final.gad_std=over_runs"]))
    assert over_runs.config.final.gad_std == "over_runs" and over_runs.search_id == paper.search_id
    carve = build_plan(compose_config(["task=gad", "task.data_format=gad_folds:1:carve"]))
    assert carve.data.data_format == "gad_folds:1:carve" and carve.search_id != paper.search_id
    for overrides, message in ((["final.gad_std=folds"], "final.gad_std='folds' is unknown; use one of over_seeds, "
                                "over_runs"),
                               (["task.data_format=gad_folds:1:dev"], "GAD dev 'dev' is unknown"),
                               (["task.data_format=blue_tsv"], "final.folds needs GAD's folds")):
        with pytest.raises(ConfigError) as err:
            build_plan(compose_config(["task=gad", *overrides]))
        assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_gad_summary_std_over_seeds_of_fold_means() -> None:
    """Two seeds x two folds: over_seeds takes each seed's fold mean (0.7, 0.8) and their std; over_runs
    the std of the four runs, which holds the spread between the folds' test sets."""
    def run(seed: int, fold: int, f1: float) -> dict:
        return {"variant": "doktra", "seed": seed, "fold": fold, "status": "completed", "origin": "seed re-run",
                "metrics": {"test_f1": f1}}

    runs = [run(1, 1, 0.6), run(1, 2, 0.8), run(2, 1, 0.7), run(2, 2, 0.9)]
    seeds = summarize(runs)["doktra"]
    assert seeds["n"] == 4 and seeds["std_over"] == "seeds (fold means)"
    assert math.isclose(seeds["test_f1"]["mean"], 0.75) and math.isclose(seeds["test_f1"]["std"], math.sqrt(0.005))
    every = summarize(runs, "over_runs")["doktra"]
    assert every["std_over"] == "runs" and math.isclose(every["test_f1"]["mean"], 0.75)
    assert math.isclose(every["test_f1"]["std"], statistics.stdev([0.6, 0.8, 0.7, 0.9]))
    plain = summarize([{**r, "fold": None, "seed": i} for i, r in enumerate(runs)])["doktra"]  # no folds: over runs
    assert plain["std_over"] == "runs" and math.isclose(plain["test_f1"]["std"], every["test_f1"]["std"])


def test_pruners_compare_only_runs_of_the_same_e1() -> None:
    """A 10-epoch run has decayed its learning rate less than a 4-epoch run by epoch 3: their scores
    are not comparable. ScheduleGroupPruner shows the median pruner only the trial's own e1 group."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from doktra_tune.search.pruning import ScheduleGroupPruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {"lr": CategoricalDistribution([1e-5, 2e-5, 3e-5]), "epochs": CategoricalDistribution([4, 10])}
    median = optuna.pruners.MedianPruner(n_startup_trials=2)
    grouped = ScheduleGroupPruner(median, "epochs")
    study = optuna.create_study(direction="maximize")
    # two finished e1 = 4 runs score high early (their schedule decays fast), two e1 = 10 runs lower
    for lr, epochs, curve in ((1e-5, 4, [0.7, 0.8, 0.85]), (2e-5, 4, [0.72, 0.81, 0.86]),
                              (1e-5, 10, [0.4, 0.5, 0.55]), (2e-5, 10, [0.42, 0.52, 0.6])):
        study.add_trial(create_trial(params={"lr": lr, "epochs": epochs}, distributions=dists, value=curve[-1],
                                     intermediate_values=dict(enumerate(curve, start=1)), state=TrialState.COMPLETE))

    def running(epochs: int, at_3: float) -> optuna.trial.FrozenTrial:
        return create_trial(params={"lr": 3e-5, "epochs": epochs}, distributions=dists, state=TrialState.RUNNING,
                            intermediate_values={1: at_3, 2: at_3, 3: at_3})

    # epoch 3: the e1 = 10 group's median is 0.575, all four trials' median is 0.7
    assert median.prune(study, running(10, 0.58))  # ranked against shorter schedules: pruned
    assert not grouped.prune(study, running(10, 0.58))  # against its own group: above the median
    assert grouped.prune(study, running(10, 0.50))
    assert grouped.prune(study, running(4, 0.80))  # below the e1 = 4 median 0.855


def test_the_outcome_view_shows_dataset_then_test_f1_and_ece_of_every_variant() -> None:
    """The MLflow UI's shared view state stored by the outcome: column ids as the UI writes them,
    F1 columns before ECE, Table 2's variant order, std and other metrics left out."""
    from doktra_tune.search.outcome import (
        outcome_view_route,
        outcome_view_state,
        search_metrics,
    )

    summary = {v: {"test_f1": {"mean": 0.6, "std": 0.01}, "test_ece": {"mean": 0.1, "std": 0.02},
                   "test_lat": {"mean": 50.0, "std": 1.0}} for v in ("teacher_ft", "doktra", "student_ft")}
    state = outcome_view_state(sorted(search_metrics(summary)))
    assert state["selectedColumns"] == [
        "attributes.`Dataset`", "metrics.`test_f1.doktra`", "metrics.`test_f1.student_ft`",
        "metrics.`test_f1.teacher_ft`", "metrics.`test_ece.doktra`", "metrics.`test_ece.student_ft`",
        "metrics.`test_ece.teacher_ft`"]
    assert state["columnOrder"] == state["selectedColumns"]
    assert outcome_view_route("3", "chemprot-cpu-1") == "#/experiments/3/runs?viewStateShareKey=outcome-chemprot-cpu-1"
