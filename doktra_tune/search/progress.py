"""What the search prints while it runs: one line per trial result and trial end, stage summaries,
disk usage; logged to the `doktra_tune` logger (doktra_tune.console)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import TrialScheduler

from doktra_tune.cluster.disk import disk_line

log = logging.getLogger(__name__)


class StageProgress(Callback):
    """One concise line per trial result/end: stage, trial counts, best dev F1 so far."""

    def __init__(self, stage: str, scheduler: TrialScheduler | None = None) -> None:
        self.stage = stage
        self.scheduler = scheduler
        self.best: tuple[float, str] | None = None

    def _counts(self, trials: list, ending: Any = None, ending_status: str = "TERMINATED") -> str:
        # Tune calls on_trial_complete/on_trial_error before it updates the ending trial's status.
        pruned = set(getattr(self.scheduler, "pruned_trials", ()))  # a pruner's scheduler keeps them; FIFO has none
        status = {t.trial_id: t.status for t in trials}
        if ending is not None:
            status[ending.trial_id] = ending_status
        done = sum(1 for t, s in status.items() if s == "TERMINATED" and t not in pruned)
        err = sum(1 for s in status.values() if s == "ERROR")
        run = sum(1 for s in status.values() if s == "RUNNING")
        paused = sum(1 for s in status.values() if s == "PAUSED")  # synchronous halving's rungs
        best = f"best dev_f1={self.best[0]:.4f} ({self.best[1]})" if self.best else "best -"
        waiting = f" paused {paused}" if paused else ""
        return f"done {done} pruned {len(pruned)} errored {err} running {run}{waiting} | {best}"

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        f1 = result.get("dev_f1")
        if isinstance(f1, (int, float)) and math.isfinite(f1) and (self.best is None or f1 > self.best[0]):
            self.best = (float(f1), trial.trial_id)
        ece = result.get("dev_ece", float("nan"))
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        log.info(
            f"[{self.stage}] trial {trial.trial_id} epoch {epoch}: dev_f1={f1 if f1 is None else round(f1, 4)} "
            f"dev_ece={ece:.4f} | {self._counts(trials)}"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.info(f"[{self.stage}] trial {trial.trial_id} ended | {self._counts(trials, trial)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.info(f"[{self.stage}] trial {trial.trial_id} ERRORED | {self._counts(trials, trial, 'ERROR')}")


def fmt_mean_std(stat: dict[str, float] | None) -> str:
    """`62.22 ± 1.95` (x100) of a {"mean", "std"} summary; `-` when missing."""
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{100 * stat['mean']:.2f} ± {100 * (stat.get('std') or 0.0):.2f}"


def stage_end_line(stage: str, seconds: float, info: dict[str, Any], run_dir: Path) -> str:
    m = info.get("metrics") or {}
    shared = info.get("shared_prefix")
    sharing = (f" (the shared trunks' {shared['trunk_epochs']} included, {shared['shared_epochs']} trunk epochs "
               "reused by the trials)") if shared else ""
    return (
        f"[{stage}] end in {seconds:.0f}s: winner {info['trial_id']} {info['params']} "
        f"epoch {info['epoch']} ({info.get('handoff', 'last')}) dev_f1={m.get('dev_f1')} dev_ece={m.get('dev_ece')} | "
        f"{info['epochs_spent']} epochs spent{sharing} | {disk_line(run_dir)}"
    )
