"""A trial's part in an ABD grid's shared activation-boundary phase (issue 10, doktra_tune.prefix):
a trunk publishes its checkpoint at each switch epoch; a branch starts from one and replays the
trunk's epochs as its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from doktra_tune.stages.checkpointing import TRAINING_STATE_FILE


@dataclass
class Sharing:
    """How a trial shares an ABD grid's activation-boundary phase: `prefix`, a trunk checkpoint to
    start from (its epochs are reported as this trial's, marked shared); or `publish_epochs`, where
    the trunk copies its checkpoint (training state included) of each switch epoch some gamma of
    the grid needs."""

    prefix: Path | None = None
    publish_epochs: dict[int, Path] = field(default_factory=dict)


def shared_history(prefix: Path) -> list[dict[str, float]]:
    """The per-epoch metrics of the run that wrote trunk checkpoint `prefix`, up to its epoch."""
    training = torch.load(prefix / TRAINING_STATE_FILE, map_location="cpu", weights_only=False)
    return [dict(row) for row in training["history"]]
