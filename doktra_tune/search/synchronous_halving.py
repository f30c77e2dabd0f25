"""Successive halving with synchronous rungs (Jamieson & Talwalkar, 2016) as a Tune scheduler.

`SynchronousHalvingScheduler` is written on Tune's scheduler interface (`FIFOScheduler` /
`TrialScheduler`: `on_trial_add`, `on_trial_result` -> CONTINUE | PAUSE | STOP,
`choose_trial_to_run`, ...). Its rung bookkeeping follows what Ray's `HyperBandScheduler` does with
one bracket per group of trials (ray 2.60: the same pauses, stops and resumes, in the same order),
without Ray's private `_Bracket` and scheduler attributes. A halving has to stop trials other than
the one reporting (those paused at the rung); the scheduler interface has no public call for that,
so the three internal Ray names it needs (`TuneController.stop_trial`, `Trial.status` with its
constants, `Trial.is_saving`) come from `doktra_tune.ray_compat`.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from doktra_tune.ray_compat import is_paused, is_pending, is_running, stop_paused_trial
from doktra_tune.search.optuna_searcher import TIME_ATTR, PrunableOptunaSearch

logger = logging.getLogger(__name__)


class HalvingBracket:
    """One bracket: `max_trials` trials, rungs at `first_rung * eta**k` (the last at `max_t`).

    The same arithmetic as Ray's HyperBand bracket with `stop_last_trials=True` (progress, work,
    rung sizes), so trials are scheduled in the same order."""

    def __init__(self, *, max_trials: int, first_rung: int, max_t: int, eta: int, halvings: int,
                 on_pruned: Callable[[str], None]) -> None:
        self.live: dict[Any, dict | None] = {}  # trial -> its last result (None before the first)
        self.n = max_trials
        self.rung = first_rung  # the time attribute every live trial must reach before a halving
        self.max_t = max_t
        self.eta = eta
        self.halvings = halvings
        self.on_pruned = on_pruned
        self.total_work = self._total_work(max_trials, first_rung, halvings)
        self.progress = 0
        self.is_being_processed = False  # set at the first halving (as Ray's), never reset
        self.to_unpause: set[Any] = set()

    def _total_work(self, n: int, r: int, s: int) -> int:
        work, cumulative_r = 0, r
        for _ in range(s + 1):
            work += int(n) * int(r)
            n = int(math.ceil(n / self.eta))
            r = int(min(r * self.eta, self.max_t - cumulative_r))
        return work

    @staticmethod
    def _time(result: dict | None) -> float:
        return 0 if result is None else result[TIME_ATTR]

    def add_trial(self, trial: Any) -> None:
        self.live[trial] = None

    def filled(self) -> bool:
        return len(self.live) == self.n

    def rung_done(self) -> bool:
        return all(self._time(result) >= self.rung for result in self.live.values())

    def finished(self) -> bool:
        return self.halvings == 0 and self.rung_done()

    def continues(self, trial: Any) -> bool:
        return self._time(self.live[trial]) < self.rung

    def update(self, trial: Any, result: dict) -> None:
        self.progress += self._time(result) - self._time(self.live[trial])
        self.live[trial] = result
        self.to_unpause.discard(trial)

    def remove(self, trial: Any) -> None:
        self.live.pop(trial, None)

    def completion(self) -> float:
        return 1.0 if self.finished() else min(self.progress / self.total_work, 1.0)

    def halve(self, metric: str, sign: float) -> tuple[list, list]:
        """(good, bad): the best ceil(n / eta) live trials go on to the next rung."""
        self.halvings -= 1
        self.n = int(math.ceil(self.n / self.eta))
        self.rung = int(min(self.rung * self.eta, self.max_t))
        ranked = sorted(self.live, key=lambda t: sign * self.live[t][metric])
        good, bad = ranked[-self.n:], ranked[:-self.n]
        for trial in bad:
            self.on_pruned(trial.trial_id)
        return good, bad


class SynchronousHalvingScheduler(FIFOScheduler):
    """Successive halving with synchronous rungs, on Tune's scheduler interface.

    One bracket holds every trial of the stage. Rungs sit at grace_period * reduction_factor**k
    epochs, the last one at max_t. A trial reaching a rung pauses (Tune keeps its checkpoint) until
    every trial has reached it; then the best 1/reduction_factor (by `metric`) resume from their
    checkpoints and the rest stop, recorded as pruned. With `group_key` (the student's e1 grid) each
    group of trials sharing that value is its own bracket of `group_sizes[value]` trials, with its
    own horizon (the value). Unlike the asynchronous pruners (Optuna's SuccessiveHalving, ASHA,
    median), no trial goes on just because it started first, so the first trials of a grid do not
    run to the end: 12 trials x 10 epochs with grace 1 and factor 4 cost 12 + 3 * 3 + 1 * 6 = 27
    epochs (22.5 % of the grid). Trials must resume from a checkpoint (the stages do, with
    `save_training_state`), and the Tuner must not cap concurrency with `max_concurrent_trials`
    (paused trials would hold the cap); resources bound it instead (`pauses_trials`)."""

    pauses_trials = True  # the stage runner leaves max_concurrent_trials unset for this scheduler

    def __init__(
        self, searcher: PrunableOptunaSearch | None, *, num_trials: int, max_t: int, grace_period: int,
        reduction_factor: int, metric: str, mode: str, group_key: str | None = None,
        group_sizes: dict[Any, int] | None = None,
    ):
        if mode not in ("max", "min"):
            raise ValueError(f"{type(self).__name__} needs mode max or min, got {mode!r}")
        super().__init__()
        self.searcher = searcher
        self.num_trials = num_trials
        self.max_t = max_t
        self.grace_period = grace_period
        self.eta = reduction_factor
        self.metric_name = metric
        self.metric_sign = 1.0 if mode == "max" else -1.0  # +1 when larger is better
        self.group_key = group_key
        self.group_sizes = dict(group_sizes or {})
        self.brackets: list[HalvingBracket] = []  # in creation order (Ray's one HyperBand band)
        self.group_brackets: dict[Any, list[HalvingBracket]] = {}
        self.bracket_of: dict[Any, HalvingBracket] = {}
        self._pruned_trials: set[str] = set()

    @property
    def metric(self) -> str:
        """The ranked metric: Tune checks that every result reports it (as for Ray's HyperBand)."""
        return self.metric_name

    @property
    def supports_buffered_results(self) -> bool:
        """No result buffering (as Ray's HyperBand): a halving must see each result on its own."""
        return False

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return not metric and not mode  # metric and mode are set here, not in tune.TuneConfig

    def _halvings(self, max_t: int) -> int:
        halvings, rung = 0, self.grace_period
        while rung < max_t:
            rung *= self.eta
            halvings += 1
        return halvings

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if self.group_key is None:
            group, size, max_t = None, self.num_trials, self.max_t
        else:
            group = (trial.config or {}).get(self.group_key)
            size, max_t = self.group_sizes.get(group, 1), int(group)
        brackets = self.group_brackets.setdefault(group, [])
        if not brackets or brackets[-1].filled():  # more trials than announced: a further bracket
            brackets.append(HalvingBracket(
                max_trials=size, first_rung=min(self.grace_period, max_t), max_t=max_t, eta=self.eta,
                halvings=self._halvings(max_t), on_pruned=self.on_pruned,
            ))
            self.brackets.append(brackets[-1])
        brackets[-1].add_trial(trial)
        self.bracket_of[trial] = brackets[-1]

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        value = result.get(self.metric_name)
        if value is None or not math.isfinite(float(value)):  # no score (e.g. NaN dev F1): ranks last
            result = {**result, self.metric_name: -math.inf * self.metric_sign}
        bracket = self.bracket_of[trial]
        bracket.update(trial, result)
        if bracket.continues(trial):
            return TrialScheduler.CONTINUE
        return self._process_bracket(tune_controller, bracket)

    def _process_bracket(self, tune_controller: Any, bracket: HalvingBracket) -> str:
        """PAUSE the reporting trial until its rung is done; then halve: stop the bad trials, let
        the good ones go on (the running one at once, the paused ones when chosen to run)."""
        action = TrialScheduler.PAUSE
        if not bracket.rung_done():
            return action
        if bracket.finished():
            for trial in list(bracket.live):
                if is_paused(trial, saving=False):
                    stop_paused_trial(tune_controller, trial)
            return TrialScheduler.STOP
        bracket.is_being_processed = True
        good, bad = bracket.halve(self.metric_name, self.metric_sign)
        for trial in bad:
            if is_paused(trial):
                stop_paused_trial(tune_controller, trial)
            elif is_running(trial):
                bracket.remove(trial)
                action = TrialScheduler.STOP
            else:
                raise RuntimeError(f"trial {trial} at a rung is neither paused nor running")
        for trial in good:
            if bracket.continues(trial):
                if is_paused(trial):
                    bracket.to_unpause.add(trial)
                elif is_running(trial):
                    action = TrialScheduler.CONTINUE
            elif bracket.finished():
                if is_paused(trial):
                    stop_paused_trial(tune_controller, trial)
                elif is_running(trial):
                    bracket.remove(trial)
                    action = TrialScheduler.STOP
        return action

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        bracket = self.bracket_of[trial]
        bracket.remove(trial)
        if not bracket.finished() and not bracket.is_being_processed:
            self._process_bracket(tune_controller, bracket)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """A pending trial, or a paused one a halving promoted; the least complete bracket first."""
        for bracket in sorted(self.brackets, key=lambda b: b.completion()):
            for trial in bracket.live:
                if is_pending(trial) or (is_paused(trial, saving=False) and trial in bracket.to_unpause):
                    return trial
        return None

    def on_pruned(self, trial_id: str) -> None:
        self._pruned_trials.add(trial_id)
        if self.searcher is not None:
            self.searcher.mark_pruned(trial_id)

    @property
    def pruned_trials(self) -> set[str]:
        return set(self._pruned_trials)

    def debug_string(self) -> str:
        return f"Synchronous successive halving: {len(self._pruned_trials)} pruned"
