"""The shared activation-boundary prefix of an ABD grid (Algorithm 1 lines 3-10; issue 10).

Before its switch epoch int(gamma * e2) a trial trains on Eq. 5 alone: beta2 plays no part and gamma
only decides when the phase ends. Every grid point with the same other hyperparameters (lr2, and
whatever else is searched), seed, teacher, student and data therefore follows one trajectory until
its own switch. A *trunk* runs that phase once — up to the grid's latest switch, on the schedule of
all e2 epochs — and publishes its checkpoint, training state included, at every switch epoch some
gamma needs; each grid point (a *branch*) resumes from its trunk at its own switch and refines.
`stages.checkpointing.resume` admits exactly that resume (beta and gamma differ, no epoch after
either switch), so a branch equals the point run on its own, epoch for epoch. Torch-free: the
search's budget counts trunks and branches with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from doktra_tune.search_space import grid_points
from doktra_tune.switch import PREFIX_FREE_FIELDS, switch_epoch


@dataclass(frozen=True)
class SharedPrefix:
    """Where an ABD grid's trunks live and what each publishes."""

    root: str  # one directory per trunk under it
    keys: tuple[str, ...]  # the searched hyperparameters trunks differ in (all but beta and gamma)
    gammas: tuple[float, ...]  # the grid's gammas: a trunk publishes each one's switch epoch

    @classmethod
    def for_grid(
        cls, params: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any], base: Mapping[str, Any], root: Path,
    ) -> SharedPrefix | None:
        """The prefix of a grid (`params`: the searched values; `fixed` / `base`: the rest), or None
        when no grid point has an activation-boundary phase to share (every switch at epoch 0)."""
        gammas = tuple(float(g) for g in (params.get("gamma") or [fixed.get("gamma", base["gamma"])]))
        epochs = params.get("epochs") or [fixed.get("epochs", base["epochs"])]
        if not any(switch_epoch(int(e), g) for e in epochs for g in gammas):
            return None
        return cls(str(root), tuple(sorted(k for k in params if k not in PREFIX_FREE_FIELDS)), gammas)

    def switches(self, epochs: int) -> list[int]:
        """The switch epochs (> 0) of a trunk on an `epochs`-epoch schedule: what it publishes."""
        return sorted({switch_epoch(int(epochs), g) for g in self.gammas} - {0})

    def name(self, config: Mapping[str, Any]) -> str:
        """The trunk of a grid point: its values of `keys` (e.g. `lr=1e-05`)."""
        return ",".join(f"{k}={config[k]!r}" for k in self.keys) or "all"

    def directory(self, config: Mapping[str, Any]) -> Path:
        return Path(self.root) / self.name(config)

    def start(self, config: Mapping[str, Any]) -> Path | None:
        """The trunk checkpoint a grid point (a merged config) starts from, None to start afresh."""
        switch = switch_epoch(int(config["epochs"]), float(config["gamma"]))
        return self.directory(config) / f"epoch_{switch}" if switch > 0 else None

    def published(self, config: Mapping[str, Any]) -> bool:
        """Whether the trunk of `config` has published every epoch (a rerun never recomputes it)."""
        from doktra_tune.stages.checkpointing import TRAINING_STATE_FILE  # torch: only where trunks run

        return all((self.directory(config) / f"epoch_{k}" / TRAINING_STATE_FILE).is_file()
                   for k in self.switches(int(config["epochs"])))

    def trunk_points(self, params: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
        """One point per trunk: each combination of the grid's values of `keys`."""
        return grid_points({k: params[k] for k in self.keys})

    def trunk_config(self, point: Mapping[str, Any], epochs: int) -> dict[str, Any]:
        """The overrides that make the trunk of `point` on an `epochs`-epoch schedule: the grid's
        largest gamma, stopped at its switch (beta is never used before it), saving the training
        state each branch resumes from."""
        return {**point, "gamma": max(self.gammas), "beta": 0.0, "stop_after_epoch": max(self.switches(epochs)),
                "save_training_state": True}
