"""`python -m doktra_tune.search task=chemprot preset=cpu [key=value ...]`: the Hydra entry point.

`hydra_main` is the `@hydra.main` task: it builds the search's one plan (a bad value: one line, exit 2,
before Ray or torch load) and runs it. `main` runs Hydra with its errors raised (HYDRA_FULL_ERROR=1),
so that what Hydra rejects itself (an unknown task, preset or key, a sweep without -m, `--cfg` with
-m) is one line and exit 2 as well. With `-m` (multirun) every job of the sweep is composed, planned
and its data checked before the first search starts (`doktra_tune.search.multirun.MultirunReport`, a
Hydra callback).
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig

from doktra_tune.compose import CONF_DIR, composition_error
from doktra_tune.console import console_logging
from doktra_tune.errors import ConfigError, DoktraError
from doktra_tune.plan.search_plan import build_plan
from doktra_tune.search.multirun import fail

HYDRA_COMMANDS_CLASH = "Only one of --run, --multirun, --cfg"  # Hydra's ValueError for `-m --cfg job`
SHOW_FLAGS = ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")  # Hydra's: show, run nothing


def one_line_errors(task: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
    """A Hydra task whose `DoktraError` is one line on stderr (naming the multirun job) and its exit code;
    Ctrl-C says how to resume."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> None:
        try:
            task(cfg)
        except DoktraError as err:
            fail(err)
        except KeyboardInterrupt:
            print("error: interrupted; re-run the same command to resume", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapped


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
@one_line_errors
def hydra_main(cfg: DictConfig) -> None:
    """Run the search for the composed config (search.dry_run=true: print its plan only)."""
    if cfg.search.get("dry_run", False) is True:  # no Ray, torch, download or run directory
        from doktra_tune.plan.dry_run import print_dry_run

        print_dry_run(cfg)
        return
    plan = build_plan(cfg)  # the one plan of this search: a bad value is one line before Ray or torch load
    # Imported here, not at the top: the driver loads Ray, torch and MLflow (seconds), which
    # `--help`, `--cfg job` and a bad value never need.
    from doktra_tune.search.driver import run_search

    run_search(plan, overrides=list(HydraConfig.get().overrides.task))


def main() -> None:
    """`python -m doktra_tune.search [overrides]`: Hydra, with its own errors as one line and exit 2."""
    console_logging()  # the search's lines (doktra_tune.*, INFO and up) to stdout, as they are
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them
    try:
        hydra_main()
    except HydraException as err:
        fail(composition_error(err, [arg for arg in sys.argv[1:] if not arg.startswith("-")]))
    except ValueError as err:
        if not str(err).startswith(HYDRA_COMMANDS_CLASH):
            raise
        shows = next((arg for arg in sys.argv[1:] if arg in SHOW_FLAGS), "--cfg")
        fail(ConfigError(f"{shows} shows one config and -m runs several; drop -m and give one value per key"))
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
