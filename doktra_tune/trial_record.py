"""One finished trial as plain data: what a stage's Tune experiment left behind for one run
(`doktra_tune.search.trials.collect_trials` builds them; the winner rule, the winner files and the
final summary read them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrialRecord:
    """One trial as the stage saw it. Its model is the checkpoint Tune kept: the last epoch's
    (search.handoff=final_epoch, the authors' protocol) or the best dev-F1 epoch's (best_epoch);
    `kept_epoch` / `kept_metrics` are that epoch and its metrics."""

    trial_id: str
    status: str  # completed | pruned | errored
    params: dict[str, Any]
    epochs_run: int
    kept_epoch: int
    kept_metrics: dict[str, Any]
    last_metrics: dict[str, Any]
    checkpoint: str | None  # the kept checkpoint
    node_id: str = ""
    node_ip: str = ""  # the host the trial's last epoch ran on
    gpu_ids: list[str] = field(default_factory=list)  # the GPU ids Ray gave it there (none on CPUs)
    error: str = ""
    curve: dict[int, float] = field(default_factory=dict)  # epoch -> search_score (what the pruner saw)
    shared_epochs: int = 0  # of epochs_run, those taken from an ABD trunk (trained once for the grid)

    def row(self) -> dict[str, Any]:
        """The row `doktra_tune.selection.select_winner` ranks: the trial at its kept epoch."""
        return {
            "trial_id": self.trial_id, "status": self.status, "epoch": self.kept_epoch,
            "dev_f1": self.kept_metrics.get("dev_f1", float("nan")),
            "dev_ece": self.kept_metrics.get("dev_ece", float("nan")),
        }

    def summary(self) -> dict[str, Any]:
        """The trial's line in winner.json."""
        return {"trial_id": self.trial_id, "status": self.status, "params": self.params,
                "epochs_run": self.epochs_run, "shared_epochs": self.shared_epochs, "epoch": self.kept_epoch,
                "dev_f1": self.kept_metrics.get("dev_f1"), "dev_ece": self.kept_metrics.get("dev_ece"),
                "node_id": self.node_id, "node_ip": self.node_ip, "gpu_ids": self.gpu_ids, "error": self.error}
