"""The final runs' plan (`doktra_tune.plan.final.FinalPlan`), in process and fast: no run trained
twice when β₁ = 0 wins CTT (the paper's HoC, Table A1), and the `shared_models` protocol (every
DoKTra seed distils from the first seed's teacher into its student, Table 2's small DoKTra ±)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from doktra_tune.errors import ConfigError
from doktra_tune.plan.budget import beta0_saving, plan_budget
from doktra_tune.plan.final import FinalPlan, final_runs, missing_runs, summarize
from doktra_tune.plan.search_plan import build_plan
from doktra_tune.search import compose_config
from doktra_tune.trial_record import TrialRecord

DEFAULT_VARIANTS = ("teacher_ctt", "teacher_ft", "student_ft", "doktra", "doktra_no_ctt")  # config.yaml's final.variants
ALL_VARIANTS = (*DEFAULT_VARIANTS, "kld", "ctt_kld", "student_ft_cpl")


def _winners(beta1: float, ctt_trial: str | None = "c0", baseline_trial: str | None = "c1") -> dict[str, Any]:
    ctt: dict[str, Any] = {"params": {"beta": beta1, "lr": 1.5e-4, "epochs": 2}, "checkpoint": "/w/ctt",
                           "baseline": {"checkpoint": "/w/ctt_ft"}}
    if ctt_trial is not None:
        ctt["trial_id"] = ctt_trial
    if baseline_trial is not None:
        ctt["baseline"]["trial_id"] = baseline_trial
    return {
        "ctt": ctt,
        "student": {"params": {"lr": 3e-4, "epochs": 6}, "e1": 6, "checkpoint": "/w/student"},
        "abd": {"params": {"lr": 3e-4, "beta": 0.5, "gamma": 0.5, "epochs": 4}, "checkpoint": "/w/abd"},
    }


def _plan(beta1: float = 0.0, **kw: Any) -> FinalPlan:
    base: dict[str, Any] = dict(winners=_winners(beta1), variants=DEFAULT_VARIANTS, seeds=(1, 2, 3), folds=None,
                                eval_splits=("dev", "test"), protocol="chain", every_epoch=False, search_seed=42)
    return FinalPlan(**{**base, **kw})


def _records(plan: FinalPlan) -> list[dict[str, Any]]:
    return [r.record() for r in plan.runs("/m")]


def _count(plan: FinalPlan) -> Counter:
    return Counter(r["variant"] for r in _records(plan))


# ----------------------------------------------------------------------------- de-duplication


@pytest.mark.parametrize("protocol", ["chain", "shared_models"])
def test_a_beta0_winner_trains_teacher_ft_and_doktra_no_ctt_once(protocol: str) -> None:
    """β₁ = 0 won CTT: teacher_ft has teacher_ctt's hyperparameters, seed for seed the same run, and
    doktra_no_ctt distils from it with doktra's loss into doktra's student: 3 + 3 runs fewer."""
    calibrated, zero = _plan(0.5, protocol=protocol), _plan(0.0, protocol=protocol)
    assert _count(calibrated) == {v: 3 for v in DEFAULT_VARIANTS}
    assert len(calibrated.runs("/m")) == 15 and calibrated.aliases() == {} and calibrated.saved_runs() == 0
    assert _count(zero) == {"teacher_ctt": 3, "student_ft": 3, "doktra": 3}  # 3 teacher_ft, 3 doktra_no_ctt fewer
    assert len(zero.runs("/m")) == 9 and zero.saved_runs() == 6
    assert zero.aliases() == {"teacher_ft": "teacher_ctt", "doktra_no_ctt": "doktra"}
    records = _records(zero)
    assert {r["also"] for r in records if r["variant"] == "teacher_ctt"} == {"teacher_ft"}
    assert {r["also"] for r in records if r["variant"] == "doktra"} == {"doktra_no_ctt"}
    assert not any("also" in r for r in records if r["variant"] == "student_ft")
    assert [r["beta"] for r in records if r["variant"] == "teacher_ctt"] == [0.0] * 3
    assert zero.same_note() == ("; β₁ = 0 won CTT: teacher_ft = teacher_ctt, doktra_no_ctt = doktra, each "
                                "trained once (6 runs fewer)")
    assert calibrated.same_note() == ""
    undeduped = replace(zero, dedupe=False)
    assert _count(undeduped) == {v: 3 for v in DEFAULT_VARIANTS}  # what the plan was before


def test_every_variant_aliases_once_with_all_eight() -> None:
    """All of Table 6: kld distils from teacher_ft = teacher_ctt with ctt_kld's loss, and the CPL
    student with β = β₁ = 0 is plain fine-tuning; 4 of 8 variants are others' runs."""
    zero = _plan(0.0, variants=ALL_VARIANTS, seeds=(1, 2))
    assert zero.aliases() == {"teacher_ft": "teacher_ctt", "student_ft_cpl": "student_ft",
                              "doktra_no_ctt": "doktra", "kld": "ctt_kld"}
    assert _count(zero) == {"teacher_ctt": 2, "student_ft": 2, "doktra": 2, "ctt_kld": 2}
    assert _count(_plan(0.3, variants=ALL_VARIANTS, seeds=(1, 2))) == {v: 2 for v in ALL_VARIANTS}
    assert zero.saved_runs() == 8
    also = {r["variant"]: r.get("also") for r in _records(zero)}
    assert also == {"teacher_ctt": "teacher_ft", "student_ft": "student_ft_cpl", "doktra": "doktra_no_ctt",
                    "ctt_kld": "kld"}
    kld = [r for r in _records(zero) if r["variant"] == "ctt_kld"]
    assert [r["needs"] for r in kld] == [["teacher_ctt-seed1", "student_ft-seed1"], ["teacher_ctt-seed2", "student_ft-seed2"]]


def test_the_winners_protocol_aliases_only_the_very_same_trial() -> None:
    """winners: teacher_ft is the search's β₁ = 0 teacher; it is teacher_ctt's run only when it is
    the CTT winner's own trial (both trial ids known and equal)."""
    def plan(ctt: str | None, baseline: str | None) -> FinalPlan:
        return _plan(0.0, protocol="winners", winners=_winners(0.0, ctt, baseline))

    same = plan("c0", "c0")
    assert same.aliases() == {"teacher_ft": "teacher_ctt", "doktra_no_ctt": "doktra"}
    assert _count(same) == {"teacher_ctt": 1, "student_ft": 1, "doktra": 3}  # 1 scored teacher_ft + 3 fewer
    assert len(plan("c0", "c1").runs("/m")) == 9 and same.saved_runs() == 4
    (evaluated,) = [r for r in _records(same) if r["variant"] == "teacher_ctt"]
    assert evaluated["stage"] == "evaluate" and evaluated["also"] == "teacher_ft"
    assert {r["teacher_checkpoint"] for r in _records(same) if r["variant"] == "doktra"} == {"/w/ctt"}
    for ctt, baseline in (("c0", "c1"), ("c0", None), (None, "c0"), (None, None)):
        assert plan(ctt, baseline).aliases() == {}, (ctt, baseline)
    cpl = _plan(0.0, protocol="winners", winners=_winners(0.0, "c0", "c0"),
                variants=("student_ft", "student_ft_cpl"))
    assert cpl.aliases() == {}  # the search's own student is not a seed re-run of it


def test_only_a_variant_that_runs_is_aliased_to() -> None:
    """No teacher_ctt among the runs: teacher_ft is trained as usual. An aliased teacher's
    distillation reads its target's model by name (and that target publishes it)."""
    no_ctt = _plan(0.0, variants=("teacher_ft", "student_ft", "doktra_no_ctt"))
    assert no_ctt.aliases() == {} and _count(no_ctt) == {"teacher_ft": 3, "student_ft": 3, "doktra_no_ctt": 3}
    assert {r["beta"] for r in _records(no_ctt) if r["variant"] == "teacher_ft"} == {0.0}
    assert [r["needs"][0] for r in _records(no_ctt) if r["variant"] == "doktra_no_ctt"] == [
        "teacher_ft-seed1", "teacher_ft-seed2", "teacher_ft-seed3"]
    # doktra_no_ctt without doktra: its teacher is teacher_ctt's runs, it is trained itself
    reads_ctt = _plan(0.0, variants=("teacher_ctt", "student_ft", "doktra_no_ctt"))
    assert reads_ctt.aliases() == {"teacher_ft": "teacher_ctt"}
    assert _count(reads_ctt) == {"teacher_ctt": 3, "student_ft": 3, "doktra_no_ctt": 3}
    records = _records(reads_ctt)
    assert [(r["teacher_checkpoint"], r["teacher"]) for r in records if r["variant"] == "doktra_no_ctt"] == [
        (f"/m/teacher_ctt-seed{s}", f"teacher_ctt-seed{s}") for s in (1, 2, 3)]
    assert [r["publish"] for r in records if r["variant"] == "teacher_ctt"] == [
        "teacher_ctt-seed1", "teacher_ctt-seed2", "teacher_ctt-seed3"]
    # teacher_ft, not asked for but read by doktra_no_ctt, is still reported: as teacher_ctt's runs
    assert {r["also"] for r in records if r["variant"] == "teacher_ctt"} == {"teacher_ft"}


def _record(spec: dict[str, Any], f1: float, status: str = "completed") -> TrialRecord:
    return TrialRecord(f"{spec['variant']}-{spec['seed']}", status, spec, 2, 2,
                       {"test_f1": f1, "dev_f1": f1, "epoch": 2.0}, {}, None)


def test_results_give_every_variant_its_rows() -> None:
    """results.json: an alias row is a copy of the trained run's with `variant` the alias,
    `same_as` the trained variant and `trained` false; the summary has both, the same numbers."""
    zero = _plan(0.0)
    specs = zero.runs("/m")
    f1 = {"teacher_ctt": [0.70, 0.72, 0.74], "student_ft": [0.5, 0.6, 0.7], "doktra": [0.60, 0.64, 0.65]}
    records = [_record(s.record(), f1[s.labels["variant"]][s.overrides["seed"] - 1]) for s in specs]
    runs = final_runs(records)
    assert len(runs) == 15 and Counter(r["variant"] for r in runs) == {v: 3 for v in DEFAULT_VARIANTS}
    alias = next(r for r in runs if r["variant"] == "teacher_ft" and r["seed"] == 2)
    trained = next(r for r in runs if r["variant"] == "teacher_ctt" and r["seed"] == 2)
    assert alias == {**trained, "variant": "teacher_ft", "same_as": "teacher_ctt", "trained": False, "also": []}
    assert trained["trained"] is True and trained["also"] == ["teacher_ft"] and trained["same_as"] is None
    assert "also" not in trained["params"] and trained["params"]["beta"] == 0.0
    summary = summarize(runs)
    for alias_variant, target in (("teacher_ft", "teacher_ctt"), ("doktra_no_ctt", "doktra")):
        assert summary[alias_variant]["same_as"] == target and "same_as" not in summary[target]
        assert summary[alias_variant]["n"] == summary[target]["n"] == 3
        assert summary[alias_variant]["test_f1"] == summary[target]["test_f1"]
    assert math.isclose(summary["teacher_ft"]["test_f1"]["mean"], 0.72)
    (hole, hole_alias) = missing_runs([s for s in specs if s.labels["variant"] == "doktra"][:1])
    assert (hole["variant"], hole_alias["variant"], hole_alias["same_as"]) == ("doktra", "doktra_no_ctt", "doktra")
    assert hole_alias["status"] == "errored" and not hole_alias["trained"]


# ----------------------------------------------------------------------------- shared_models


def test_shared_models_distils_every_seed_from_the_first_seeds_teacher_and_student() -> None:
    """shared_models: the teacher and student rows are seed re-runs (each seed, each fold), every
    distillation seed of a fold reads seed 1's teacher and student of that fold by name."""
    plan = _plan(0.5, protocol="shared_models", seeds=(1, 2, 3), folds=(1, 2))
    records = _records(plan)
    assert Counter(r["variant"] for r in records) == {v: 6 for v in DEFAULT_VARIANTS}  # as many runs as chain
    assert len(records) == len(_records(_plan(0.5, folds=(1, 2))))
    doktra = {(r["seed"], r["fold"]): r for r in records if r["variant"] == "doktra"}
    assert doktra[(2, 1)]["needs"] == ["teacher_ctt-seed1-fold1", "student_ft-seed1-fold1"]
    assert doktra[(2, 2)]["needs"] == ["teacher_ctt-seed1-fold2", "student_ft-seed1-fold2"]
    assert (doktra[(3, 2)]["teacher_checkpoint"], doktra[(3, 2)]["model"]) == (
        "/m/teacher_ctt-seed1-fold2", "/m/student_ft-seed1-fold2")
    assert (doktra[(3, 2)]["teacher"], doktra[(3, 2)]["student"]) == ("teacher_ctt-seed1-fold2", "student_ft-seed1-fold2")
    assert [doktra[(s, 1)]["seed"] for s in (1, 2, 3)] == [1, 2, 3]  # the distillation's own seed varies
    no_ctt = [r for r in records if r["variant"] == "doktra_no_ctt" and r["fold"] == 1]
    assert {tuple(r["needs"]) for r in no_ctt} == {("teacher_ft-seed1-fold1", "student_ft-seed1-fold1")}
    published = sorted(r["publish"] for r in records if r.get("publish"))  # only the models read
    assert published == sorted(f"{v}-seed1-fold{f}" for v in ("teacher_ctt", "teacher_ft", "student_ft") for f in (1, 2))
    teachers = [r for r in records if r["variant"] == "teacher_ctt"]
    assert sorted((r["seed"], r["fold"]) for r in teachers) == [(s, f) for s in (1, 2, 3) for f in (1, 2)]
    assert {r["origin"] for r in records} == {"seed re-run"}


def test_shared_models_with_one_seed_is_chain() -> None:
    for beta1 in (0.0, 0.5):
        for folds in (None, (1, 3)):
            chain = _plan(beta1, variants=ALL_VARIANTS, seeds=(7,), folds=folds)
            shared = _plan(beta1, variants=ALL_VARIANTS, seeds=(7,), folds=folds, protocol="shared_models")
            assert [r.to_json() for r in shared.runs("/m")] == [r.to_json() for r in chain.runs("/m")]


def test_shared_models_is_the_default_and_checked() -> None:
    def final(*overrides: str):
        return build_plan(compose_config(list(overrides))).config.final

    assert final("task=chemprot").protocol == "shared_models"
    assert final("task=chemprot", "preset=tiny").protocol == "shared_models"
    assert final("task=chemprot", "preset=cpu").protocol == "chain"  # pinned: the README's figures
    assert final("task=chemprot", "preset=proxy").protocol == "chain"
    assert final("task=chemprot", "final.protocol=chain").protocol == "chain"
    gad = final("task=gad", "final.protocol=shared_models")
    assert gad.protocol == "shared_models" and gad.folds == tuple(range(1, 11))  # folds as chain
    assert final("task=gad", "final.protocol=winners").folds is None
    with pytest.raises(ConfigError) as err:
        final("task=chemprot", "final.protocol=shared")
    assert str(err.value) == "final.protocol='shared' is unknown; use one of shared_models, chain, winners"

    from doktra_tune.plan.schema import FinalOptions

    assert FinalOptions.from_raw({"seeds": [1], "variants": ["doktra"]}, "chemprot").protocol == "shared_models"


# ----------------------------------------------------------------------------- the dry run


def test_the_dry_run_counts_the_runs_a_beta0_winner_saves() -> None:
    """The winner is unknown before the search: the final note says how many runs fewer a β₁ = 0
    winner trains (a β₁ = 0 stand-in winner), and a grid of β₁ = 0 alone is counted de-duplicated."""
    def final(*overrides: str):
        plan = build_plan(compose_config(["task=chemprot", *overrides]))
        return plan, plan_budget(plan).stage("final")

    plan, paper = final()
    assert (paper.trials, paper.epoch_units) == (15, 120)  # 3 seeds x (5 + 5 + 10 + 10 + 10)
    assert beta0_saving(plan) == (6, 3 * 5 + 3 * 10, {"teacher_ft": "teacher_ctt", "doktra_no_ctt": "doktra"})
    assert "(6 runs, 45 epoch-units fewer if β₁ = 0 wins CTT: teacher_ft = teacher_ctt, doktra_no_ctt = doktra)" \
        in paper.note
    _, only_zero = final("stages.ctt.grid.beta=[0.0]")
    assert (only_zero.trials, only_zero.epoch_units) == (9, 120 - 45)
    assert "β₁ = 0 is CTT's only value: teacher_ft = teacher_ctt, doktra_no_ctt = doktra, each trained once " \
           "(6 runs fewer)" in only_zero.note
    plan, no_zero = final("stages.ctt.grid.beta=[0.3,0.5]")
    assert no_zero.trials == 15 and beta0_saving(plan) == (0, 0, {}) and "β₁ = 0" not in no_zero.note
    _, winners = final("final.protocol=winners")
    assert winners.trials == 9 and "(4 runs, 30 epoch-units fewer if β₁ = 0 wins CTT" in winners.note
    _, winners_zero = final("final.protocol=winners", "stages.ctt.grid.beta=[0.0]")
    assert winners_zero.trials == 5  # teacher_ctt and student_ft scored, 3 DoKTra seeds
