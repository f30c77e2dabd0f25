"""The nested DoKTra search (Algorithm 1, §4.2, App. A): the three stage searches, then the final runs.

1. CTT: a Tuner over β₁ (`search_spaces/ctt.yaml`, per-task epochs of Table A1). Winner: dev F1,
   dev ECE among trials within `search.selection.f1_tolerance` (`analysis.selection.SelectionRule`).
2. Student fine-tuning: a Tuner over lr₁ × e₁, each run's linear schedule ending at its own e₁
   (`stages.student.e1_mode=grid`, App. A); or one run per lr₁ whose best epoch is e₁ (`best_epoch`).
3. ABD: a Tuner over lr₂ × β₂ × γ whose trials all start from the student winner and distil from
   the CTT winner.
4. Final: the winners re-run with every seed (`final.protocol`, `doktra_tune.search.final`), scored
   on dev and test (`final/results.json`).

A trial's model is its last epoch (`search.handoff=final_epoch`, as the authors' scripts save it:
Tune keeps the latest checkpoint) or its best dev-F1 epoch (`best_epoch`); winners are chosen on the
metrics of exactly that epoch, and that checkpoint is handed to the next stage.

Run directory `<runs_root>/<search_id>/`: `config.yaml`, `mlflow.db`, `ray/<stage>/` (Tune),
`stages/<stage>/{winner.json,winner/}`, `final/{results.json,models/}`. A stage whose `winner.json`
exists is skipped; an interrupted stage is resumed (`StageRunner.run`). Every input is checked
(`plan`, `preflight`) before the run directory exists.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from ray import tune

from doktra_tune.config import DistillConfig, StageConfig
from doktra_tune.metrics import SEARCH_METRIC
from doktra_tune.search.dependent_runs import DependentRuns
from doktra_tune.search.final import RUN_KEYS, FinalPlan, final_runs, missing_runs, summarize
from doktra_tune.search.plan import Plan, build_plan, schedule_group
from doktra_tune.search.preflight import preflight
from doktra_tune.search.progress import Echo, disk_line, echo_stdout, fmt_mean_std, stage_end_line
from doktra_tune.search.pruning import PriorTrial
from doktra_tune.search.ray_session import RaySession, Resources
from doktra_tune.search.schema import SEARCH_STAGES
from doktra_tune.search.search_algorithms import build_search, pruning_grace_period
from doktra_tune.search.stage_runner import SpecBuilder, StageRunner, StageSpec
from doktra_tune.search.trials import TrialRecord, clean, remaining_grid_points, remaining_runs
from doktra_tune.search.winners import (
    atomic_write_json,
    copy_checkpoint,
    pick_winner,
    read_winner,
    selection_rule,
    write_winner,
)
from doktra_tune.tracking import SearchTracker, default_tracking_uri
from trainables import STAGE_TRAINABLES, final_trainable

BASELINE_VARIANTS = ("doktra_no_ctt", "kld", "teacher_ft")  # final variants that need the β₁ = 0 teacher


def explicit_runs(spec: StageSpec, runs: list[dict[str, Any]], keys: tuple[str, ...]) -> SpecBuilder:
    """A builder for a Tuner over explicit run specs (`spec.param_space["run"]` ranges over `runs`):
    after an interruption, only the runs no finished trial covered."""

    def build(prior: list[TrialRecord]) -> StageSpec:
        if not prior:
            return spec
        todo = remaining_runs(runs, keys, prior)  # a one-run "run" becomes a one-value grid: same trial
        return dataclasses.replace(spec, param_space={**spec.param_space, "run": tune.grid_search(todo)},
                                   num_samples=1 if todo else 0)

    return build


class SearchDriver:
    """Runs the stages of one checked `Plan` inside its run directory, on a connected Ray."""

    def __init__(self, plan: Plan, session: RaySession, echo: Echo = echo_stdout) -> None:
        self.plan = plan
        self.config = plan.config
        self.run_dir = plan.run_dir
        self.echo = echo
        self.session = session
        self.resources: Resources = session.resources(plan.config.resources)
        uri = self.config.tracking_uri or default_tracking_uri(self.run_dir)
        self.tracker = SearchTracker(uri, plan.task, plan.search_id, plan.raw, self.run_dir)
        self.runner = StageRunner(self.run_dir, self.resources, self.tracker, echo,
                                  max_failures=self.config.search.max_failures)

    # ---------------------------------------------------------------- base configs
    def keep(self, stage: str) -> str:
        """Which epoch of a trial of `stage` is its model: "last" (search.handoff=final_epoch, the
        authors'), or "best" by dev F1 (handoff=best_epoch, and the student's e1_mode=best_epoch)."""
        if self.config.search.handoff == "best_epoch":
            return "best"
        student = self.config.stages["student"]
        return "best" if stage == "student" and not student.searches_epochs else "last"

    def stage_base(self, stage: str, model: str) -> dict[str, Any]:
        """The StageConfig every trial of `stage` starts from (its trial config is applied on top)."""
        t = self.config.train
        return StageConfig(
            data=self.plan.data, model=model, output_dir="", epochs=self.plan.stage_epochs[stage],
            batch_size=t.batch_size, eval_batch_size=t.eval_batch_size, seed=t.seed, weight_decay=t.weight_decay,
            warmup_ratio=t.warmup_ratio, max_grad_norm=t.max_grad_norm, precision=self.config.stages[stage].precision,
            torch_threads=self.resources.torch_threads, eval_splits=("dev",), keep_checkpoints=self.keep(stage),
            ece_bins=t.ece_bins,
        ).to_dict()

    def abd_base(self, student_checkpoint: str, teacher_checkpoint: str) -> dict[str, Any]:
        abd = self.config.stages["abd"]
        return DistillConfig.from_dict({
            **self.stage_base("abd", student_checkpoint), "teacher_checkpoint": teacher_checkpoint,
            "margin": abd.margin, "projection": abd.projection,
        }).to_dict()

    def tracking(self, stage: str) -> dict:
        tags = {"doktra.teacher_model": self.config.teacher_model, "doktra.student_model": self.config.student_model}
        return self.tracker.trial_tracking(stage, tags)

    # ---------------------------------------------------------------- search specs
    def search_spec(
        self, stage: str, base: dict[str, Any], *, num_samples: int | None = None,
        points: list[dict[str, Any]] | None = None, prior: list[PriorTrial] | None = None,
    ) -> StageSpec:
        """The Tuner of `stage`'s search over its grid (or `points` / `num_samples` of it)."""
        space = self.plan.spaces[stage]
        s = self.config.search
        if s.pauses_trials:  # paused trials resume from their last checkpoint
            base = {**base, "save_training_state": True}
        max_t = self.plan.stage_epochs[stage]
        search_alg, scheduler, n = build_search(
            space, mode=s.mode, num_samples=num_samples or s.num_samples, pruner=s.pruner,
            metric=SEARCH_METRIC, mode_opt="max", max_t=max_t, seed=s.seed,
            grace_period=pruning_grace_period(stage, s.grace_period, max_t, space, base),
            reduction_factor=s.reduction_factor, n_startup_trials=s.n_startup_trials, points=points,
            prior_trials=prior, group_key=schedule_group(space),
        )
        return StageSpec(
            name=stage, trainable=STAGE_TRAINABLES[stage],
            trainable_kwargs={"base": base, "tracking": self.tracking(stage)},
            param_space=dict(space.fixed), max_t=max_t, search_alg=search_alg, scheduler=scheduler,
            num_samples=n, pruner_on=s.pruner != "none", keep=self.keep(stage),
        )

    def search_builder(self, stage: str, base: dict[str, Any]) -> SpecBuilder:
        """The stage's full search; after an interruption, the missing grid points (grid mode) or
        the rest of the trial budget (TPE), with the finished trials in the Optuna study."""

        def build(prior: list[TrialRecord]) -> StageSpec:
            full = self.search_spec(stage, base)
            if not prior:
                return full
            known = [PriorTrial(params=r.params, curve=r.curve, state=r.status) for r in prior]
            if self.config.search.mode == "grid":
                todo = remaining_grid_points(self.plan.spaces[stage].params, prior)
                return self.search_spec(stage, base, points=todo, prior=known) if todo else \
                    dataclasses.replace(full, num_samples=0)
            left = max(0, full.num_samples - len(prior))
            return self.search_spec(stage, base, num_samples=left, prior=known) if left else \
                dataclasses.replace(full, num_samples=0)

        return build

    def _say_grace(self, stage: str, base: dict[str, Any]) -> None:
        s = self.config.search
        max_t = self.plan.stage_epochs[stage]
        grace = pruning_grace_period(stage, s.grace_period, max_t, self.plan.spaces[stage], base)
        if grace > min(s.grace_period, max_t) and s.pruner != "none":
            self.echo(
                f"[{stage}] pruning starts at epoch {grace}, not search.grace_period={s.grace_period}: until then "
                "some trials are still in the activation-boundary phase (epochs < int(gamma * epochs)), where "
                "dev F1 would rank them below trials that already refine"
            )

    # ---------------------------------------------------------------- stages
    def _stage_plan(self, stage: str, winners: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        """(what the stage does, in words; its base config)."""
        space, epochs = self.plan.spaces[stage].params, self.plan.stage_epochs[stage]
        if stage == "ctt":
            return (f"calibrated teacher {self.config.teacher_model}, grid {space}, {epochs} epochs",
                    self.stage_base("ctt", self.config.teacher_model))
        if stage == "student":
            e1 = "e1 searched" if self.config.stages["student"].searches_epochs else f"e1 = best epoch of {epochs}"
            return (f"student fine-tuning {self.config.student_model}, grid {space}, {e1}",
                    self.stage_base("student", self.config.student_model))
        return (f"activation boundary distillation, grid {space}, e2={epochs}",
                self.abd_base(winners["student"]["checkpoint"], winners["ctt"]["checkpoint"]))

    def search_stage(self, stage: str, winners: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Run (or skip, when finished earlier) `stage`'s search and write its winner."""
        stage_dir = self.run_dir / "stages" / stage
        done = read_winner(stage_dir)
        if done:
            self.echo(f"[{stage}] finished earlier: winner {done['trial_id']} {done['params']} (skipped)")
            return done
        what, base = self._stage_plan(stage, winners)
        self.echo(f"[{stage}] start: {what}")
        t0 = time.monotonic()
        self._say_grace(stage, base)
        records = self.runner.run(stage, self.search_builder(stage, base))
        rule = selection_rule(self.config.search.selection, stage)
        winner = pick_winner(stage, records, rule, self.run_dir / "ray" / stage)
        extra: dict[str, Any] = {"handoff": self.keep(stage)}
        final = self.config.final
        if stage == "ctt" and final.protocol == "winners" and set(BASELINE_VARIANTS) & set(final.variants):
            extra["baseline"] = self.baseline_teacher(records, base)
        if stage == "student":  # e1: the winner's schedule length, or the best epoch of its one long run
            extra["e1"] = winner.params["epochs"] if self.config.stages["student"].searches_epochs else winner.kept_epoch
        info = write_winner(stage_dir, stage, winner, records, rule, extra)
        self.tracker.log_stage_summary(
            stage, {"trial_id": winner.trial_id, "epoch": winner.kept_epoch, **winner.params, **extra},
            [stage_dir / "winner.json"],
        )
        self.echo(stage_end_line(stage, time.monotonic() - t0, info, self.run_dir))
        return info

    def baseline_teacher(self, records: list[TrialRecord], base: dict[str, Any]) -> dict[str, Any]:
        """The β₁ = 0 teacher (plain fine-tuning) for doktra_no_ctt / kld: the best β₁=0 trial of the
        CTT grid, or one extra β₁=0 run (`ray/ctt_ft`) when the grid has none."""
        rule = selection_rule(self.config.search.selection, "ctt")
        where = self.run_dir / "ray" / "ctt"

        def beta_zero(r: TrialRecord) -> bool:
            return float(r.params.get("beta", -1)) == 0.0 and r.status != "errored"

        if any(beta_zero(r) and r.checkpoint for r in records):
            best = pick_winner("ctt", records, rule, where, only=beta_zero)
        else:
            self.echo("[ctt] no beta=0 trial in the grid: one extra beta=0 run for the uncalibrated teacher")
            spec = StageSpec(
                name="ctt_ft", trainable=STAGE_TRAINABLES["ctt"],
                trainable_kwargs={"base": base, "tracking": self.tracking("ctt")},
                param_space={**self.plan.spaces["ctt"].fixed, "run": {"beta": 0.0}},
                max_t=self.plan.stage_epochs["ctt"], keep=self.keep("ctt"),
            )
            best = pick_winner("ctt", self.runner.run("ctt", explicit_runs(spec, [{"beta": 0.0}], ("beta",))),
                               rule, where)
        assert best.checkpoint is not None
        target = copy_checkpoint(best.checkpoint, self.run_dir / "stages" / "ctt" / "teacher_ft")
        return clean({"trial_id": best.trial_id, "params": best.params, "epoch": best.kept_epoch,
                      "metrics": best.kept_metrics, "checkpoint": str(target)})

    def final_plan(self, winners: dict[str, dict[str, Any]]) -> FinalPlan:
        f = self.config.final
        return FinalPlan(
            winners=winners, variants=f.variants, seeds=f.seeds, folds=f.folds, eval_splits=f.eval_splits,
            protocol=f.protocol, every_epoch=self.config.search.handoff == "best_epoch",
            search_seed=self.config.train.seed,
        )

    def final_builder(self, specs: list[dict[str, Any]], bases: dict[str, Any]) -> SpecBuilder:
        """One Tuner over every final run; `DependentRuns` starts each distillation as soon as its
        teacher and student are published. After an interruption: the runs still missing."""
        models_dir = self.run_dir / "final" / "models"

        def build(prior: list[TrialRecord]) -> StageSpec:
            todo = remaining_runs(specs, RUN_KEYS, prior) if prior else specs
            return StageSpec(
                name="final", trainable=final_trainable,
                trainable_kwargs={"bases": bases, "tracking": self.tracking("final"), "models_dir": str(models_dir)},
                param_space={}, max_t=max(self.plan.stage_epochs.values()),
                search_alg=DependentRuns(todo, models_dir), num_samples=len(todo),
                keep="best" if self.config.search.handoff == "best_epoch" else "last",
            )

        return build

    def final_stage(self, winners: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The final runs (`final.protocol`): the teachers and students are trained (or scored), each
        distillation starts as soon as its teacher and student exist; every run is scored on dev and
        test; `final/results.json`."""
        out = self.run_dir / "final" / "results.json"
        if out.is_file():
            self.echo(f"[final] finished earlier: {out} (skipped)")
            return read_json(out)
        plan = self.final_plan(winners)
        f = self.config.final
        folds = f" x folds {list(plan.folds)}" if plan.folds else ""
        self.echo(f"[final] start ({plan.protocol} protocol): {list(f.variants)} x seeds {list(f.seeds)}{folds}; "
                  f"{len(plan.wave1())} teacher/student runs and the distillations from them; eval on "
                  f"{list(f.eval_splits)}")
        t0 = time.monotonic()
        bases = {
            "ctt": self.stage_base("ctt", self.config.teacher_model),
            "student": self.stage_base("student", self.config.student_model),
            "abd": self.abd_base(winners["student"]["checkpoint"], winners["ctt"]["checkpoint"]),
            "evaluate": self.stage_base("ctt", self.config.teacher_model),
        }
        specs = plan.runs(str(self.run_dir / "final" / "models"))
        records = self.runner.run("final", self.final_builder(specs, bases))
        done = {tuple(r.params.get(k) for k in RUN_KEYS) for r in records}
        missing = [spec for spec in specs if tuple(spec.get(k) for k in RUN_KEYS) not in done]
        if missing:
            self.echo(f"[final] {len(missing)} distillation(s) could not run: their teacher or student failed")
        runs = final_runs(records) + missing_runs(missing)
        summary = summarize(runs)
        results = {"search_id": self.plan.search_id, "task": self.plan.task, "protocol": plan.protocol,
                   "runs": runs, "summary": summary,
                   "winners": {"ctt": winners["ctt"]["params"], "student": {**winners["student"]["params"],
                               "e1": winners["student"]["e1"]}, "abd": winners["abd"]["params"]}}
        atomic_write_json(out, results)
        self.tracker.log_stage_summary("final", {"runs": len(runs), "protocol": plan.protocol}, [out])
        for variant, s in summary.items():
            self.echo(
                f"[final] {variant:15s} test_f1 {fmt_mean_std(s.get('test_f1'))}  test_ece {fmt_mean_std(s.get('test_ece'))}  "
                f"(n={s['n']}, {s['origin']}{', errored ' + str(s['errored']) if s['errored'] else ''})"
            )
        self.echo(f"[final] end in {time.monotonic() - t0:.0f}s | results {out} | {disk_line(self.run_dir)}")
        return read_json(out)

    # ---------------------------------------------------------------- all
    def run(self) -> dict[str, Any]:
        """The three searches in order (stopping after `search.stop_after`), then the final runs."""
        self.echo(
            f"search {self.plan.search_id}: task {self.plan.task}, preset {self.config.preset}, "
            f"run dir {self.run_dir}, mlflow {self.tracker.tracking_uri}"
        )
        self.echo(f"ray: {self.resources.max_concurrent} concurrent trial(s) x {self.resources.per_trial} "
                  f"{self.session.where}")
        status = "FAILED"
        summary: dict[str, Any] = {"run_dir": str(self.run_dir)}
        try:
            winners: dict[str, dict[str, Any]] = {}
            for stage in SEARCH_STAGES:
                winners[stage] = summary[stage] = self.search_stage(stage, winners)
                if self.config.search.stop_after == stage:
                    break
            else:
                summary["final"] = self.final_stage(winners)
            status = "FINISHED"
            return summary
        finally:
            self.tracker.finish(status)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _quiet_libraries() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def run_search(cfg: DictConfig | dict[str, Any], echo: Echo = echo_stdout) -> dict[str, Any]:
    """Check `cfg` (plan, preflight), connect Ray, create the run directory and run the search."""
    _quiet_libraries()
    plan = build_plan(cfg)
    preflight(plan)
    with RaySession(plan.config.ray) as session:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        (plan.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plan.raw)))
        return SearchDriver(plan, session, echo).run()
