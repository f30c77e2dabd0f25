"""Ray worker setup hook (`cluster.ray_session.WORKER_SETUP_HOOK`)."""

from __future__ import annotations

import importlib


def preload() -> None:
    """Import the heavy modules (torch, transformers' BERT/ALBERT/RoBERTa, the stages,
    matplotlib) when a worker process starts, not when a trial starts."""
    for name in ("doktra_tune.stages", "doktra_tune.tracking.datasets", "analysis.plots",
                 "transformers.models.bert.modeling_bert", "transformers.models.albert.modeling_albert",
                 "transformers.models.roberta.modeling_roberta"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional module only costs time later
            pass
