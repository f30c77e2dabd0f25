"""The orchestration's pure parts, in process and fast: the typed config and its checks, the plan
(grids, search id, run dir), trial collection from a (fake) Tune result grid, what a resume still
has to run, winner selection, the final run specs and their summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from doktra_tune.errors import ConfigError
from doktra_tune.search import compose_config
from doktra_tune.search.final import final_runs, final_specs, summarize
from doktra_tune.search.plan import build_plan, search_id_for
from doktra_tune.search.schema import SearchConfig
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
    assert c.stages["ctt"].precision == "bf16" and c.stages["student"].precision == "auto"  # stage's, else train's
    assert c.stages["abd"].margin == 1.0 and c.stages["abd"].projection == "fixed_random"
    assert plan.stage_epochs == {"ctt": 2, "student": 6, "abd": 4}
    assert plan.spaces["abd"].params == {"lr": [3e-4], "beta": [0.0, 0.5], "gamma": [0.5, 0.75]}
    assert plan.spaces["ctt"].grid_size == 2
    assert (plan.data.train_limit, plan.data.dev_limit, plan.data.test_limit, plan.data.max_len) == (1000, 200, 300, 96)
    assert plan.data.cache_dir == "~/.cache/doktra_tune"
    # the search id hashes what changes the computation: the same as before the refactor
    assert plan.search_id == "chemprot-cpu-b3388b4a"
    assert plan.run_dir == tmp_path.resolve() / plan.search_id
    assert c.final.seeds == (1, 2, 3) and c.search.pruner == "median" and not c.search.pauses_trials


def test_search_id_ignores_where_things_run_but_not_what_is_computed() -> None:
    raw = _plan("preset=tiny").raw
    same = _plan("preset=tiny", "runs_root=/elsewhere", "ray.num_cpus=1", "search.max_failures=3").raw
    other = _plan("preset=tiny", "train.seed=7").raw
    assert search_id_for(raw) == search_id_for(same) != search_id_for(other)
    assert search_id_for(raw).startswith("chemprot-tiny-")


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.max_len=4"], "data.max_len=4 must be an integer >= 8; fix the override data.max_len=..."),
    (["data.train_limit=0"], "data.train_limit=0 must be an integer >= 1"),
    (["train.batch_size=2.5"], "train.batch_size=2.5 must be an integer >= 1"),
    (["train.precision=fp16"], "train.precision='fp16' is unknown; use one of auto, fp32, bf16"),
    (["stages.abd.precision=fp8"], "stages.abd.precision='fp8' is unknown"),
    (["stages.abd.projection=diagonal"], "stages.abd.projection='diagonal' is unknown; use one of fixed_random, learned"),
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
    assert (a.status, a.epochs_run, a.best_epoch, a.best_metrics["dev_f1"]) == ("completed", 3, 2, 0.7)
    assert a.checkpoint == str(ckpt) and a.curve == {1: 0.4 - 1e-6, 2: 0.7 - 1e-6, 3: 0.6 - 1e-6}
    assert a.params == {"lr": 1e-4} and a.node_id == "n1"
    assert b.status == "pruned"  # 1 of 3 epochs with a pruner on
    assert c.status == "errored" and c.error == "RuntimeError: NonFiniteLossError: loss became non-finite"
    assert collect_trials(results[:1], 3, set(), pruner_on=False)[0].status == "completed"
    assert trial_index("a_00000", "/x/y_a_00000_7_p=1") == 7 and trial_index("t_00012", "/x/odd") == 12


def _record(trial_id: str, f1: float, ece: float, status: str = "completed", **params: Any) -> TrialRecord:
    return TrialRecord(trial_id=trial_id, status=status, params=params, epochs_run=2, best_epoch=2,
                       best_metrics={"dev_f1": f1, "dev_ece": ece}, last_metrics={}, checkpoint=f"/c/{trial_id}")


def test_a_resume_runs_only_the_missing_grid_points_and_runs() -> None:
    done = [_record("t1", 0.5, 0.1, lr=1e-4, beta=0.0), _record("t2", 0.6, 0.2, lr=1e-4, beta=0.5)]
    grid = {"lr": [1e-4, 3e-4], "beta": [0.0, 0.5]}
    assert remaining_grid_points(grid, done) == [{"lr": 3e-4, "beta": 0.0}, {"lr": 3e-4, "beta": 0.5}]
    assert remaining_grid_points({"lr": [1e-4], "beta": [0.0, 0.5]}, done) == []
    runs = [{"variant": v, "seed": s} for v in ("doktra", "student_ft") for s in (1, 2)]
    finished = [TrialRecord("f", "completed", {"variant": "doktra", "seed": 2}, 1, 1, {}, {}, None)]
    assert remaining_runs(runs, ("variant", "seed"), finished) == [runs[0], runs[2], runs[3]]


def test_winner_rule_per_stage(tmp_path: Path) -> None:
    from doktra_tune.search.schema import SelectionOptions

    records = [_record("a", 0.80, 0.20, beta=0.0), _record("b", 0.80, 0.10, beta=0.5),
               _record("c", 0.90, 0.30, "pruned", beta=0.7), _record("d", 0.79, 0.01, beta=0.3)]
    exact = SelectionOptions(kind="lexicographic", f1_tolerance=0.0)
    assert pick_winner("ctt", records, selection_rule(exact, "ctt"), tmp_path).trial_id == "b"  # F1 tie: ECE
    assert pick_winner("abd", records, selection_rule(exact, "abd"), tmp_path).trial_id == "a"  # F1 alone
    loose = SelectionOptions(kind="lexicographic", f1_tolerance=0.02)
    assert pick_winner("ctt", records, selection_rule(loose, "ctt"), tmp_path).trial_id == "d"


# ----------------------------------------------------------------------------- final runs


def test_final_specs_and_summary() -> None:
    ctt = {"params": {"beta": 0.5, "lr": 1.5e-4, "epochs": 2}, "checkpoint": "/w/ctt",
           "baseline": {"checkpoint": "/w/ctt_ft"}}
    student = {"params": {"lr": 3e-4, "epochs": 6}, "best_epoch": 4, "checkpoint": "/w/student"}
    abd = {"params": {"lr": 3e-4, "beta": 0.5, "gamma": 0.5, "epochs": 4}, "checkpoint": "/w/abd"}
    specs = final_specs(ctt, student, abd, variants=["teacher_ft", "student_ft", "doktra", "doktra_no_ctt"],
                        seeds=[1, 2], eval_splits=["dev", "test"])
    assert len(specs) == 8
    by = {(s["variant"], s["seed"]): s for s in specs}
    assert by[("teacher_ft", 1)] == {"stage": "ctt", "beta": 0.0, "lr": 1.5e-4, "epochs": 2, "variant": "teacher_ft",
                                     "seed": 1, "eval_splits": ["dev", "test"], "eval_every_epoch": False}
    assert by[("student_ft", 2)]["epochs"] == 4  # e1 = the winner's best epoch
    assert by[("doktra", 1)]["teacher_checkpoint"] == "/w/ctt"
    assert by[("doktra_no_ctt", 2)]["teacher_checkpoint"] == "/w/ctt_ft"

    def final_record(variant: str, seed: int, f1: float, status: str = "completed") -> TrialRecord:
        return TrialRecord(f"{variant}{seed}", status, {"variant": variant, "seed": seed, "stage": "abd", "lr": 1.0},
                           2, 2, {}, {"test_f1": f1, "dev_f1": f1, "epoch": 2.0, "time_total_s": 3.0}, None)

    runs = final_runs([final_record("doktra", 1, 0.6), final_record("doktra", 2, 0.7),
                       final_record("doktra", 3, 0.1, "errored")])
    assert runs[0]["metrics"] == {"test_f1": 0.6, "dev_f1": 0.6, "epoch": 2.0}
    assert runs[0]["params"] == {"lr": 1.0}
    s = summarize(runs)["doktra"]
    assert s["n"] == 2 and s["errored"] == 1
    assert math.isclose(s["test_f1"]["mean"], 0.65) and math.isclose(s["test_f1"]["std"], math.sqrt(0.005))
