"""Hydra multirun: `python -m doktra_tune.search -m task=chemprot,fpb preset=tiny` runs one search per
combination of the swept values, one after another in this process (Hydra's BasicLauncher). Each
search starts and shuts down its own local Ray, or connects to `ray.address` and leaves it running
for the next.

`expand` turns a command line's overrides into its jobs as Hydra's BasicSweeper does (choice `a,b`,
`range()`, `glob()`; on Hydra's public override parser), so the CLI checks every job before the first one starts. `MultirunReport` (a
Hydra callback, config.yaml `hydra.callbacks`) says which search is running and, at the end, where
each one is and the `python -m analysis` command that builds one Table 2 across them.
"""

from __future__ import annotations

import itertools
import logging
import os
import shlex
from pathlib import Path
from typing import Any

from hydra import initialize_config_dir
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from doktra_tune.errors import ConfigError, first_line
from doktra_tune.search.plan import build_plan

log = logging.getLogger(__name__)

MULTIRUN_FLAGS = ("-m", "--multirun")
SWEEP_SYNTAX = "a,b (choice), range(start,stop[,step]) or glob(pattern)"


def is_multirun(argv: list[str]) -> bool:
    """Whether the command line asks for a multirun (`-m` / `--multirun`)."""
    return any(arg in MULTIRUN_FLAGS for arg in argv)


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


def jobs(overrides: list[str], conf_dir: Path) -> list[list[str]]:
    """`expand` against the config directory `conf_dir` (its groups answer `glob()`)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return expand(overrides, GlobalHydra.instance().config_loader())
    finally:
        GlobalHydra.instance().clear()


def sweeps(overrides: list[str]) -> list[str]:
    """The overrides that sweep over several values (empty when none, or when one does not parse:
    composing the config names that one)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return []
    return [str(o.input_line) for o in parsed if o.is_sweep_override()]


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


def shown(path: Path) -> str:
    """`path` relative to the working directory when it lies below it, else absolute; shell-quoted."""
    rel = os.path.relpath(path)
    return shlex.quote(path.as_posix() if rel.startswith("..") else rel)


def analysis_command(run_dirs: list[Path], out: Path) -> str:
    """The command that builds one Table 2 (and every other table) across `run_dirs`."""
    return " ".join(["python -m analysis", *(shown(d) for d in run_dirs), "--out", shown(out)])


class MultirunReport(Callback):
    """In a multirun: a line as each search starts and, at the end, one line per finished search
    (task, run directory) and the `python -m analysis` command for one Table 2 across them.
    Single runs print nothing here."""

    def __init__(self) -> None:
        self.total = 0
        self.searches: list[tuple[str, Path]] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        todo = expand(list(config.hydra.overrides.task), GlobalHydra.instance().config_loader())
        self.total = len(todo)
        listing = "; ".join(f"{i} {label(job)}" for i, job in enumerate(todo, 1))
        log.info(f"[multirun] {self.total} search(es), one after another: {listing}")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            log.info(f"[multirun] search {config.hydra.job.num + 1} of {self.total}: "
                     f"{label(list(config.hydra.overrides.task))}")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or job_return.status != JobStatus.COMPLETED:
            return
        plan = build_plan(job_return.cfg)
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
