"""The plan of a search: its typed configuration, grids, run directory and search id.

`build_plan` needs no network and no data: it makes every path-like setting absolute against the
working directory (`paths.absolute_settings`: trials run in directories of their own), checks the
configuration (`schema`), reads the grid files (`search_spaces/*.yaml` or the user's) and derives
the search id and run directory. The I/O checks come after it (`preflight`), before anything is
written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from doktra_tune.compose import resolved_dict
from doktra_tune.config import DataConfig, DistillConfig, StageConfig, from_section
from doktra_tune.data import gad_fold_format
from doktra_tune.errors import ConfigError
from doktra_tune.plan.paths import absolute, absolute_settings, local_path
from doktra_tune.plan.schema import (
    SEARCH_STAGES,
    SearchConfig,
    check_schedule_grouping,
)
from doktra_tune.prefix import SharedPrefix
from doktra_tune.search_space import SearchSpace, load_search_space

REPO_ROOT = Path(__file__).resolve().parents[2]
# config keys that do not change what a search computes (left out of the default search id)
_ID_EXCLUDED = ("runs_root", "search_id", "data_root", "cache_dir", "ray", "mlflow", "resources", "hydra")
_ID_EXCLUDED_SEARCH = ("max_failures", "stop_after", "keep_checkpoints", "dry_run")
_ID_EXCLUDED_FINAL = ("gad_std", "beside_abd")  # how GAD's ± is summarised, when runs start: not what is trained
# the paper's models for the task: what a search trains is teacher_model / student_model, hashed as such;
# the names of the task's data copies: what the search reads is data_subdir / data_format, hashed as such
_ID_EXCLUDED_TASK = ("paper_teacher", "paper_students", "data_copy", "copies", "cpu_copy")


@dataclass(frozen=True)
class Plan:
    """A checked search: what to run and where."""

    config: SearchConfig
    raw: dict[str, Any]  # the resolved config, its paths absolute: config.yaml, the search id, MLflow params
    search_id: str
    run_dir: Path  # absolute
    data_root: Path  # absolute
    data_root_origin: str  # which setting gave data_root (for error messages)
    data: DataConfig  # the data every stage trains and evaluates on
    train: StageConfig  # train: every stage's shared fields, on `data` (`stage_base` adds each stage's own)
    spaces: dict[str, SearchSpace]  # stage -> its grid
    stage_epochs: dict[str, int]  # stage -> epochs of its longest trial (e, max e1, e2)

    @property
    def task(self) -> str:
        return self.config.task.name

    def keep(self, stage: str) -> str:
        """Which epoch of a trial of `stage` is its model: "last" (search.handoff=final_epoch, the
        authors'), or "best" by dev F1 (handoff=best_epoch, and the student's e1_mode=best_epoch)."""
        if self.config.search.handoff == "best_epoch":
            return "best"
        return "best" if stage == "student" and not self.config.stages["student"].searches_epochs else "last"

    @property
    def resumable(self) -> bool:
        """Whether trials save their training state with each checkpoint, so a paused (synchronous
        halving) or retried (search.max_failures: a lost worker) trial goes on where it stopped."""
        return self.config.search.pauses_trials or self.config.search.max_failures > 0

    def stage_base(self, stage: str, model: str, torch_threads: int | None = None) -> StageConfig:
        """The StageConfig every trial of `stage` starts from (its `RunSpec` is applied on top): the
        train: section on the plan's data, with the stage's epochs, precision and handoff."""
        return dataclasses.replace(
            self.train, model=model, epochs=self.stage_epochs[stage], precision=self.config.stages[stage].precision,
            torch_threads=torch_threads, eval_splits=("dev",), keep_checkpoints=self.keep(stage),
            save_training_state=self.resumable,
        )

    def abd_base(self, student_checkpoint: str, teacher_checkpoint: str, torch_threads: int | None = None) -> DistillConfig:
        """The DistillConfig every ABD trial starts from: the student winner, distilling from the CTT winner."""
        abd = self.config.stages["abd"]
        return DistillConfig.of_stage(self.stage_base("abd", student_checkpoint, torch_threads),
                                      teacher_checkpoint=teacher_checkpoint, margin=abd.margin,
                                      projection=abd.projection)


def search_id_for(raw: dict[str, Any]) -> str:
    """`<task>-<preset>-<8 hex>`: a hash of everything that changes what the search computes. Local
    model directories and grid files are hashed as absolute paths (`build_plan` hashes its `raw`), so
    `./models/x` and `/abs/models/x` are one search; where things run (runs_root, data_root,
    cache_dir) is left out."""
    keyed = {k: v for k, v in raw.items() if k not in _ID_EXCLUDED}
    keyed["search"] = {k: v for k, v in (raw.get("search") or {}).items() if k not in _ID_EXCLUDED_SEARCH}
    keyed["task"] = {k: v for k, v in (raw.get("task") or {}).items() if k not in _ID_EXCLUDED_TASK}
    if "final" in raw:
        keyed["final"] = {k: v for k, v in (raw.get("final") or {}).items() if k not in _ID_EXCLUDED_FINAL}
    train = raw.get("train") or {}
    if train.get("batching") == "bucketed":  # every search before train.batching existed: the same ids
        keyed["train"] = {k: v for k, v in train.items() if k != "batching"}
    stages = raw.get("stages") or {}
    if "abd" in stages:  # sharing the ABD prefix gives the same numbers: the same search
        keyed["stages"] = {**stages, "abd": {k: v for k, v in stages["abd"].items() if k != "share_prefix"}}
    digest = hashlib.sha1(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{raw['task']['name']}-{raw.get('preset_name', 'custom')}-{digest}"


def data_root(config: SearchConfig) -> tuple[Path, str]:
    """(absolute data root, where it came from): data_root, else $DOKTRA_DATA_ROOT, else
    <repo>/../shared/data."""
    if config.data_root:
        return Path(local_path(config.data_root, "data_root")), "data_root"
    if os.environ.get("DOKTRA_DATA_ROOT"):
        return Path(local_path(os.environ["DOKTRA_DATA_ROOT"], "DOKTRA_DATA_ROOT")), "DOKTRA_DATA_ROOT"
    return absolute(REPO_ROOT.parent / "shared" / "data"), "the default data_root"


def schedule_group(space: SearchSpace) -> str | None:
    """The key whose trials share one learning-rate schedule ("epochs" when several e1 are searched),
    so pruners compare like with like; None when every trial has the same schedule."""
    return "epochs" if len(space.params.get("epochs", ())) > 1 else None


def max_epochs(space: SearchSpace) -> int:
    """The longest trial of a stage: its fixed epochs, or the largest of its epochs grid (e1)."""
    return int(max(space.params["epochs"])) if "epochs" in space.params else int(space.fixed["epochs"])


def load_spaces(config: SearchConfig) -> dict[str, SearchSpace]:
    """Each stage's grid: its file with the stage's overrides applied; grid mode runs all of it."""
    spaces: dict[str, SearchSpace] = {}
    for stage in SEARCH_STAGES:
        options = config.stages[stage]
        try:
            space = load_search_space(stage, options.search_space, options.grid, options.fixed_values())
        except ConfigError as err:
            raise ConfigError(f"stages.{stage}: {err}") from err
        if options.searches_epochs and "epochs" not in space.params:
            raise ConfigError(
                f"stages.{stage}: e1_mode=grid needs e1 values; add epochs to the grid file's params or set "
                f"stages.{stage}.grid.epochs=[5,10]"
            )
        if options.searches_epochs and max(space.params["epochs"]) > options.epochs:
            raise ConfigError(
                f"stages.{stage}.epochs={options.epochs} is the longest e1, but the e1 grid holds "
                f"{space.params['epochs']}; set stages.{stage}.grid.epochs=[...] up to {options.epochs}, or raise "
                f"stages.{stage}.epochs"
            )
        check_schedule_grouping(schedule_group(space), config.search.pruner, config.search.mode)
        num_samples = config.search.num_samples
        if config.search.mode == "grid" and num_samples not in (None, space.grid_size):
            raise ConfigError(
                f"search.num_samples={num_samples} but the {stage} grid has {space.grid_size} "
                "points; drop num_samples for the exhaustive grid or use search.mode=tpe"
            )
        spaces[stage] = space
    return spaces


def build_plan(cfg: DictConfig | dict[str, Any]) -> Plan:
    """Check `cfg` and derive everything the search needs that is not I/O (ConfigError otherwise).
    Its paths are absolute against the working directory (a runs_root on object storage: ConfigError)."""
    raw = absolute_settings(resolved_dict(cfg))
    config = SearchConfig.from_raw(raw)
    root, origin = data_root(config)
    data = from_section(DataConfig, "data", config.data, task=config.task.name,
                        data_dir=str(root / config.task.data_subdir), data_format=config.task.data_format,
                        cache_dir=config.cache_dir, hoc_head=config.task.hoc_head)
    if config.final.folds:
        gad_fold_format(data.data_format, config.final.folds[0])  # the final runs' folds need GAD's fold format
    spaces = load_spaces(config)
    search_id = config.search_id or search_id_for(raw)
    if any(c in search_id for c in "/\\") or search_id in (".", ".."):
        raise ConfigError(f"search_id={search_id!r} must be a plain name; drop the slashes")
    return Plan(
        config=config, raw=raw, search_id=search_id,
        run_dir=Path(config.runs_root) / search_id,
        data_root=root, data_root_origin=origin, data=data, train=dataclasses.replace(config.train, data=data),
        spaces=spaces,
        stage_epochs={stage: max_epochs(space) for stage, space in spaces.items()},
    )


def shared_prefix(plan: Plan) -> SharedPrefix | None:
    """The ABD grid's shared activation-boundary prefix (stages.abd.share_prefix; `SharedPrefix`),
    its trunks under `stages/abd/trunks`, or None when every grid point trains alone."""
    if not plan.config.stages["abd"].share_prefix:
        return None
    space = plan.spaces["abd"]
    defaults = {"gamma": DistillConfig.gamma, "epochs": plan.stage_epochs["abd"]}
    return SharedPrefix.for_grid(space.params, space.fixed, defaults, plan.run_dir / "stages" / "abd" / "trunks")
