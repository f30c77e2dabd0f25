"""One run a trainable executes, typed (docs/DESIGN.md, "Trainable contract").

A trial's stage config is its stage's base config (a `StageConfig` / `DistillConfig`, made and
checked once when the search is planned, handed to the trainable as an object by
`tune.with_parameters`) with the trial's `RunSpec` applied. A search trial's spec is its grid point;
an explicit run (a final run, an ABD trunk, the extra β₁ = 0 teacher) also says which stage function
runs it, how its MLflow run is labelled, and which models it publishes and needs.

Tune stores a trial's config as JSON and a resumed search reads it back, so an explicit run travels
in the param space as `{"run": spec.to_json()}`; `RunSpec.of_trial` is the one place that reads it.
No Ray here: the method core and the tests use it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence, TypeVar, get_args

from doktra_tune.config import StageConfig, with_overrides
from doktra_tune.errors import ConfigError

RunStage = Literal["ctt", "student", "abd", "evaluate"]
RUN_STAGES: tuple[str, ...] = get_args(RunStage)
# What labels a run (its MLflow tags; the final runs' rows in results.json): label -> tag name.
# `also`: the other final variants the run stands for, comma-separated (β₁ = 0 won CTT: teacher_ft is
# teacher_ctt's runs; `search.final.FinalPlan.aliases`), which results.json and the tables expand.
LABEL_TAGS: dict[str, str] = {"variant": "doktra.variant", "fold": "doktra.fold", "origin": "doktra.origin",
                              "teacher": "doktra.teacher", "student": "doktra.student_init", "also": "doktra.also"}
RUN_FIELD = "run"  # the param-space key an explicit run travels under

_C = TypeVar("_C", bound=StageConfig)


@dataclass(frozen=True)
class RunSpec:
    """What one trial runs.

    `stage`: the stage function that runs it (ctt | student | abd | evaluate), None for the
    trainable's own stage; `overrides`: StageConfig fields set on the base config (`data`: a mapping
    of DataConfig fields); `labels`: what the run is (variant, fold, origin, teacher, student, also:
    the variants it stands for too; MLflow tags); `publish`: the model name its model is copied to
    when it ends well; `needs`: the model names it reads, which must exist before it starts
    (`search.dependent_runs`)."""

    stage: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, Any] = field(default_factory=dict)
    publish: str | None = None
    needs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.stage is not None and self.stage not in RUN_STAGES:
            raise ConfigError(f"run stage {self.stage!r} is unknown; use one of {', '.join(RUN_STAGES)}")
        unknown = sorted(set(self.labels) - set(LABEL_TAGS))
        if unknown:
            raise ConfigError(f"run labels {unknown} are unknown; use any of {', '.join(LABEL_TAGS)}")
        object.__setattr__(self, "needs", tuple(self.needs))

    def stage_config(self, base: _C) -> _C:
        """`base` with this run's overrides: the config the stage function runs."""
        return with_overrides(base, self.overrides)

    def tags(self) -> dict[str, str]:
        """The MLflow tags of the run's labels (unset labels left out)."""
        return {LABEL_TAGS[k]: str(v) for k, v in self.labels.items() if v is not None}

    def record(self) -> dict[str, Any]:
        """The run as one flat mapping (labels, stage, overrides, publish, needs): the `params` of its
        finished trial's record, which results.json and a resumed search read."""
        out: dict[str, Any] = {**self.labels}
        if self.stage is not None:
            out["stage"] = self.stage
        out.update(self.overrides)
        if self.publish:
            out["publish"] = self.publish
        if self.needs:
            out["needs"] = list(self.needs)
        return out

    def key(self, names: Sequence[str]) -> tuple[Any, ...]:
        """The values of `names` in `record()`: what identifies the run among its stage's runs."""
        record = self.record()
        return tuple(record.get(name) for name in names)

    def to_json(self) -> dict[str, Any]:
        """The JSON form Tune stores in the trial's config (under `RUN_FIELD`)."""
        out: dict[str, Any] = {"overrides": dict(self.overrides)}
        if self.stage is not None:
            out["stage"] = self.stage
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.publish:
            out["publish"] = self.publish
        if self.needs:
            out["needs"] = list(self.needs)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSpec:
        return cls(stage=data.get("stage"), overrides=dict(data.get("overrides") or {}),
                   labels=dict(data.get("labels") or {}), publish=data.get("publish"), needs=tuple(data.get("needs") or ()))

    @classmethod
    def of_trial(cls, config: Mapping[str, Any]) -> RunSpec:
        """The spec of a trial from its Tune config: the grid point's values (and any fixed ones) are
        overrides; an explicit run's `RUN_FIELD` adds its own, which win."""
        point = {k: v for k, v in config.items() if k != RUN_FIELD}
        if RUN_FIELD not in config:
            return cls(overrides=point)
        run = cls.from_json(config[RUN_FIELD])
        return cls(stage=run.stage, overrides={**point, **run.overrides}, labels=run.labels,
                   publish=run.publish, needs=run.needs)


def trial_record(config: Mapping[str, Any]) -> dict[str, Any]:
    """A finished trial's params as one flat mapping (its grid point, or its run's `record()`)."""
    return RunSpec.of_trial(config).record()
