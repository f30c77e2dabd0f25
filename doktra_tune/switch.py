"""Algorithm 1 line 3: where an ABD run switches from the activation-boundary loss (Eq. 5) to the
calibrated refinement (CE − β₂·H(p)), and which hyperparameters act only from that switch on.

Torch-free, so the stage loop, the shared ABD prefix and the search's budget read one rule.
"""

from __future__ import annotations

# ABD fields that act only from the switch epoch on: before it, beta2 plays no part and gamma only
# decides when the phase ends (`doktra_tune.prefix.SharedPrefix`, `stages.checkpointing.resume`).
PREFIX_FREE_FIELDS: tuple[str, ...] = ("beta", "gamma")


def switch_epoch(epochs: int, gamma: float) -> int:
    """Alg. 1 line 3 as the authors' code: epoch_switch = int(epochs * gamma)."""
    return int(epochs * gamma)
