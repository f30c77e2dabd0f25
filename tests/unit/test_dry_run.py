"""`search.dry_run=true`: the plan's budget (trials and epoch-units per stage, `plan.budget`), its
GPU-hours estimate (`plan.estimate`) and the CLI that prints them without Ray, torch, downloads or
a run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from doktra_tune.errors import ConfigError
from doktra_tune.plan.budget import PlanBudget, StageBudget, plan_budget
from doktra_tune.plan.dry_run import dry_run_lines
from doktra_tune.plan.estimate import MODELS, architecture, estimate, throughput
from doktra_tune.plan.search_plan import build_plan
from doktra_tune.search import compose_config

REPO_ROOT = Path(__file__).resolve().parents[2]
TASK_CONF = REPO_ROOT / "doktra_tune" / "conf" / "task"


def _plan(*overrides: str):
    return build_plan(compose_config(list(overrides)))


def _counts(budget: PlanBudget) -> dict[str, tuple[int, int, int]]:
    return {s.stage: (s.trials, s.epoch_units, s.grid_epoch_units) for s in budget.stages}


# ----------------------------------------------------------------------------- budget


def test_paper_chemprot_budget_counts_what_the_driver_trains() -> None:
    budget = plan_budget(_plan("task=chemprot"))
    assert [s.stage for s in budget.stages] == ["ctt", "student", "abd", "final"]
    # CTT: 4 beta1 x 5 epochs (Table A1); student: 3 lr1 x e1 in 5..10, each its own e1: 3 x 45
    # ABD: 3 lr2 x (a trunk of int(0.9 x 10) = 9 + 4 beta2 x (4 + 3 + 2 + 1) branch epochs) of 48 x 10
    # final (chain, 3 seeds): teacher_ctt 5 + teacher_ft 5 + student_ft e1 <= 10 + doktra 10 + doktra_no_ctt 10
    assert _counts(budget) == {
        "ctt": (4, 20, 20), "student": (18, 135, 135), "abd": (48, 147, 480), "final": (15, 3 * 40, 3 * 40),
    }
    assert "3 trunks of 9 + 48 branches of 1..4" in budget.stage("abd").note
    assert "e1 counted at its largest, 10" in budget.stage("final").note
    assert isinstance(budget.stage("ctt"), StageBudget)
    with pytest.raises(KeyError):
        budget.stage("outcome")


def test_gad_budget_uses_its_ctt_epochs_and_ten_folds() -> None:
    ctt_epochs = yaml.safe_load((TASK_CONF / "gad.yaml").read_text())["ctt_epochs"]
    assert ctt_epochs == 3  # Table A1
    budget = plan_budget(_plan("task=gad"))
    per_fold = 3 * (ctt_epochs + ctt_epochs + 10 + 10 + 10)  # 3 seeds: two teachers, student, two distillations
    assert _counts(budget) == {
        "ctt": (4, 4 * ctt_epochs, 4 * ctt_epochs), "student": (18, 135, 135), "abd": (48, 147, 480),
        "final": (10 * 15, 10 * per_fold, 10 * per_fold),
    }
    assert "x 10 folds" in budget.stage("final").note
    one_fold = plan_budget(_plan("task=gad", "final.folds=[1]")).stage("final")
    assert (one_fold.trials, one_fold.epoch_units) == (15, per_fold)


def test_without_the_shared_prefix_every_abd_point_trains_its_e2() -> None:
    abd = plan_budget(_plan("task=chemprot", "stages.abd.share_prefix=false")).stage("abd")
    assert (abd.trials, abd.epoch_units, abd.grid_epoch_units) == (48, 480, 480)
    assert "share_prefix=false" in abd.note


def test_abd_budget_counts_the_trunks_and_branches_of_the_shared_prefix() -> None:
    """The budget reads the driver's own prefix (`plan.shared_prefix`, `SharedPrefix`, `switch_epoch`):
    trunks to the grid's latest switch, one branch per point from its own switch."""
    from doktra_tune.plan.search_plan import shared_prefix
    from doktra_tune.switch import switch_epoch

    assert switch_epoch(5, 0.6) == 3 and switch_epoch(10, 0.9) == 9  # Alg. 1 line 3, int(e2 * gamma)
    for overrides in ([], ["stages.abd.grid.gamma=[0.25,0.5]", "stages.abd.epochs=4"], ["preset=cpu"]):
        plan = _plan("task=chemprot", *overrides)
        space = plan.spaces["abd"]
        e2 = plan.stage_epochs["abd"]
        prefix = shared_prefix(plan)
        assert prefix is not None and prefix.keys == ("lr",) and prefix.root.endswith("stages/abd/trunks")
        trunks = sum(prefix.trunk_config(p, e2)["stop_after_epoch"] for p in prefix.trunk_points(space.params))
        per_gamma = sum(e2 - switch_epoch(e2, g) for g in space.params["gamma"])
        branches = per_gamma * len(space.params["beta"]) * len(space.params["lr"])
        assert plan_budget(plan).stage("abd").epoch_units == trunks + branches


def test_best_epoch_student_trains_one_run_per_lr1() -> None:
    student = plan_budget(_plan("task=chemprot", "stages.student.e1_mode=best_epoch")).stage("student")
    assert (student.trials, student.epoch_units) == (3, 30)
    assert "one run of 10 epochs" in student.note


def test_stop_after_leaves_the_later_stages_out() -> None:
    def stages(stop_after: str) -> list[str]:
        return [s.stage for s in plan_budget(_plan("task=chemprot", f"search.stop_after={stop_after}")).stages]

    assert stages("ctt") == ["ctt"] and stages("student") == ["ctt", "student"]
    assert stages("abd") == ["ctt", "student", "abd"]  # the final runs follow only a whole search
    lines = dry_run_lines(_plan("task=chemprot", "search.stop_after=student"))
    assert [line.split()[0] for line in lines if line.split()[1:2] and line.split()[1].isdigit()] == \
        ["ctt", "student", "total"]
    assert "final runs: none (search.stop_after=student)" in lines


def test_cpu_preset_budget() -> None:
    budget = plan_budget(_plan("task=chemprot", "preset=cpu"))
    # CTT 2 beta1 x 2; student lr1 {3e-4, 5e-4} x e1 {3, 5}; ABD e2 = 4, gamma {0.5, 0.75}: a trunk of 3,
    # branches 2 + 1 per beta2
    # final: 3 seeds x (teacher_ctt 2 + teacher_ft 2 + student_ft 5 + doktra 4 + doktra_no_ctt 4)
    assert _counts(budget) == {"ctt": (2, 4, 4), "student": (4, 16, 16), "abd": (4, 9, 16), "final": (15, 51, 51)}


def test_winners_protocol_scores_the_search_models_and_adds_a_beta0_teacher_when_the_grid_has_none() -> None:
    budget = plan_budget(_plan("task=chemprot", "final.protocol=winners"))
    assert _counts(budget)["final"] == (9, 60, 60)  # 3 scored models + 6 distillations of 10 epochs
    no_zero = plan_budget(_plan("task=chemprot", "final.protocol=winners", "stages.ctt.grid.beta=[0.3,0.5]"))
    assert _counts(no_zero)["ctt"] == (3, 15, 15)  # 2 grid trials + the beta1=0 run (SearchDriver.baseline_teacher)
    assert "beta1=0 run" in no_zero.stage("ctt").note
    chain = plan_budget(_plan("task=chemprot", "stages.ctt.grid.beta=[0.3,0.5]"))
    assert _counts(chain)["ctt"] == (2, 10, 10)  # the chain protocol trains its beta1=0 teachers in the final runs


def test_tpe_and_pruners_give_upper_bounds() -> None:
    budget = plan_budget(_plan("task=chemprot", "search.mode=tpe", "search.num_samples=6", "search.pruner=median"))
    assert _counts(budget)["student"] == (6, 60, 60)  # 6 samples at the longest e1
    assert _counts(budget)["abd"] == (6, 3 * 9 + 6 * 4, 60)  # every trunk; each branch at its longest
    for stage in ("ctt", "student", "abd"):
        assert "upper bound" in budget.stage(stage).note
    pruned = plan_budget(_plan("task=chemprot", "search.pruner=successive_halving")).stage("student")
    assert pruned.epoch_units == 135 and "pruner successive_halving stops trials early: an upper bound" in pruned.note


# ----------------------------------------------------------------------------- estimate


def test_parameter_counts_match_the_published_ones() -> None:
    published = {"dmis-lab/biobert-base-cased-v1.1": 108.3e6, "albert-xlarge-v2": 58.7e6, "roberta-large": 355.4e6,
                 "roberta-base": 124.6e6, "minilm": 22.7e6}
    for spec, count in published.items():
        assert architecture(spec).params == pytest.approx(count, rel=0.005), spec
    assert architecture("yiyanghkust/finbert-pretrain").params == pytest.approx(110e6, rel=0.01)
    albert = architecture("albert-xlarge-v2")
    assert albert.compute_params > 20 * albert.params / 2  # 24 uses of one 50M-parameter layer
    assert architecture("random:bert:L4-H192").layers == 4 and architecture("minilm@L3").layers == 3
    assert architecture("some/other-model") is None
    assert set(MODELS) >= {"dmis-lab/biobert-base-cased-v1.1", "albert-xlarge-v2", "roberta-large", "roberta-base"}


def test_throughput_follows_the_flop_formula() -> None:
    bert = architecture("dmis-lab/biobert-base-cased-v1.1")
    n = bert.compute_params
    train, evaluate = throughput(bert, "auto", 128)
    forward = 128 * (2 * n + 4 * 12 * 128 * 768)
    assert train == pytest.approx(312e12 * 0.35 / (3 * forward))
    assert evaluate == pytest.approx(3 * train)
    assert throughput(bert, "fp32", 128)[0] == pytest.approx(19.5e12 * 0.60 / (3 * forward))
    assert throughput(bert, "tf32", 128)[0] == pytest.approx(156e12 * 0.35 / (3 * forward))


def _hours(plan, precision=None) -> dict[str, float | None]:
    return {s.stage: s.gpu_hours(precision) for s in estimate(plan).stages}


def test_gpu_hours_follow_the_epoch_units() -> None:
    shared = _hours(_plan("task=chemprot"))
    alone = _hours(_plan("task=chemprot", "stages.abd.share_prefix=false"))
    assert shared["ctt"] == alone["ctt"] and shared["student"] == alone["student"]
    assert shared["abd"] / alone["abd"] == pytest.approx(147 / 480, rel=0.01)  # + the same one teacher pass
    student = architecture("albert-xlarge-v2")
    train, evaluate = throughput(student, "tf32", 128)  # the paper preset: TF32, as the authors' PyTorch 1.8.1
    assert shared["student"] == pytest.approx(135 * (17865 / train + 11263 / evaluate) / 3600)
    limited = _hours(_plan("task=chemprot", "data.train_limit=1000", "data.dev_limit=100"))
    assert limited["student"] == pytest.approx(135 * (1000 / train + 100 / evaluate) / 3600)


def test_gpu_hours_follow_the_precision() -> None:
    """The paper preset: random batches of 50 in TF32 (the authors' PyTorch 1.8.1 default); the three
    precisions side by side divide every stage's FLOPs by their sustained FLOP rates."""
    paper = _plan("task=chemprot")
    assert {s.precision for s in paper.config.stages.values()} == {"tf32"} and paper.config.train.batch_size == 50
    assert paper.config.train.batching == "random"
    fp32, tf32, bf16 = (_hours(paper, p) for p in ("fp32", "tf32", "bf16"))
    assert _hours(paper) == tf32
    for stage in fp32:
        assert fp32[stage] == pytest.approx(tf32[stage] * (156e12 * 0.35) / (19.5e12 * 0.60)), stage
        assert tf32[stage] == pytest.approx(2 * bf16[stage]), stage
    lines = dry_run_lines(paper)
    assert any("batch 50, batching random" in line for line in lines)
    assert any(line.startswith("throughput (student, estimate)") and "tf32: train" in line for line in lines)
    (total,) = [line.split() for line in lines if line.startswith("total")]
    assert total[3:6] == ["182.0", "39.0", "19.5"]  # fp32, tf32, bf16: the README's figures
    assert any(line.startswith("tokens: data.max_len = 128 per sequence, not counted (the data are not at") for line in lines)


def test_a_model_without_a_figure_is_named_not_guessed() -> None:
    plan = _plan("task=chemprot", "student_model=some/other-model")
    gpu = estimate(plan)
    assert gpu.missing == ("some/other-model",) and gpu.total() is None
    unknown = {s.stage: s.gpu_hours() is None for s in gpu.stages}
    assert unknown == {"ctt": False, "student": True, "abd": True, "final": True}
    assert any("no throughput figure for some/other-model" in line for line in dry_run_lines(plan))


def test_real_tokens_are_counted_where_the_data_are(data_root: Path) -> None:
    """The cpu preset's ChemProt (SciBERT's copy, 1,000 sentences, max_len 96): MiniLM's tokenizer, the
    batches the stages train on. Bucketed batches of 16 hold 1,038 tokens each (1,022 real), random ones
    1,515; a FLOP count from them is below max_len's (96 per sequence)."""
    overrides = ["task=chemprot", "preset=cpu", f"data_root={data_root}"]
    bucketed = estimate(_plan(*overrides))
    random_ = estimate(_plan(*overrides, "train.batching=random"))
    teacher = bucketed.tokens.models["minilm"]
    assert teacher.tokenizer.startswith("all-MiniLM-L6-v2's WordPiece (the model's own)")
    assert (teacher.train.examples, teacher.evaluation["dev"].examples, teacher.evaluation["test"].examples) == (1000, 200, 300)
    assert [round(x) for x in teacher.tokens_per_batch()] == [1038, 1022]
    assert [round(x) for x in random_.tokens.models["minilm"].tokens_per_batch()] == [1515, 1022]
    assert teacher.train.real_tokens == random_.tokens.models["minilm"].train.real_tokens
    for stage in ("ctt", "student", "abd", "final"):
        costs = {s.stage: s for s in bucketed.stages}
        assert 0 < costs[stage].gpu_hours("fp32") < {s.stage: s for s in random_.stages}[stage].gpu_hours("fp32")
    not_counted = estimate(_plan("task=chemprot", "preset=cpu", "data_root=/nonexistent"))
    assert not not_counted.tokens.models and "the data are not at /nonexistent" in not_counted.tokens.reason
    assert not_counted.total("fp32") > random_.total("fp32")  # 96 tokens per sequence: the upper bound


def test_a_hub_model_not_cached_is_counted_with_the_named_stand_in(data_root: Path) -> None:
    plan = _plan("task=chemprot", "preset=cpu", f"data_root={data_root}",
                 "teacher_model=dmis-lab/biobert-base-cased-v1.1")
    counted = estimate(plan).tokens.models["dmis-lab/biobert-base-cased-v1.1"]
    assert counted.tokenizer.startswith("all-MiniLM-L6-v2's WordPiece (stand-in: dmis-lab/biobert-base-cased-v1.1's "
                                        "tokenizer is not in the local Hugging Face cache)")
    lines = dry_run_lines(plan)
    assert any(line.startswith("tokens per batch (teacher dmis-lab/biobert-base-cased-v1.1): 1,038 padded") and
               "stand-in" in line for line in lines)


def test_cpu_prediction_shares_the_runs_over_the_local_slots(data_root: Path) -> None:
    """The CPU column: each run's FLOPs at the measured per-thread rate, the stage's runs over
    ray.num_cpus / cpus_per_trial slots, never less than its longest run."""
    from doktra_tune.plan.estimate import (
        CPU_REFERENCE,
        cpu_stage_seconds,
        local_concurrency,
    )

    plan = _plan("task=chemprot", "preset=cpu", f"data_root={data_root}", "ray.num_cpus=2")
    assert local_concurrency(plan) == 2
    assert local_concurrency(_plan("task=chemprot", "preset=cpu", "ray.num_cpus=2",
                                   "resources.max_concurrent_trials=1")) == 1
    ctt = next(s for s in estimate(plan).stages if s.stage == "ctt")
    seconds = ctt.cpu_job_seconds(CPU_REFERENCE)
    assert len(seconds) == 2 and cpu_stage_seconds(ctt, 2) == pytest.approx(max(sum(seconds) / 2, max(seconds)))
    assert cpu_stage_seconds(ctt, 1) == pytest.approx(sum(seconds))
    teacher = architecture("minilm")
    tokens = estimate(plan).tokens.models["minilm"]
    trial = 2 * tokens.train.flops(teacher.train_flops) / CPU_REFERENCE.train_flops
    assert min(seconds) > trial  # + its two dev passes (and, for the first, the teacher-cache pass: none in CTT)
    lines = dry_run_lines(plan)
    assert any(line.startswith("CPU: predicted wall time with 2 one-thread trial(s) at once") for line in lines)


def test_dry_run_is_a_checked_bool_and_not_part_of_the_search_id() -> None:
    assert _plan("task=chemprot", "search.dry_run=true").search_id == _plan("task=chemprot").search_id
    assert _plan("task=chemprot", "search.dry_run=true").config.search.dry_run is True
    with pytest.raises(ConfigError, match="search.dry_run='maybe' must be true or false"):
        _plan("task=chemprot", "search.dry_run=maybe")


# ----------------------------------------------------------------------------- the CLI


def _user_env() -> dict[str, str]:
    # A user's shell: no HF_*_OFFLINE / DOKTRA_* variables. The dry run needs no hub and no data.
    return {k: v for k, v in os.environ.items() if not k.startswith(("DOKTRA_", "HF_", "TRANSFORMERS_OFFLINE"))}


@pytest.mark.parametrize("task", ["chemprot", "gad"])
def test_cli_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, task: str) -> None:
    runs = tmp_path / "runs"
    code = ("import sys\nfrom doktra_tune.search import main\n"
            f"sys.argv = ['doktra_tune.search', 'task={task}', 'search.dry_run=true', 'runs_root={runs}']\nmain()\n"
            "print('heavy imports:', sorted(m for m in ('torch', 'ray', 'mlflow', 'transformers')\n"
            "                               if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_user_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    rows = {p[0]: p for p in (line.split() for line in out.splitlines()) if len(p) > 1 and p[1].isdigit()}
    assert [rows[s][1] for s in ("ctt", "student", "abd", "final")] == \
        (["4", "18", "48", "15"] if task == "chemprot" else ["4", "18", "48", "150"])
    assert "147 of 480 epoch-units with the shared prefix" in out
    assert "GPU-hours" in out and "estimate, not measured" in out
    assert "heavy imports: []" in out
    assert not runs.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    (data,) = [line for line in out.splitlines() if line.startswith("data: ")]
    if task == "chemprot":  # the paper's ChemProt: BLUE's TSVs
        assert "train 17865 / dev 11263 / test 15583" in data and "chemprot (format blue_tsv, copy paper)" in data
    else:  # the paper's GAD: all 4796 train pairs, the fold's test file as dev; ± over seeds
        assert "train 4796 / dev 534 / test 534" in data and "gad (format gad_folds:1:test)" in data
        assert "GAD ± final.gad_std=over_seeds: std over seeds of each seed's fold mean" in out


def test_cli_module_dry_run_exits_0(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "doktra_tune.search", "task=chemprot", "search.dry_run=true", f"runs_root={runs}"],
        cwd=tmp_path, env=_user_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "abd          48   147 of 480" in done.stdout and not runs.exists()


def test_run_search_dry_run_prints_the_plan_and_starts_nothing(tmp_path: Path, doktra_lines) -> None:
    """The Python API honours search.dry_run as the CLI does: the plan's lines, no run directory."""
    from doktra_tune.search import run_search

    summary = run_search(compose_config(["task=chemprot", "search.dry_run=true", f"runs_root={tmp_path / 'runs'}"]))
    lines = doktra_lines()
    assert summary["dry_run"] is True and not (tmp_path / "runs").exists()
    assert any("147 of 480" in line for line in lines) and any("GPU-hours" in line for line in lines)
