"""What a search will train, counted before it runs: per stage the Tune trials and the epoch-units
(epochs actually trained), from the `Plan` alone (no Ray, no torch, no I/O).

The counts follow what the driver runs:

* ctt, student, abd: one Tune trial per grid point (`search.mode=grid`), each trained for its own
  epochs (the student's e1 in e1_mode=grid, the stage's epochs otherwise); `search.mode=tpe`:
  `search.num_samples` trials, each counted at the stage's longest schedule (an upper bound).
* ctt, `final.protocol=winners` with a variant that needs the beta1 = 0 teacher and no beta1 = 0
  point in the grid: one extra beta1 = 0 run (`SearchDriver.baseline_teacher`).
* abd with `stages.abd.share_prefix` (`doktra_tune.prefix.SharedPrefix`): one trunk per value of
  the searched keys other than beta and gamma (lr2), trained up to the grid's latest switch
  int(gamma * e2), then each grid point's branch trains e2 - int(gamma * e2) epochs from its
  trunk (paper grid: 3 x (9 + 4 x (4 + 3 + 2 + 1)) = 147 instead of 3 x 4 x 4 x 10 = 480).
* final: the run specs of `FinalPlan.runs` (`doktra_tune.plan.final`) for every variant, seed
  and GAD fold (shared_models and chain alike: only which models a distillation reads differs);
  the student's e1 is the student winner's, known only after its search, so it is counted at its
  largest (an upper bound unless the e1 grid has one value). A run two variants share when β₁ = 0
  wins CTT (`FinalPlan.aliases`) is counted once; the winner is unknown before the search, so the
  note says how many runs a β₁ = 0 winner saves (`beta0_saving`, a β₁ = 0 stand-in winner).
* A pruner other than none stops trials early: the epoch-units are then an upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from doktra_tune.config import DistillConfig
from doktra_tune.plan.final import (
    BASELINE_VARIANTS,
    DISTILLATIONS,
    FinalPlan,
    alias_words,
)
from doktra_tune.plan.schema import SEARCH_STAGES
from doktra_tune.plan.search_plan import Plan, shared_prefix
from doktra_tune.search_space import grid_points
from doktra_tune.switch import switch_epoch

BUDGET_STAGES: tuple[str, ...] = (*SEARCH_STAGES, "final")
TRUNK = "trunk"


@dataclass(frozen=True)
class Job:
    """One run the search starts: a stage's trial, an ABD trunk, or a final run."""

    stage: str  # ctt | student | abd | final
    kind: str  # trial | baseline | trunk | branch | a final variant
    model: str  # the model spec it trains (or scores)
    epochs: int  # epochs it trains (0: scores an existing checkpoint)
    grid_epochs: int  # epochs were it trained on its own (a trunk: 0; a branch: its whole e2)
    dev_passes: int  # evaluation passes over dev: one per epoch trained (scoring only: one)
    test_passes: int  # final runs: after the last epoch (every epoch with search.handoff=best_epoch)
    teacher: str | None = None  # distillations: the teacher whose cached [CLS] vectors it reads

    @property
    def is_trial(self) -> bool:
        """Whether Tune counts it as a trial of its stage (a trunk only feeds the branches)."""
        return self.kind != TRUNK


@dataclass(frozen=True)
class StageBudget:
    stage: str  # "ctt" | "student" | "abd" | "final"
    trials: int  # Tune trials (ABD: grid points; final: runs)
    epoch_units: int  # epochs that will actually be trained (ABD with share_prefix: trunk + branch epochs)
    grid_epoch_units: int  # epochs if every trial trained on its own (ABD: 480); == epoch_units elsewhere
    note: str  # one line: what the count is made of


@dataclass(frozen=True)
class PlanBudget:
    stages: tuple[StageBudget, ...]  # in order ctt, student, abd, final; stages after search.stop_after left out

    def stage(self, name: str) -> StageBudget:
        for s in self.stages:
            if s.stage == name:
                return s
        raise KeyError(f"stage {name!r} is not in this plan's budget ({', '.join(s.stage for s in self.stages)})")


# ----------------------------------------------------------------------------- the stages' jobs


def planned_stages(plan: Plan) -> tuple[str, ...]:
    """The stages the driver runs: the searches up to search.stop_after; final only without it."""
    stop = plan.config.search.stop_after
    if stop is None:
        return BUDGET_STAGES
    return SEARCH_STAGES[: SEARCH_STAGES.index(stop) + 1]


def _epochs_of(point: Mapping[str, Any], fixed: Mapping[str, Any], default: int) -> int:
    return int(point.get("epochs", fixed.get("epochs", default)))


def _model(plan: Plan, stage: str) -> str:
    return plan.config.teacher_model if stage == "ctt" else plan.config.student_model


def _search_epochs(plan: Plan, stage: str) -> list[int]:
    """The epochs of each trial of a search stage: its grid points', or num_samples at the longest (tpe)."""
    space, longest = plan.spaces[stage], plan.stage_epochs[stage]
    if plan.config.search.mode == "tpe":
        return [longest] * int(plan.config.search.num_samples or 0)
    return [_epochs_of(p, space.fixed, longest) for p in grid_points(space.params)]


def _trial(stage: str, model: str, epochs: int, kind: str = "trial", teacher: str | None = None) -> Job:
    return Job(stage, kind, model, epochs, epochs, epochs, 0, teacher)


def needs_baseline_run(plan: Plan) -> bool:
    """Whether the CTT stage adds one beta1 = 0 run: the winners protocol needs the uncalibrated
    teacher and no CTT trial is sure to have beta1 = 0 (tpe may not sample it)."""
    final = plan.config.final
    if final.protocol != "winners" or not set(BASELINE_VARIANTS) & set(final.variants):
        return False
    space = plan.spaces["ctt"]
    if "beta" in space.params:
        has_zero = any(float(b) == 0.0 for b in space.params["beta"])
        return not has_zero or (plan.config.search.mode == "tpe" and len(space.params["beta"]) > 1)
    return float(space.fixed.get("beta", -1.0)) != 0.0  # a trial without beta in its params counts as no beta1 = 0


def search_jobs(plan: Plan, stage: str) -> list[Job]:
    """The trials of the ctt or student search (ctt: with the baseline run when it is needed)."""
    model = _model(plan, stage)
    jobs = [_trial(stage, model, e) for e in _search_epochs(plan, stage)]
    if stage == "ctt" and needs_baseline_run(plan):
        jobs.append(_trial(stage, model, plan.stage_epochs["ctt"], kind="baseline"))
    return jobs


def abd_jobs(plan: Plan) -> list[Job]:
    """The ABD search: its trials alone, or the trunks and then each point's branch."""
    space, longest, model = plan.spaces["abd"], plan.stage_epochs["abd"], plan.config.student_model
    teacher = "ctt winner"
    prefix = shared_prefix(plan)
    if prefix is None:
        return [_trial("abd", model, e, teacher=teacher) for e in _search_epochs(plan, "abd")]
    jobs = []
    for point in prefix.trunk_points(space.params):
        switches = prefix.switches(_epochs_of(point, space.fixed, longest))
        if switches:  # the trunk stops at the grid's latest switch, on the schedule of all e2 epochs
            jobs.append(Job("abd", TRUNK, model, switches[-1], 0, switches[-1], 0, teacher))

    def branch(point: Mapping[str, Any]) -> tuple[int, int]:
        e2 = _epochs_of(point, space.fixed, longest)
        return e2 - switch_epoch(e2, float(point.get("gamma", space.fixed.get("gamma", DistillConfig.gamma)))), e2

    points = grid_points(space.params)
    if plan.config.search.mode == "tpe":  # which points are sampled is not known: the longest branch
        most = max(branch(p)[0] for p in points)
        samples = int(plan.config.search.num_samples or 0)
        return jobs + [Job("abd", "branch", model, most, longest, most, 0, teacher)] * samples
    for point in points:
        epochs, e2 = branch(point)
        jobs.append(Job("abd", "branch", model, epochs, e2, epochs, 0, teacher))
    return jobs


def largest_e1(plan: Plan) -> int:
    """The student winner's e1 at its largest: the longest e1 of the grid, or best_epoch mode's run."""
    return plan.stage_epochs["student"]


def e1_is_exact(plan: Plan) -> bool:
    """Whether the student winner's e1 is known before the search (a one-value e1 grid)."""
    student = plan.config.stages["student"]
    return student.searches_epochs and len(set(plan.spaces["student"].params["epochs"])) == 1


def final_plan(plan: Plan, beta1: float | None = None) -> FinalPlan:
    """The driver's `FinalPlan` with stand-in winners: each stage's largest grid values (the
    epochs, and CTT's β₁, which decides the runs two variants share, are the only ones the counts
    depend on) and the largest e1; `beta1`: the CTT stand-in's β₁ instead. A β₁ = 0 CTT winner is
    also the β₁ = 0 teacher of the winners protocol (its grid's one β₁ = 0 point)."""

    def params(stage: str) -> dict[str, Any]:
        space = plan.spaces[stage]
        return {**space.fixed, **{k: max(v) for k, v in space.params.items()}}

    ctt = params("ctt") if beta1 is None else {**params("ctt"), "beta": beta1}
    baseline_id = "<ctt winner>" if float(ctt.get("beta", 0.0)) == 0.0 else "<ctt beta1=0>"
    winners = {
        "ctt": {"params": ctt, "checkpoint": "<ctt winner>", "trial_id": "<ctt winner>",
                "baseline": {"checkpoint": "<ctt beta1=0>", "trial_id": baseline_id}},
        "student": {"params": params("student"), "e1": largest_e1(plan), "checkpoint": "<student winner>"},
        "abd": {"params": params("abd"), "checkpoint": "<abd winner>"},
    }
    f = plan.config.final
    return FinalPlan(
        winners=winners, variants=f.variants, seeds=f.seeds, folds=f.folds, eval_splits=f.eval_splits,
        protocol=f.protocol, every_epoch=plan.config.search.handoff == "best_epoch", search_seed=plan.config.train.seed,
        data_format=plan.data.data_format,
    )


def final_jobs(plan: Plan, fp: FinalPlan | None = None) -> list[Job]:
    """One job per final run spec (of `fp`; default: `final_plan(plan)`), with the epochs its stage trains."""
    fp = fp or final_plan(plan)
    jobs = []
    for run in fp.runs("<final models>"):
        spec = run.record()
        stage, variant = spec["stage"], spec["variant"]
        test = "test" in spec["eval_splits"]
        if stage == "evaluate":  # the winners protocol scores the search's own model once
            model = plan.config.teacher_model if variant.startswith("teacher") else plan.config.student_model
            jobs.append(Job("final", variant, model, 0, 0, 1, int(test)))
            continue
        epochs = int(spec.get("epochs", plan.stage_epochs[stage]))
        test_passes = (epochs if spec["eval_every_epoch"] else 1) if test else 0
        jobs.append(Job("final", variant, _model(plan, stage), epochs, epochs, epochs, test_passes,
                        spec.get("teacher") if variant in DISTILLATIONS else None))
    return jobs


def ctt_can_pick_beta0(plan: Plan) -> bool:
    """Whether β₁ = 0 may win CTT: a value of its grid (or its fixed β₁, StageConfig's 0 when unset)."""
    space = plan.spaces["ctt"]
    betas = space.params.get("beta", [space.fixed.get("beta", 0.0)])
    return any(float(b) == 0.0 for b in betas)


def beta0_saving(plan: Plan) -> tuple[int, int, dict[str, str]]:
    """(runs, epoch-units, aliases): what a β₁ = 0 CTT winner saves against the counted stand-in
    (`FinalPlan.aliases`: teacher_ft = teacher_ctt, ...); (0, 0, {}) when β₁ = 0 cannot win or the
    stand-in has it already."""
    fp = final_plan(plan)
    if fp.beta1 == 0.0 or not ctt_can_pick_beta0(plan):
        return 0, 0, {}
    zero = final_plan(plan, beta1=0.0)
    counted, deduped = final_jobs(plan, fp), final_jobs(plan, zero)
    return len(counted) - len(deduped), sum(j.epochs for j in counted) - sum(j.epochs for j in deduped), zero.aliases()


def _same_words(plan: Plan) -> str:
    """The final note's words on the runs two variants share (`FinalPlan.aliases`) when β₁ = 0 wins CTT."""
    fp = final_plan(plan)
    if fp.aliases():
        return (f"; β₁ = 0 is CTT's only value: {alias_words(fp.aliases())}, each trained once "
                f"({_n(fp.saved_runs(), 'run')} fewer)")
    runs, epochs, aliases = beta0_saving(plan)
    if not runs:
        return ""
    return f" ({_n(runs, 'run')}, {epochs} epoch-units fewer if β₁ = 0 wins CTT: {alias_words(aliases)})"


def stage_jobs(plan: Plan) -> dict[str, list[Job]]:
    """Every run of every stage the plan runs (stages after search.stop_after left out)."""
    build = {"ctt": lambda: search_jobs(plan, "ctt"), "student": lambda: search_jobs(plan, "student"),
             "abd": lambda: abd_jobs(plan), "final": lambda: final_jobs(plan)}
    return {stage: build[stage]() for stage in planned_stages(plan)}


# ----------------------------------------------------------------------------- notes and budget


def _span(values: Sequence[int]) -> str:
    lo, hi = (min(values), max(values)) if values else (0, 0)
    return str(lo) if lo == hi else f"{lo}..{hi}"


def _n(count: int, word: str, plural: str | None = None) -> str:
    """`1 trunk` / `3 trunks`."""
    return f"{count} {word}" if count == 1 else f"{count} {plural or word + 's'}"


def _grid_words(plan: Plan, stage: str) -> str:
    """`beta(4)` / `lr(3) x epochs(6)`: the searched keys and their number of values."""
    params = plan.spaces[stage].params
    return " x ".join(f"{k}({len(v)})" for k, v in params.items()) or "one point"


def is_upper_bound(plan: Plan, stage: str, jobs: Sequence[Job]) -> bool:
    """Whether a stage's epoch-units are an upper bound: tpe samples or a pruner (the searches), the
    student winner's e1 counted at its largest (final)."""
    if stage != "final":
        return plan.config.search.mode == "tpe" or plan.config.search.pruner != "none"
    return not e1_is_exact(plan) and any(j.kind.startswith("student") and j.epochs for j in jobs)


def _bounds(plan: Plan) -> str:
    s = plan.config.search
    parts = []
    if s.mode == "tpe":
        parts.append(f"tpe: {s.num_samples} samples of the grid, each counted at the longest schedule (upper bound)")
    if s.pruner != "none":
        parts.append(f"pruner {s.pruner} stops trials early: an upper bound")
    return "; " + "; ".join(parts) if parts else ""


def _note(plan: Plan, stage: str, jobs: list[Job]) -> str:
    trials = [j for j in jobs if j.is_trial]
    if stage in ("ctt", "student"):
        base = [j for j in trials if j.kind == "trial"]
        student = plan.config.stages["student"]
        if stage == "student" and student.searches_epochs and plan.config.search.mode == "grid":
            note = f"{_n(len(base), 'trial')} ({_grid_words(plan, stage)}), each training its own e1 in " \
                   f"{_span([j.epochs for j in base])}: the sum of e1"
        elif stage == "student" and not student.searches_epochs:
            note = f"{_n(len(base), 'trial')} ({_grid_words(plan, stage)}) x one run of " \
                   f"{_n(student.epochs, 'epoch')} (e1 = its best dev epoch)"
        else:
            span = _span([j.epochs for j in base])
            note = f"{_n(len(base), 'trial')} ({_grid_words(plan, stage)}) x {span} epoch{'' if span == '1' else 's'}"
        if any(j.kind == "baseline" for j in trials):
            note += f" + 1 beta1=0 run of {plan.stage_epochs['ctt']} (final.protocol=winners needs the " \
                    "uncalibrated teacher)"
        return note + _bounds(plan)
    if stage == "abd":
        trunks = [j for j in jobs if j.kind == TRUNK]
        branches = [j for j in jobs if j.kind == "branch"]
        if not branches:
            why = "share_prefix=false" if not plan.config.stages["abd"].share_prefix else "no switch epoch > 0"
            return f"{_n(len(trials), 'trial')} ({_grid_words(plan, 'abd')}) x e2 " \
                   f"{_span([j.epochs for j in trials])} each on its own ({why}){_bounds(plan)}"
        return (f"{_n(len(trunks), 'trunk')} of {_span([j.epochs for j in trunks])} + "
                f"{_n(len(branches), 'branch', 'branches')} of {_span([j.epochs for j in branches])} "
                f"({_grid_words(plan, 'abd')}): the activation-boundary phase trained once per trunk{_bounds(plan)}")
    f = plan.config.final
    folds = f" x {len(f.folds)} folds" if f.folds else ""
    wave1 = sum(1 for j in jobs if j.kind not in DISTILLATIONS)
    e1 = "" if not is_upper_bound(plan, "final", jobs) else \
        f"; student e1 counted at its largest, {largest_e1(plan)} (the winner's e1 is known after the student search)"
    return (f"{f.protocol} protocol: {_n(len(f.variants), 'variant')} x {_n(len(f.seeds), 'seed')}{folds}: "
            f"{wave1} teacher/student runs + {_n(len(jobs) - wave1, 'distillation')}{_same_words(plan)}{e1}")


def plan_budget(plan: Plan) -> PlanBudget:
    """Trials and epoch-units of every stage the plan runs."""
    stages = []
    for stage, jobs in stage_jobs(plan).items():
        stages.append(StageBudget(
            stage=stage, trials=sum(1 for j in jobs if j.is_trial), epoch_units=sum(j.epochs for j in jobs),
            grid_epoch_units=sum(j.grid_epochs for j in jobs), note=_note(plan, stage, jobs),
        ))
    return PlanBudget(tuple(stages))
