"""The nested DoKTra search (Algorithm 1, §4.2, App. A): the three stage searches, then the final runs.

1. CTT: a Tuner over β₁ (`search_spaces/ctt.yaml`, per-task epochs of Table A1). Winner: dev F1,
   dev ECE among trials within `search.selection.f1_tolerance` (`doktra_tune.selection.SelectionRule`).
2. Student fine-tuning: a Tuner over lr₁ × e₁, each run's linear schedule ending at its own e₁
   (`stages.student.e1_mode=grid`, App. A); or one run per lr₁ whose best epoch is e₁ (`best_epoch`).
3. ABD: a Tuner over lr₂ × β₂ × γ whose trials all start from the student winner and distil from
   the CTT winner.
4. Final: the winners re-run with every seed (`final.protocol`, `doktra_tune.plan.final`), scored
   on dev and test (`final/results.json`).

A trial's model is its last epoch (`search.handoff=final_epoch`, as the authors' scripts save it:
Tune keeps the latest checkpoint) or its best dev-F1 epoch (`best_epoch`); winners are chosen on the
metrics of exactly that epoch, and that checkpoint is handed to the next stage.

Run directory `<runs_root>/<search_id>/`: `lease.json` (the running search's lease,
`cluster/lease.py`: one search per run directory), `config.yaml`, `mlflow.db`, `ray/<stage>/` (Tune),
`trials/<stage>/<trial id>/` (a trial's evaluation files until the driver logged them),
`stages/<stage>/{winner.json,winner/}`, `final/{results.json,models/}`. A stage whose `winner.json`
exists is skipped; an interrupted stage is resumed (`StageRunner.run`). Every input is checked
(`plan`, `preflight`) before the run directory exists.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from doktra_tune.cluster.disk import (
    disk_line,
    fmt_bytes,
    free_final,
    free_stage,
    free_winners,
)
from doktra_tune.cluster.lease import RunDirLease
from doktra_tune.cluster.node_check import check_nodes
from doktra_tune.cluster.ray_session import RaySession, Resources, SlotsBeside, stop_recorded_ray
from doktra_tune.config import DistillConfig, StageConfig
from doktra_tune.console import console_logging, lines_are_handled
from doktra_tune.device import CPU_KERNEL_ENV
from doktra_tune.errors import DoktraError, first_line
from doktra_tune.models import copy_checkpoint
from doktra_tune.plan.final import (
    BASELINE_VARIANTS,
    RUN_KEYS,
    FinalPlan,
    final_runs,
    missing_runs,
    summarize,
)
from doktra_tune.plan.preflight import preflight
from doktra_tune.plan.schema import SEARCH_STAGES
from doktra_tune.plan.search_plan import Plan, build_plan, shared_prefix
from doktra_tune.prefix import SharedPrefix
from doktra_tune.run_spec import RunSpec
from doktra_tune.search.beside import BesideStage
from doktra_tune.search.outcome import outcome_done, publish_outcome
from doktra_tune.search.progress import fmt_mean_std, stage_end_line
from doktra_tune.search.search_algorithms import pruning_grace_period
from doktra_tune.search.specs import StageSpecs, explicit_runs
from doktra_tune.search.stage_runner import StageRunner, StageSpec
from doktra_tune.search.trials import clean
from doktra_tune.search.winners import (
    atomic_write_json,
    holes,
    leaderboard,
    pick_winner,
    read_run_json,
    read_winner,
    selection_rule,
    write_leaderboard,
    write_winner,
)
from doktra_tune.tracking import SearchTracker, default_tracking_uri
from doktra_tune.tracking.client import is_outage
from doktra_tune.trial_record import TrialRecord
from trainables import STAGE_TRAINABLES

RAY_PROCESSES_FILE = "ray_processes.json"  # the local Ray processes of the running driver
log = logging.getLogger(__name__)


class SearchDriver:
    """Runs the stages of one checked `Plan` inside its run directory, on a connected Ray."""

    def __init__(
        self, plan: Plan, session: RaySession, overrides: list[str] | None = None,
    ) -> None:
        self.plan = plan
        self.config = plan.config
        self.run_dir = plan.run_dir
        self.session = session
        self.overrides = overrides  # the command line's, for the outcome's "reproduce" line
        self.resources: Resources = session.resources(plan.config.resources)
        uri = self.config.tracking_uri or default_tracking_uri(self.run_dir)
        self.tracker = SearchTracker(uri, plan.task, plan.search_id, plan.raw, self.run_dir)
        self.runner = StageRunner(self.run_dir, self.resources, self.tracker,
                                  max_failures=self.config.search.max_failures)
        self.specs = StageSpecs(plan, self.resources, self.tracker)

    def _say_grace(self, stage: str, base: StageConfig) -> None:
        s = self.config.search
        max_t = self.plan.stage_epochs[stage]
        grace = pruning_grace_period(stage, s.grace_period, max_t, self.plan.spaces[stage], base.to_dict())
        if grace > min(s.grace_period, max_t) and s.pruner != "none":
            log.info(
                f"[{stage}] pruning starts at epoch {grace}, not search.grace_period={s.grace_period}: until then "
                "some trials are still in the activation-boundary phase (epochs < int(gamma * epochs)), where "
                "dev F1 would rank them below trials that already refine"
            )

    # ---------------------------------------------------------------- stages
    def _stage_plan(self, stage: str, winners: dict[str, dict[str, Any]]) -> tuple[str, StageConfig]:
        """(what the stage does, in words; its base config)."""
        space, epochs = self.plan.spaces[stage].params, self.plan.stage_epochs[stage]
        if stage == "ctt":
            return (f"calibrated teacher {self.config.teacher_model}, grid {space}, {epochs} epochs",
                    self.specs.stage_base("ctt", self.config.teacher_model))
        if stage == "student":
            e1 = "e1 searched" if self.config.stages["student"].searches_epochs else f"e1 = best epoch of {epochs}"
            return (f"student fine-tuning {self.config.student_model}, grid {space}, {e1}",
                    self.specs.stage_base("student", self.config.student_model))
        return (f"activation boundary distillation, grid {space}, e2={epochs}",
                self.specs.abd_base(winners["student"]["checkpoint"], winners["ctt"]["checkpoint"]))

    def search_stage(self, stage: str, winners: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Run (or skip, when finished earlier) `stage`'s search and write its winner."""
        stage_dir = self.run_dir / "stages" / stage
        done = read_winner(stage_dir)
        if done:
            log.info(f"[{stage}] finished earlier: winner {done['trial_id']} {done['params']} (skipped)")
            return done
        what, base = self._stage_plan(stage, winners)
        log.info(f"[{stage}] start: {what}")
        t0 = time.monotonic()
        self._say_grace(stage, base)
        prefix = shared_prefix(self.plan) if isinstance(base, DistillConfig) else None
        trunks = self.run_trunks(prefix, base) if prefix is not None else []
        records = self.runner.run(stage, self.specs.search_builder(stage, base, prefix))
        rule = selection_rule(self.config.search.selection, stage)
        winner = pick_winner(stage, records, rule, self.run_dir / "ray" / stage)
        extra: dict[str, Any] = {"handoff": self.specs.keep(stage)}
        final = self.config.final
        if stage == "ctt" and final.protocol == "winners" and set(BASELINE_VARIANTS) & set(final.variants):
            extra["baseline"] = self.baseline_teacher(records, base)
        if stage == "student":  # e1: the winner's schedule length, or the best epoch of its one long run
            extra["e1"] = winner.params["epochs"] if self.config.stages["student"].searches_epochs else winner.kept_epoch
        if prefix is not None:
            extra["shared_prefix"] = {"trunk_epochs": sum(r.epochs_run for r in trunks),
                                      "shared_epochs": sum(r.shared_epochs for r in records)}
        info = write_winner(stage_dir, stage, winner, records, rule, extra, trunks)
        board_rows = leaderboard(records, winner)
        board = write_leaderboard(stage_dir / "leaderboard.csv", board_rows)
        self.tracker.log_leaderboard(stage, board_rows, board)
        self.tracker.log_stage_summary(
            stage, {"trial_id": winner.trial_id, "epoch": winner.kept_epoch, **winner.params, **extra},
            [stage_dir / "winner.json"],
        )
        self._end_stage(stage, records, free_stage)
        log.info(stage_end_line(stage, time.monotonic() - t0, info, self.run_dir))
        return info

    def run_trunks(self, prefix: SharedPrefix, base: DistillConfig) -> list[TrialRecord]:
        """The ABD grid's shared activation-boundary phase, once per trunk (issue 10)."""
        builder = self.specs.trunk_builder(prefix, base)
        todo = builder([]).num_samples
        log.info(f"[abd] shared prefix: {'trunks of ' + ', '.join(prefix.keys) if prefix.keys else 'one trunk'} "
                 f"{'to train' if todo else 'published earlier'}; switches at epochs "
                 f"{prefix.switches(base.epochs)} ({prefix.root})")
        records = self.runner.run("abd_trunk", builder) if todo else []
        failed = [r for r in records if r.status == "errored"]
        if failed:
            raise DoktraError(f"abd: trunk {failed[0].params} failed ({failed[0].error}); see {self.run_dir / 'ray'} "
                              "and rerun, or set stages.abd.share_prefix=false")
        return records

    def _end_stage(self, stage: str, records: list[TrialRecord], free: Callable[[Path, str], int]) -> None:
        """Name the stage's holes, free what it no longer needs, send queued tracking writes."""
        for hole in holes(records):
            log.warning(f"[{stage}] hole: trial {hole} (failed after {self.config.search.max_failures} retries)")
        if self.config.search.keep_checkpoints == "needed":
            freed = free(self.run_dir, stage)
            if freed:
                log.info(f"[{stage}] freed {fmt_bytes(freed)} of checkpoints no later stage needs")
        self.tracker.client.flush(own_only=False)
        self.session.record(self.run_dir / RAY_PROCESSES_FILE)  # the workers started since

    def baseline_teacher(self, records: list[TrialRecord], base: StageConfig) -> dict[str, Any]:
        """The β₁ = 0 teacher (plain fine-tuning) for doktra_no_ctt / kld: the best β₁=0 trial of the
        CTT grid, or one extra β₁=0 run (`ray/ctt_ft`) when the grid has none."""
        rule = selection_rule(self.config.search.selection, "ctt")
        where = self.run_dir / "ray" / "ctt"

        def beta_zero(r: TrialRecord) -> bool:
            return float(r.params.get("beta", -1)) == 0.0 and r.status != "errored"

        if any(beta_zero(r) and r.checkpoint for r in records):
            best = pick_winner("ctt", records, rule, where, only=beta_zero)
        else:
            log.info("[ctt] no beta=0 trial in the grid: one extra beta=0 run for the uncalibrated teacher")
            spec = StageSpec(
                name="ctt_ft", trainable=STAGE_TRAINABLES["ctt"],
                trainable_kwargs={"base": base, "tracking": self.specs.tracking("ctt")},
                param_space=dict(self.plan.spaces["ctt"].fixed),
                max_t=self.plan.stage_epochs["ctt"], keep=self.specs.keep("ctt"),
            )
            best = pick_winner("ctt", self.runner.run("ctt", explicit_runs(spec, [RunSpec(overrides={"beta": 0.0})], ("beta",))),
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
            search_seed=self.config.train.seed, data_format=self.plan.data.data_format,
        )

    def final_bases(self, winners: dict[str, dict[str, Any]]) -> dict[str, StageConfig]:
        """The base config of each kind of final run (the student and CTT winners' checkpoints known)."""
        return {
            "ctt": self.specs.stage_base("ctt", self.config.teacher_model),
            "student": self.specs.stage_base("student", self.config.student_model),
            "abd": self.specs.abd_base(winners["student"]["checkpoint"], winners["ctt"]["checkpoint"]),
            "evaluate": self.specs.stage_base("ctt", self.config.teacher_model),
        }

    def start_final_beside_abd(self, winners: dict[str, dict[str, Any]]) -> BesideStage | None:
        """`final.beside_abd`: the final teacher and student runs (which need only the CTT and student
        winners) start now, in a thread, beside the ABD search; the final stage later runs the
        distillations from them. None when the final runs wait for ABD (the option is off, a cap on
        concurrent trials is set, or ABD or the final stage finished earlier)."""
        if (not self.config.final.beside_abd or self.resources.max_concurrent is not None
                or read_winner(self.run_dir / "stages" / "abd") or (self.run_dir / "final" / "results.json").is_file()):
            return None
        specs = self.final_plan(winners).wave1()
        log.info(f"[final] {len(specs)} teacher/student runs start beside the ABD search (final.beside_abd=true)")
        # one slot kept for the ABD search while it runs: the final distillations wait for its winner
        slots = SlotsBeside(self.resources, leave=1)
        build = self.specs.final_builder(specs, self.final_bases(winners), slots=slots)
        return BesideStage("final-beside-abd", lambda cancel: self.runner.run("final", build, cancel=cancel),
                           on_other_end=slots.release)

    def final_stage(self, winners: dict[str, dict[str, Any]], beside: BesideStage | None = None) -> dict[str, Any]:
        """The final runs (`final.protocol`): the teachers and students are trained (or scored), each
        distillation starts as soon as its teacher and student exist; every run is scored on dev and
        test; `final/results.json`. `beside`: the teacher and student runs started beside ABD, whose
        trials this stage keeps (waiting for them first)."""
        out = self.run_dir / "final" / "results.json"
        if out.is_file():
            log.info(f"[final] finished earlier: {out} (skipped)")
            return read_run_json(out, self.run_dir)
        if beside is not None:
            if beside.thread.is_alive():
                log.info("[final] waiting for the teacher/student runs beside ABD to end")
            beside.join()
        plan = self.final_plan(winners)
        f = self.config.final
        folds = f" x folds {list(plan.folds)}" if plan.folds else ""
        log.info(f"[final] start ({plan.protocol} protocol): {list(f.variants)} x seeds {list(f.seeds)}{folds}; "
                 f"{len(plan.wave1())} teacher/student runs and the distillations from them; eval on "
                 f"{list(f.eval_splits)}{plan.same_note()}")
        t0 = time.monotonic()
        specs = plan.runs(str(self.run_dir / "final" / "models"))
        records = self.runner.run("final", self.specs.final_builder(specs, self.final_bases(winners)),
                                  continues="the teacher/student runs beside ABD" if beside is not None else None)
        done = {tuple(r.params.get(k) for k in RUN_KEYS) for r in records}
        missing = [spec for spec in specs if spec.key(RUN_KEYS) not in done]
        if missing:
            log.warning(f"[final] {len(missing)} distillation(s) could not run: their teacher or student failed")
        runs = final_runs(records) + missing_runs(missing)
        summary = summarize(runs, f.gad_std)
        results = {"search_id": self.plan.search_id, "task": self.plan.task, "protocol": plan.protocol,
                   "aliases": plan.aliases(), "runs": runs, "summary": summary,
                   "winners": {"ctt": winners["ctt"]["params"], "student": {**winners["student"]["params"],
                               "e1": winners["student"]["e1"]}, "abd": winners["abd"]["params"]}}
        atomic_write_json(out, results, self.run_dir)
        self.tracker.log_stage_summary("final", {"runs": len(runs), "protocol": plan.protocol}, [out])
        self._end_stage("final", records, lambda run_dir, _stage: free_final(run_dir))
        for variant, s in summary.items():
            same = f", = {s['same_as']}'s runs" if s.get("same_as") else ""
            log.info(
                f"[final] {variant:15s} test_f1 {fmt_mean_std(s.get('test_f1'))}  test_ece {fmt_mean_std(s.get('test_ece'))}  "
                f"(n={s['n']}, {s['origin']}{', errored ' + str(s['errored']) if s['errored'] else ''}"
                f"{', ± over ' + s['std_over'] if s.get('std_over', 'runs') != 'runs' else ''}{same})"
            )
        log.info(f"[final] end in {time.monotonic() - t0:.0f}s | results {out} | {disk_line(self.run_dir)}")
        return read_run_json(out, self.run_dir)

    def outcome_stage(self, winners: dict[str, dict[str, Any]], results: dict[str, Any]) -> None:
        """The outcome in MLflow (tables, plots, metrics, description, registered winners); then the
        winners' checkpoints are freed. Waits for the next run when the tracking server is away."""
        if outcome_done(self.run_dir):
            return
        try:
            outcome = publish_outcome(self.tracker, self.plan, winners, results, self.overrides)
        except Exception as err:  # noqa: BLE001 - an outage: the next run of the command publishes it
            if not is_outage(err, self.tracker.tracking_uri):
                raise
            log.warning(f"[outcome] the tracking server is away ({first_line(err, 120)}); the tables are "
                        "in the run directory and the outcome is published by the next run of this command")
            return
        names = ", ".join(f"{name} v{version}" for name, version in outcome["registered"].items())
        log.info(f"[outcome] tables and plots in {self.run_dir} and on the search run; registered {names}")
        log.info(f"[outcome] every variant's test F1/ECE side by side in the MLflow UI: <UI address>/{outcome['view']}")
        if self.config.search.keep_checkpoints == "needed":
            freed = free_winners(self.run_dir)
            log.info(f"[outcome] freed {fmt_bytes(freed)}: the winners live in the Model Registry | "
                     f"{disk_line(self.run_dir)}")

    # ---------------------------------------------------------------- all
    def run(self) -> dict[str, Any]:
        """The three searches in order (stopping after `search.stop_after`), then the final runs."""
        log.info(
            f"search {self.plan.search_id}: task {self.plan.task}, preset {self.config.preset}, "
            f"run dir {self.run_dir}, mlflow {self.tracker.tracking_uri}"
        )
        log.info(f"ray: {self.resources.describe()} {self.session.where}")
        status = "FAILED"
        summary: dict[str, Any] = {"run_dir": str(self.run_dir)}
        beside: BesideStage | None = None
        try:
            winners: dict[str, dict[str, Any]] = {}
            for stage in SEARCH_STAGES:
                winners[stage] = summary[stage] = self.search_stage(stage, winners)
                if self.config.search.stop_after == stage:
                    break
                if stage == "student" and self.config.search.stop_after is None:  # the final runs will run
                    beside = self.start_final_beside_abd(winners)
            else:
                summary["final"] = self.final_stage(winners, beside)
                self.outcome_stage(winners, summary["final"])
            status = "FINISHED"
            return summary
        finally:
            if beside is not None:
                beside.cancel()  # the search failed or was interrupted while they ran: stopped, resumable
            waiting = self.tracker.finish(status)
            if waiting:
                log.warning(f"[mlflow] {waiting} tracking write(s) wait in {self.tracker.outbox_dir}; the next "
                            "run of this command sends them once the server answers")


def _quiet_libraries() -> None:
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # Optuna: quieted where it is imported


def run_search(
    cfg: Plan | DictConfig | dict[str, Any], overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run the search of `cfg` (a checked `Plan`, or a composed config it is built from): preflight,
    the run directory's lease (`cluster.lease`: one search per run directory), Ray, the stages.
    `overrides`: the command line's (for the outcome's "reproduce" line). Its lines go to the
    `doktra_tune` logger (doktra_tune.console: to stdout unless something handles them already)."""
    if not lines_are_handled():
        console_logging()
    _quiet_libraries()
    plan = cfg if isinstance(cfg, Plan) else build_plan(cfg)
    if plan.config.search.dry_run:  # the plan, printed: no preflight (downloads), Ray or run directory
        from doktra_tune.plan.dry_run import dry_run_lines

        for line in dry_run_lines(plan):
            log.info(line)
        return {"dry_run": True, "search_id": plan.search_id, "run_dir": str(plan.run_dir)}
    preflight(plan)
    # One search per run directory: a live copy is one line (exit 2); a dead or silent one's lease is taken
    # over. Only then the Ray processes a killed earlier driver on this machine left behind are stopped.
    with RunDirLease(plan.run_dir, plan.search_id) as lease:
        if lease.previous is None or lease.previous.on_this_machine():
            stale = stop_recorded_ray(plan.run_dir / RAY_PROCESSES_FILE)
            if stale:
                log.info(f"[ray] stopped {stale} process(es) the killed earlier run of this search had left running")
        with RaySession(plan.config.ray, worker_env=CPU_KERNEL_ENV[plan.config.cpu_kernels]) as session:
            (plan.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plan.raw)))
            session.record(plan.run_dir / RAY_PROCESSES_FILE)
            check_nodes(plan)  # every node: models, data, runs_root, cache_dir, versions; exit 2 before any trial
            return SearchDriver(plan, session, overrides).run()
