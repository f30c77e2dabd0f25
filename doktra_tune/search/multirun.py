"""Hydra multirun: `python -m doktra_tune.search -m task=chemprot,fpb preset=tiny` runs one search per
combination of the swept values, one after another in this process (Hydra's BasicLauncher). Each
search starts and shuts down its own local Ray, or connects to `ray.address` and leaves it running
for the next.

`MultirunReport` (a Hydra callback, config.yaml `hydra.callbacks`) checks every job before the first
one starts (`check_jobs`: each composed and planned, its run directory its own, its data there),
says which search is running and, at the end, where each one is and the `python -m analysis` command
that builds one Table 2 across them. `expand` turns the overrides into the jobs as Hydra's
BasicSweeper does (choice `a,b`, `range()`, `glob()`; on Hydra's public override parser).
"""

from __future__ import annotations

import itertools
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from doktra_tune.compose import compose_config
from doktra_tune.errors import ConfigError, DoktraError, first_line
from doktra_tune.plan.search_plan import Plan, build_plan

log = logging.getLogger(__name__)

SWEEP_SYNTAX = "a,b (choice), range(start,stop[,step]) or glob(pattern)"


def expand(overrides: list[str], loader: ConfigLoader | None) -> list[list[str]]:
    """The jobs of `overrides`, in Hydra's order: one override list per combination of the swept
    values (`loader` lists a group's options for `glob()`)."""
    try:
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(f"bad override ({first_line(err)}); a sweep is {SWEEP_SYNTAX}") from err
    # as Hydra's BasicSweeper splits them, on the public Override API: one list of `key=value` per key
    # (a sweep: each of its values), a later override of a key replacing an earlier one; their product
    choices: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            kind = override.value_type.name if override.value_type is not None else "unknown"  # as Hydra words it
            raise ConfigError(f"bad override (BasicSweeper does not support sweep type : {kind}); a sweep is {SWEEP_SYNTAX}")
    return [list(job) for job in itertools.product(*choices.values())]


def label(job: list[str]) -> str:
    return " ".join(job)


def job_context() -> str:
    """`multirun search 2 (task=fpb preset=tiny; ...): ` inside a multirun's job, else '' (what an
    error line starts with, so it names the search that failed)."""
    if not (GlobalHydra.instance().is_initialized() and HydraConfig.initialized()):
        return ""
    hydra_cfg = HydraConfig.get()
    num = OmegaConf.select(hydra_cfg, "job.num")
    if hydra_cfg.mode != RunMode.MULTIRUN or num is None:
        return ""
    return f"multirun search {num + 1} ({label(list(hydra_cfg.overrides.task))}; the later ones did not start): "


def fail(err: DoktraError) -> NoReturn:
    """`err` as one line on stderr (naming the multirun search it stopped) and its exit code."""
    print(f"error: {job_context()}{err}", file=sys.stderr, flush=True)
    sys.exit(err.exit_code)


def shown(path: Path) -> str:
    """`path` relative to the working directory when it lies below it, else absolute; shell-quoted."""
    rel = os.path.relpath(path)
    return shlex.quote(path.as_posix() if rel.startswith("..") else rel)


def analysis_command(run_dirs: list[Path], out: Path) -> str:
    """The command that builds one Table 2 (and every other table) across `run_dirs`."""
    return " ".join(["python -m analysis", *(shown(d) for d in run_dirs), "--out", shown(out)])


def check_jobs(todo: list[list[str]]) -> dict[int, Plan]:
    """Every job of a multirun composed and planned, its run directory its own and (when more than one
    search runs) its data there, before the first search starts: the first problem is one line naming
    the job. The plans by job number (from 1)."""
    plans: dict[int, Plan] = {}
    for num, job in enumerate(todo, 1):
        try:
            plans[num] = build_plan(compose_config(job))
        except DoktraError as err:
            raise type(err)(f"multirun search {num} ({label(job)}): {err}") from err
    seen: dict[Path, int] = {}
    for num, plan in plans.items():
        if plan.run_dir in seen:
            raise ConfigError(
                f"multirun searches {seen[plan.run_dir]} and {num} would share the run directory {plan.run_dir} "
                "(search_id is fixed, or they differ only in keys that do not change the search); sweep keys "
                "that change the search, or drop search_id"
            )
        seen[plan.run_dir] = num
    running = {num: plan for num, plan in plans.items() if not plan.raw["search"].get("dry_run")}
    if len(running) > 1:  # a task without data fails here, not after the searches before it (hours)
        from doktra_tune.plan.preflight import (
            check_data,  # loads torch and Ray, which the searches need next
        )

        for num, plan in running.items():
            try:
                check_data(plan)
            except DoktraError as err:
                raise type(err)(f"multirun search {num} ({label(todo[num - 1])}): {err}") from err
    return plans


class MultirunReport(Callback):
    """In a multirun: every job checked up front (`check_jobs`), a line as each search starts and, at
    the end, one line per finished search (task, run directory) and the `python -m analysis` command
    for one Table 2 across them. Single runs print nothing here."""

    def __init__(self) -> None:
        self.plans: dict[int, Plan] = {}
        self.searches: list[tuple[str, Path]] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # Hydra turns a callback's exception into a warning and goes on: the check exits itself
            todo = expand(list(config.hydra.overrides.task), GlobalHydra.instance().config_loader())
            self.plans = check_jobs(todo)
        except DoktraError as err:
            fail(err)
        listing = "; ".join(f"{i} {label(job)}" for i, job in enumerate(todo, 1))
        log.info(f"[multirun] {len(todo)} search(es), one after another: {listing}")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            log.info(f"[multirun] search {config.hydra.job.num + 1} of {len(self.plans)}: "
                     f"{label(list(config.hydra.overrides.task))}")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or job_return.status != JobStatus.COMPLETED:
            return
        plan = self.plans[config.hydra.job.num + 1]
        if plan.run_dir.is_dir():  # a search that ran (a dry run writes nothing)
            self.searches.append((plan.task, plan.run_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for task, run_dir in self.searches:
            log.info(f"[multirun] {task}: {shown(run_dir)}")
        if len(self.searches) > 1:
            tasks = "-".join(dict.fromkeys(task for task, _ in self.searches))
            run_dirs = [run_dir for _, run_dir in self.searches]
            out = run_dirs[0].parent / f"analysis-{tasks}"
            log.info(f"[multirun] one Table 2 across them (FPB/FTS: Table 7): {analysis_command(run_dirs, out)}")
