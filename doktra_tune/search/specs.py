"""What each stage's Tuner runs: the base config of its trials, its searcher and scheduler, the run
specs of the final stage, and what an interrupted stage still has to run (`SpecBuilder`s for
`StageRunner.run`). The driver decides *when*; this module decides *what*."""

from __future__ import annotations

import dataclasses
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler

from doktra_tune.cluster.ray_session import Resources, SlotsBeside
from doktra_tune.config import DistillConfig, StageConfig
from doktra_tune.metrics import SEARCH_METRIC
from doktra_tune.plan.final import RUN_KEYS
from doktra_tune.plan.search_plan import Plan, schedule_group
from doktra_tune.prefix import SharedPrefix
from doktra_tune.run_spec import RUN_FIELD, RunSpec
from doktra_tune.search.dependent_runs import DependentRuns
from doktra_tune.search.search_algorithms import (
    build_search,
    grid_queue,
    pruning_grace_period,
    uses_optuna,
)
from doktra_tune.search.stage_runner import SpecBuilder, StageSpec
from doktra_tune.search.trials import remaining_grid_points, remaining_runs
from doktra_tune.tracking import SearchTracker
from doktra_tune.trial_record import TrialRecord
from trainables import STAGE_TRAINABLES, abd_trunk_trainable, final_trainable


def explicit_runs(spec: StageSpec, runs: list[RunSpec], keys: tuple[str, ...]) -> SpecBuilder:
    """A builder for a Tuner over explicit runs (`spec.param_space[RUN_FIELD]` ranges over `runs`):
    after an interruption, only the runs no finished trial covered."""

    def build(prior: list[TrialRecord]) -> StageSpec:
        todo = remaining_runs(runs, keys, prior) if prior else runs
        return dataclasses.replace(spec, param_space={**spec.param_space, RUN_FIELD: run_grid(todo)},
                                   num_samples=1 if todo else 0)

    return build


def prior_trials(records: list[TrialRecord]) -> list[Any]:
    """The finished trials as an Optuna study is told them after an interruption (`PriorTrial`s)."""
    from doktra_tune.search.optuna_searcher import PriorTrial

    return [PriorTrial(params=r.params, curve=r.curve, state=r.status) for r in records]


def run_grid(runs: list[RunSpec]) -> dict[str, Any]:
    """A param-space entry with one trial per run (Tune stores each run's JSON form in its config)."""
    return tune.grid_search([run.to_json() for run in runs])


class StageSpecs:
    """The Tuner specs of one search's stages (its plan, the cluster's resources, its tracker)."""

    def __init__(self, plan: Plan, resources: Resources, tracker: SearchTracker) -> None:
        self.plan = plan
        self.config = plan.config
        self.run_dir = plan.run_dir
        self.resources = resources
        self.tracker = tracker

    def keep(self, stage: str) -> str:
        return self.plan.keep(stage)

    def stage_base(self, stage: str, model: str) -> StageConfig:
        """The plan's base of `stage` (`Plan.stage_base`), on this cluster's torch threads per trial."""
        return self.plan.stage_base(stage, model, self.resources.torch_threads)

    def abd_base(self, student_checkpoint: str, teacher_checkpoint: str) -> DistillConfig:
        return self.plan.abd_base(student_checkpoint, teacher_checkpoint, self.resources.torch_threads)

    def tracking(self, stage: str) -> dict:
        tags = {"doktra.teacher_model": self.config.teacher_model, "doktra.student_model": self.config.student_model}
        return self.tracker.trial_tracking(stage, tags)

    # ---------------------------------------------------------------- search specs
    def search_spec(
        self, stage: str, base: StageConfig, *, num_samples: int | None = None,
        points: list[dict[str, Any]] | None = None, prior: list[Any] | None = None,
        prefix: SharedPrefix | None = None,
    ) -> StageSpec:
        """The Tuner of `stage`'s search over its grid (or `points` / `num_samples` of it): plain Tune
        for the grid without a pruner (one `RunSpec` per point, `tune.grid_search`, FIFO), an Optuna
        study (`build_search`) for TPE or a pruner; `prior`: the finished trials that study is told."""
        space = self.plan.spaces[stage]
        s = self.config.search
        max_t = self.plan.stage_epochs[stage]
        trainable_kwargs = {"base": base, "tracking": self.tracking(stage), **({"prefix": prefix} if prefix else {})}
        if not uses_optuna(s.mode, s.pruner):
            runs = [RunSpec(overrides=point) for point in grid_queue(space, points, num_samples or s.num_samples)]
            return StageSpec(
                name=stage, trainable=STAGE_TRAINABLES[stage], trainable_kwargs=trainable_kwargs,
                param_space={**space.fixed, RUN_FIELD: run_grid(runs)}, max_t=max_t, search_alg=None,
                scheduler=FIFOScheduler(), num_samples=1 if runs else 0, keep=self.keep(stage),
            )
        search_alg, scheduler, n = build_search(
            space, mode=s.mode, num_samples=num_samples or s.num_samples, pruner=s.pruner,
            metric=SEARCH_METRIC, mode_opt="max", max_t=max_t, seed=s.seed,
            grace_period=pruning_grace_period(stage, s.grace_period, max_t, space, base.to_dict()),
            reduction_factor=s.reduction_factor, n_startup_trials=s.n_startup_trials, points=points,
            prior_trials=prior, group_key=schedule_group(space),
        )
        return StageSpec(
            name=stage, trainable=STAGE_TRAINABLES[stage], trainable_kwargs=trainable_kwargs,
            param_space=dict(space.fixed), max_t=max_t, search_alg=search_alg, scheduler=scheduler,
            num_samples=n, pruner_on=s.pruner != "none", keep=self.keep(stage),
        )

    def search_builder(self, stage: str, base: StageConfig, prefix: SharedPrefix | None = None) -> SpecBuilder:
        """The stage's full search; after an interruption, the missing grid points (grid mode) or
        the rest of the trial budget (TPE), with the finished trials in the Optuna study. With
        `prefix` (ABD) every trial starts from its trunk."""

        def build(prior: list[TrialRecord]) -> StageSpec:
            full = self.search_spec(stage, base, prefix=prefix)
            if not prior:
                return full
            known = prior_trials(prior) if uses_optuna(self.config.search.mode, self.config.search.pruner) else None
            if self.config.search.mode == "grid":
                todo = remaining_grid_points(self.plan.spaces[stage].params, prior)
                return self.search_spec(stage, base, points=todo, prior=known, prefix=prefix) if todo else \
                    dataclasses.replace(full, num_samples=0)
            left = max(0, full.num_samples - len(prior))
            return self.search_spec(stage, base, num_samples=left, prior=known, prefix=prefix) if left else \
                dataclasses.replace(full, num_samples=0)

        return build

    def trunk_builder(self, prefix: SharedPrefix, base: DistillConfig) -> SpecBuilder:
        """One Tuner over the trunks not published yet (a rerun never recomputes a finished one)."""
        space = self.plan.spaces["abd"]
        epochs = int(space.fixed.get("epochs", base.epochs))
        runs = [RunSpec(overrides=prefix.trunk_config(point, int(point.get("epochs", epochs))))
                for point in prefix.trunk_points(space.params)
                if not prefix.published({**base.to_dict(), **space.fixed, **point})]
        spec = StageSpec(
            name="abd_trunk", trainable=abd_trunk_trainable,
            trainable_kwargs={"base": base, "prefix": prefix, "tracking": self.tracking("abd_trunk")},
            param_space={**space.fixed, RUN_FIELD: run_grid(runs)},
            max_t=max((r.overrides["stop_after_epoch"] for r in runs), default=1),
            num_samples=1 if runs else 0, keep="last",
        )
        return explicit_runs(spec, runs, tuple(prefix.keys) or ("gamma",))

    def final_builder(self, specs: list[RunSpec], bases: dict[str, StageConfig], *,
                      slots: SlotsBeside | None = None) -> SpecBuilder:
        """One Tuner over final runs; `DependentRuns` starts each distillation as soon as its teacher
        and student are published (by a run of this Tuner, or by a finished earlier one: the runs
        beside ABD, an interrupted stage's). After an interruption: the runs still missing. On a
        local Ray it runs on all free slots, or on those `slots` leaves it (`SlotsBeside`)."""
        models_dir = self.run_dir / "final" / "models"

        def build(prior: list[TrialRecord]) -> StageSpec:
            todo = remaining_runs(specs, RUN_KEYS, prior) if prior else specs
            published = {str(r.params["publish"]) for r in prior if r.status == "completed" and r.params.get("publish")}
            return StageSpec(
                name="final", trainable=final_trainable,
                trainable_kwargs={"bases": bases, "tracking": self.tracking("final"), "models_dir": str(models_dir)},
                param_space={}, max_t=max(self.plan.stage_epochs.values()),
                search_alg=(slots or SlotsBeside(self.resources, leave=0)).limit(DependentRuns(todo, models_dir, published)),
                num_samples=len(todo),
                keep="best" if self.config.search.handoff == "best_epoch" else "last",
            )

        return build
