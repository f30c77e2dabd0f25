"""`python -m doktra_tune.search task=chemprot preset=cpu [key=value ...]`: the Hydra entry point.

`main` composes the overrides once up front (an unknown task, preset or key is a one-line error,
exit 2, before Ray or torch load), then hands over to Hydra (`--help`, `--cfg job`, the run), whose
job builds the search's one plan (a bad value: one line, exit 2) and runs it. With
`-m` (multirun) every job of the sweep is composed, planned and its data checked before the first
search starts (`doktra_tune.search.multirun`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from doktra_tune.compose import CONF_DIR, compose_config
from doktra_tune.console import console_logging
from doktra_tune.errors import ConfigError, DoktraError
from doktra_tune.search.multirun import is_multirun, job_context, jobs, label, sweeps
from doktra_tune.search.plan import build_plan

_HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                           "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}
# flags with which Hydra shows something and runs nothing
_HYDRA_SHOW_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}


def split_argv(argv: list[str]) -> list[str]:
    """The overrides of a command line (Hydra's flags and their values left out)."""
    overrides: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _HYDRA_FLAGS_WITH_VALUE
        else:
            overrides.append(arg)
    return overrides


def _fail(err: DoktraError) -> None:
    print(f"error: {job_context()}{err}", file=sys.stderr, flush=True)
    sys.exit(err.exit_code)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    """Hydra entry: run the search for the composed config (search.dry_run=true: print its plan only)."""
    if cfg.search.get("dry_run", False) is True:  # no Ray, torch, download or run directory
        from doktra_tune.search.dry_run import print_dry_run

        try:
            print_dry_run(cfg)
        except DoktraError as err:
            _fail(err)
        return
    try:
        plan = build_plan(cfg)  # the one plan of this search: a bad value is one line before Ray or torch load
        # Imported here, not at the top: the driver loads Ray, torch and MLflow (seconds), which
        # `--help`, `--cfg job` and a bad value never need.
        from doktra_tune.search.driver import run_search

        run_search(plan, overrides=list(HydraConfig.get().overrides.task))
    except DoktraError as err:
        _fail(err)
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to resume", file=sys.stderr, flush=True)
        sys.exit(130)


def check_multirun(todo: list[list[str]], runs: bool) -> None:
    """Every job of a multirun composed and planned (and, when it runs, its data checked and its run
    directory its own) before the first search starts: the first problem is one line naming the job."""
    plans = {}
    for num, job in enumerate(todo, 1):
        try:
            cfg = compose_config(job)
            if runs:
                plans[num] = build_plan(cfg)
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
        from doktra_tune.search.preflight import (
            check_data,  # loads torch and Ray, which the searches need next
        )

        for num, plan in running.items():
            try:
                check_data(plan)
            except DoktraError as err:
                raise type(err)(f"multirun search {num} ({label(todo[num - 1])}): {err}") from err


def main(argv: list[str] | None = None) -> None:
    """`python -m doktra_tune.search [overrides]`: check the overrides, then hand over to Hydra."""
    console_logging()  # the search's lines (doktra_tune.*, INFO and up) to stdout, as they are
    argv = list(sys.argv[1:] if argv is None else argv)
    runs = not any(arg in _HYDRA_SHOW_FLAGS for arg in argv)
    if any(arg in ("--help", "-h", "--hydra-help") for arg in argv):  # help shows one config: no sweeps
        swept = set(sweeps(split_argv(argv)))
        argv = [arg for arg in argv if arg not in swept and not is_multirun([arg])]
    try:
        if is_multirun(argv):
            shows = [arg for arg in argv if arg in _HYDRA_SHOW_FLAGS - {"--help", "-h", "--hydra-help"}]
            if shows:
                raise ConfigError(f"{shows[0]} shows one config and -m runs several; drop -m and give one value per key")
            check_multirun(jobs(split_argv(argv), CONF_DIR), runs)
        else:
            swept = sweeps(split_argv(argv))
            if swept:
                raise ConfigError(f"{swept[0]} sweeps over several values; add -m (--multirun) to run one search per value")
            compose_config(split_argv(argv))  # an unknown task, preset or key: one line, before Hydra's own message
    except DoktraError as err:
        _fail(err)
    if any(arg in ("--cfg", "-c") for arg in argv) and "--resolve" not in argv:
        argv.append("--resolve")  # `--cfg job` prints the values the search would use (the task's models, epochs)
    sys.argv = [sys.argv[0], *argv]
    hydra_main()
