"""A stage's Tuner run in a thread beside the driver's current stage (`final.beside_abd`: the final
teacher and student runs while ABD searches). Ray Tune runs a Tuner from a thread other than the
main one (it then installs no signal handler); the two Tuners share the cluster's slots, and the
tracking client serialises their MLflow writes (`tracking.client.serialized`)."""

from __future__ import annotations

import threading
from typing import Callable

from doktra_tune.trial_record import TrialRecord


class BesideStage:
    """Runs `run(cancel)` in a thread at once; `join` waits for its trials (re-raising its error),
    `cancel` stops it (its unfinished trials run again when the search is resumed). `join` first
    calls `on_other_end` (the work it ran beside has ended: e.g. give it the slots it left)."""

    def __init__(self, name: str, run: Callable[[threading.Event], list[TrialRecord]],
                 on_other_end: Callable[[], None] | None = None) -> None:
        self.on_other_end = on_other_end
        self.cancel_event = threading.Event()
        self.records: list[TrialRecord] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(run,), name=name, daemon=True)
        self.thread.start()

    def _run(self, run: Callable[[threading.Event], list[TrialRecord]]) -> None:
        try:
            self.records = run(self.cancel_event)
        except BaseException as err:  # noqa: BLE001 - re-raised in the driver's thread by join()
            self.error = err

    def join(self) -> list[TrialRecord]:
        if self.on_other_end is not None:
            self.on_other_end()
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.records

    def cancel(self) -> None:
        """Stop the Tuner if it still runs (the search failed or was interrupted) and wait for it."""
        if self.thread.is_alive():
            self.cancel_event.set()
            self.thread.join()
