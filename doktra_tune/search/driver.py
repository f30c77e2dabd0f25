"""The nested DoKTra search (Algorithm 1, §4.2, App. A): the three stage searches, then the final runs.

1. CTT: a Tuner over β₁ (`search_spaces/ctt.yaml`, per-task epochs of Table A1). Winner: dev F1,
   dev ECE as the second criterion (`analysis.selection.SelectionRule`).
2. Student fine-tuning: a Tuner over lr₁; every trial runs the longest e₁ and reports dev F1 per
   epoch; Tune keeps each trial's best checkpoint, so the winner's e₁ is its best epoch.
3. ABD: a Tuner over lr₂ × β₂ × γ whose trials all start from the student winner's checkpoint and
   distil from the CTT winner's.
4. Final: one Tuner whose `tune.grid_search` ranges over (variant × seed) run specs, each scored
   on dev and test (`final/results.json`).

Winner rows: one row per trial, holding the trial's best epoch (by dev F1) — the epoch whose
checkpoint Tune keeps (`CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="dev_f1")`) —
so the selected (trial, epoch) always has a checkpoint to hand to the next stage.

Run directory `<runs_root>/<search_id>/`: `config.yaml`, `mlflow.db`, `ray/<stage>/` (Tune),
`stages/<stage>/{winner.json,winner/}`, `final/results.json`. A stage whose `winner.json` exists
is skipped; an interrupted stage is resumed (`StageRunner.run`). Every input is checked
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
from doktra_tune.search.final import RUN_KEYS, final_runs, final_specs, summarize
from doktra_tune.search.plan import Plan, build_plan
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
    def stage_base(self, stage: str, model: str) -> dict[str, Any]:
        """The StageConfig every trial of `stage` starts from (its trial config is applied on top)."""
        t = self.config.train
        return StageConfig(
            data=self.plan.data, model=model, output_dir="", epochs=self.plan.stage_epochs[stage],
            batch_size=t.batch_size, eval_batch_size=t.eval_batch_size, seed=t.seed, weight_decay=t.weight_decay,
            warmup_ratio=t.warmup_ratio, max_grad_norm=t.max_grad_norm, precision=self.config.stages[stage].precision,
            torch_threads=self.resources.torch_threads, eval_splits=("dev",), keep_checkpoints="last",
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
            prior_trials=prior,
        )
        return StageSpec(
            name=stage, trainable=STAGE_TRAINABLES[stage],
            trainable_kwargs={"base": base, "tracking": self.tracking(stage)},
            param_space=dict(space.fixed), max_t=max_t, search_alg=search_alg, scheduler=scheduler,
            num_samples=n, pruner_on=s.pruner != "none",
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
            return (f"student fine-tuning {self.config.student_model}, grid {space}, e1 up to {epochs}",
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
        extra: dict[str, Any] = {}
        if stage == "ctt" and set(BASELINE_VARIANTS) & set(self.config.final.variants):
            extra["baseline"] = self.baseline_teacher(records, base)
        if stage == "student":
            extra["e1"] = winner.best_epoch
        info = write_winner(stage_dir, stage, winner, records, rule, extra)
        self.tracker.log_stage_summary(
            stage, {"trial_id": winner.trial_id, "best_epoch": winner.best_epoch, **winner.params},
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
                max_t=self.plan.stage_epochs["ctt"],
            )
            best = pick_winner("ctt", self.runner.run("ctt", explicit_runs(spec, [{"beta": 0.0}], ("beta",))),
                               rule, where)
        assert best.checkpoint is not None
        target = copy_checkpoint(best.checkpoint, self.run_dir / "stages" / "ctt" / "teacher_ft")
        return clean({"trial_id": best.trial_id, "params": best.params, "best_epoch": best.best_epoch,
                      "metrics": best.best_metrics, "checkpoint": str(target)})

    def final_stage(self, winners: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Every (variant x seed) final run, scored on dev and test; `final/results.json`."""
        out = self.run_dir / "final" / "results.json"
        if out.is_file():
            self.echo(f"[final] finished earlier: {out} (skipped)")
            return read_json(out)
        ctt, student, abd = winners["ctt"], winners["student"], winners["abd"]
        f = self.config.final
        specs = final_specs(ctt, student, abd, variants=f.variants, seeds=f.seeds, eval_splits=f.eval_splits)
        self.echo(f"[final] start: {len(specs)} runs: {list(f.variants)} x seeds {list(f.seeds)}, "
                  f"eval on {list(f.eval_splits)}")
        t0 = time.monotonic()
        bases = {
            "ctt": self.stage_base("ctt", self.config.teacher_model),
            "student": self.stage_base("student", self.config.student_model),
            "abd": self.abd_base(student["checkpoint"], ctt["checkpoint"]),
        }
        spec = StageSpec(
            name="final", trainable=final_trainable,
            trainable_kwargs={"bases": bases, "tracking": self.tracking("final")},
            param_space={"run": tune.grid_search(specs)}, max_t=max(self.plan.stage_epochs.values()),
        )
        runs = final_runs(self.runner.run("final", explicit_runs(spec, specs, RUN_KEYS)))
        summary = summarize(runs)
        results = {"search_id": self.plan.search_id, "task": self.plan.task, "runs": runs, "summary": summary,
                   "winners": {"ctt": ctt["params"], "student": {**student["params"], "e1": student["best_epoch"]},
                               "abd": abd["params"]}}
        atomic_write_json(out, results)
        self.tracker.log_stage_summary("final", {"runs": len(runs)}, [out])
        for variant, s in summary.items():
            self.echo(
                f"[final] {variant:15s} test_f1 {fmt_mean_std(s.get('test_f1'))}  test_ece {fmt_mean_std(s.get('test_ece'))}  "
                f"(n={s['n']}{', errored ' + str(s['errored']) if s['errored'] else ''})"
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
