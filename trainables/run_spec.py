"""The reserved-key protocol of a trial config: which keys describe a run (MLflow tags), which only
order the final runs, and `merge_config`, which applies the rest to a stage's base config.

A final run spec is `config["run"]` (docs/DESIGN.md, "Trainable contract"): variant, seed, `stage`
naming the stage function, the ordering keys and the hyperparameter overrides.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

# Keys of a final run spec that describe the run rather than configure it: MLflow tags of its run.
RUN_TAGS = {"variant": "doktra.variant", "fold": "doktra.fold", "origin": "doktra.origin",
            "teacher": "doktra.teacher", "student": "doktra.student_init"}
# Keys of a final run spec that only order the runs (`DependentRuns`): the model a run publishes and
# the models it needs. The trainable publishes; neither is part of the stage config.
RUN_ORDERING = ("publish", "needs")
RESERVED_KEYS = ("run", *RUN_TAGS, *RUN_ORDERING)
STAGE_KEY = "stage"  # inside a final run spec: which stage function runs it (ctt | student | abd | evaluate)


def merge_config(base: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """`base` with the trial's overrides applied: plain keys first, then the `run` dict.

    The run-describing keys (`variant`, `fold`, `origin`, `teacher`, `student`; in `run` or at the
    top level) are returned separately as MLflow tags (`RUN_TAGS`); a `data` override dict updates
    the nested data config field by field.
    """
    merged = copy.deepcopy(dict(base))
    overrides = {k: v for k, v in config.items() if k not in RESERVED_KEYS}
    run = dict(config.get("run") or {})
    tags: dict[str, str] = {}
    for key, tag in RUN_TAGS.items():
        value = run.pop(key, None)
        value = config.get(key) if value is None else value
        if value is not None:
            tags[tag] = str(value)
    run.pop(STAGE_KEY, None)
    for key in RUN_ORDERING:
        run.pop(key, None)
    overrides.update(run)
    for key, value in overrides.items():
        if key == "data" and isinstance(value, Mapping):
            merged["data"] = {**merged.get("data", {}), **value}
        else:
            merged[key] = value
    return merged, tags
