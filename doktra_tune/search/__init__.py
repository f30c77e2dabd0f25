"""The search side of doktra-tune: `python -m doktra_tune.search task=chemprot preset=cpu`.

Data flow (docs/DESIGN.md has the picture):

    cli (compose) -> plan (schema: typed config, grids, search id) -> preflight (data, models,
    Ray, MLflow, run dir) -> driver (one RaySession; per stage a StageRunner: one Tuner, resumed
    after a crash) -> trainables -> method core -> Tune reports + MLflow -> winners -> final runs

| module | job |
|---|---|
| `cli` | the `@hydra.main` entry point; Hydra's and the search's errors as one line, exit 2 |
| `multirun` | Hydra sweeps (`-m`): a Hydra callback that checks every job up front and reports each search |
| `schema` | the typed configuration (`SearchConfig`) and its value checks |
| `plan` | `build_plan`: grids, data config, search id, run directory |
| `budget`, `estimate`, `dry_run` | what a plan trains (trials, epoch-units), its GPU-hours, `search.dry_run` |
| `preflight` | the I/O checks before anything is written |
| `ray_session` | Ray settings, connect once / shut down once, per-trial resources |
| `search_algorithms`, `optuna_searcher` | one stage's searcher + scheduler; the Optuna study as a Tune searcher |
| `pruning`, `synchronous_halving` | the pruners inside Tune (imported only when `search.pruner` is not `none`) |
| `stage_runner`, `trials` | one stage = one Tuner: fit, resume, collect `TrialRecord`s |
| `winners`, `final` | winner selection and files; the final runs' specs and summary |
| `progress` | the progress lines (logged to `doktra_tune.*`; doktra_tune.console prints them) |
| `driver` | `SearchDriver` and `run_search` |
"""

from __future__ import annotations

from typing import Any

from doktra_tune.compose import compose_config
from doktra_tune.search.cli import main

__all__ = ["compose_config", "main", "run_search"]


def __getattr__(name: str) -> Any:
    # `run_search` is loaded on first use: the driver imports Ray, torch and MLflow (seconds), which
    # the CLI's `--help` and its config errors must not wait for.
    if name == "run_search":
        from doktra_tune.search.driver import run_search

        return run_search
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
