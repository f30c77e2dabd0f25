"""The search side of doktra-tune: `python -m doktra_tune.search task=chemprot preset=cpu`.

Data flow (docs/DESIGN.md has the picture):

    cli (compose) -> plan (schema: typed config, grids, search id) -> preflight (data, models,
    Ray, MLflow, run dir) -> driver (one RaySession; per stage a StageRunner: one Tuner, resumed
    after a crash) -> trainables -> method core -> Tune reports + MLflow -> winners -> final runs

| module | job |
|---|---|
| `cli` | the `@hydra.main` entry point; Hydra's and the search's errors as one line, exit 2 |
| `multirun` | Hydra sweeps (`-m`): a Hydra callback that checks every job up front and reports each search |
| `search_algorithms`, `optuna_searcher` | one stage's searcher + scheduler; the Optuna study as a Tune searcher |
| `pruning`, `synchronous_halving` | the pruners inside Tune (imported only when `search.pruner` is not `none`) |
| `stage_runner`, `trials` | one stage = one Tuner: fit, resume, collect `TrialRecord`s |
| `beside` | a stage's Tuner run in a thread beside the current one (`final.beside_abd`) |
| `specs`, `dependent_runs` | a stage's Tune param space and trainable; runs that start when their inputs exist |
| `winners`, `outcome` | winner selection and files; the tables and the MLflow outcome |
| `progress`, `trial_tracking` | the progress lines; the trials' MLflow runs (the driver is the only writer) |
| `driver` | `SearchDriver` and `run_search` |

The plan it runs is data built without Ray (`doktra_tune.plan`); where it runs (Ray session,
nodes, run-directory lease) is `doktra_tune.cluster`.
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
