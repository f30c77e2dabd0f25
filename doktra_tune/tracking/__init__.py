"""MLflow tracking of a search (docs/DESIGN.md "Tracking contract"): the run tree
(`runs`: SearchTracker on the driver, the only writer), the client that never stalls training
(`client`: bounded waits, `outbox`: writes kept on disk while the server is away), the dataset
inputs the trials describe as plain values (`datasets`) and the tracking URIs (`uris`).

The names below are loaded on first use (PEP 562), so a module that takes one submodule — a trial
process its `datasets`, `python -m analysis` its `uris` — does not import MLflow for the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "TrackingClient": "client",
    "OUTBOX_DIR": "outbox", "Outbox": "outbox", "RunKey": "outbox",
    "LEVEL": "runs", "OUTCOME_TO_RUN_STATUS": "runs", "SEARCH_ID": "runs", "STAGE": "runs", "STATUS": "runs",
    "TASK": "runs", "TRIAL_ID": "runs", "SearchTracker": "runs", "TrialLogger": "runs", "flatten": "runs",
    "trial_run": "runs",
    "dataset_input": "datasets",
    "SERVER_FIX": "uris", "check_tracking_uri": "uris", "default_tracking_uri": "uris",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value
