"""Every private Ray / Optuna name this project relies on, in one place.

Ray Tune's `OptunaSearch` builds its study with a hard-coded `NopPruner` and keeps the study and
its trials in private attributes; Ray's synchronous HyperBand has no public way to run one bracket
that holds every trial; a restored `Tuner` does not expose its scheduler; `ray.address=auto` needs
Ray's own lookup of the local cluster. The classes and functions below wrap exactly those private
names, so the rest of the code (doktra_tune.search.pruning, the driver) uses public names only.

`missing_internals()` lists what a Ray or Optuna release no longer has; `tests/test_ray_compat.py`
fails with that list, and `pyproject.toml` pins the range the code is tested with.
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from ray.tune import Tuner
from ray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler, TrialScheduler
from ray.tune.schedulers.hyperband import _Bracket
from ray.tune.search.optuna import OptunaSearch

# (object, attribute) pairs read or overridden below; instances are built by missing_internals().
_CLASS_ATTRIBUTES: tuple[tuple[type, str], ...] = (
    (OptunaSearch, "_setup_study"),
    (_Bracket, "successive_halving"),
    (_Bracket, "filled"),
    (_Bracket, "add_trial"),
)
_OPTUNA_SEARCH_ATTRIBUTES = ("_ot_study", "_ot_trials", "_completed_trials")
_HYPERBAND_ATTRIBUTES = (
    "_hyperbands", "_trial_info", "_eta", "_time_attr", "_max_t_attr", "_metric", "_metric_op",
)
_ASHA_ATTRIBUTES = ("_time_attr", "_max_t")


class OptunaSearchWithPruner(OptunaSearch):
    """Ray's `OptunaSearch` whose study uses `pruner` (Ray hard-codes `NopPruner` in `_setup_study`),
    with public accessors for the study, its trials and Ray's completed-trial bookkeeping."""

    def __init__(self, *args: Any, pruner: optuna.pruners.BasePruner | None = None, **kwargs: Any):
        self._pruner = pruner or optuna.pruners.NopPruner()
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode: str | list) -> None:
        super()._setup_study(mode)
        # `trial.should_prune()` reads `study.pruner`.
        self._ot_study.pruner = self._pruner

    @property
    def study(self) -> optuna.Study:
        """The Optuna study (trial states, intermediate values) behind this searcher."""
        return self._ot_study

    def optuna_trial(self, trial_id: str) -> optuna.Trial | None:
        """The Optuna trial Ray asked for Tune trial `trial_id` (None before it is suggested)."""
        return self._ot_trials.get(trial_id)

    def is_completed(self, trial_id: str) -> bool:
        """Whether Ray already told Optuna how `trial_id` ended."""
        return trial_id in self._completed_trials

    def tell_pruned(self, trial_id: str) -> None:
        """End `trial_id` in the study as PRUNED (Ray would say COMPLETE or FAIL)."""
        self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)


class ASHAWithAccessors(AsyncHyperBandScheduler):
    """Tune's ASHA with public names for its time attribute and horizon."""

    @property
    def time_attr(self) -> str:
        return self._time_attr

    @property
    def max_t(self) -> float:
        return self._max_t


class _BracketWithCallback(_Bracket):
    """Ray's HyperBand bracket that tells `on_pruned` which trials each halving drops."""

    def __init__(self, *args: Any, on_pruned: Callable[[str], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_pruned = on_pruned

    def successive_halving(self, metric: str, metric_op: float) -> tuple[list, list]:
        good, bad = super().successive_halving(metric, metric_op)
        for trial in bad:
            self._on_pruned(trial.trial_id)
        return good, bad


class OneBracketHyperBand(HyperBandScheduler):
    """Ray's synchronous HyperBand restricted to one bracket of `num_trials` trials: successive
    halving with rungs at grace_period * reduction_factor**k (the last at max_t). Trials reaching a
    rung pause until every trial of the bracket has reached it. `on_pruned(trial_id)` is called for
    each trial a halving drops.

    With `group_key`, each value of that config key gets its own bracket of `group_sizes[value]`
    trials and horizon `value` (the student's e1 grid: trials of different schedule lengths are
    never ranked against each other)."""

    def __init__(
        self, *, num_trials: int, max_t: int, grace_period: int, reduction_factor: int, metric: str,
        mode: str, time_attr: str, group_key: str | None = None, group_sizes: dict[Any, int] | None = None,
    ):
        super().__init__(
            time_attr=time_attr, metric=metric, mode=mode, max_t=max_t,
            reduction_factor=reduction_factor, stop_last_trials=True,
        )
        self._num_trials = num_trials
        self._grace_period = grace_period
        self._group_key = group_key
        self._group_sizes = dict(group_sizes or {})
        self._group_brackets: dict[Any, list[_Bracket]] = {}
        self._hyperbands = [[]]

    @property
    def metric_name(self) -> str | None:
        return self._metric

    @property
    def metric_sign(self) -> float | None:
        """+1 when larger is better, -1 when smaller is better (None before the mode is set)."""
        return self._metric_op

    def on_pruned(self, trial_id: str) -> None:
        """Called for every trial a halving drops; subclasses record it."""

    def _halvings(self, max_t: int) -> int:
        halvings, rung = 0, self._grace_period
        while rung < max_t:
            rung *= self._eta
            halvings += 1
        return halvings

    def _new_bracket(self, max_trials: int, max_t: int) -> _Bracket:
        return _BracketWithCallback(
            time_attr=self._time_attr, max_trials=max_trials, init_t_attr=min(self._grace_period, max_t),
            max_t_attr=max_t, eta=self._eta, s=self._halvings(max_t), stop_last_trials=True,
            on_pruned=self.on_pruned,
        )

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if not self._metric or not self._metric_op:
            raise ValueError(f"{type(self).__name__} needs metric and mode")
        if self._group_key is None:
            group, size, max_t = None, self._num_trials, self._max_t_attr
        else:
            group = (trial.config or {}).get(self._group_key)
            size, max_t = self._group_sizes.get(group, 1), int(group)
        brackets = self._group_brackets.setdefault(group, [])
        if not brackets or brackets[-1].filled():
            brackets.append(self._new_bracket(size, max_t))  # more trials than announced: a further bracket
            self._hyperbands[0].append(brackets[-1])
        brackets[-1].add_trial(trial)
        self._trial_info[trial] = brackets[-1], 0


def tuner_scheduler(tuner: Tuner) -> TrialScheduler | None:
    """The scheduler a (restored) Tuner runs with: after `Tuner.restore(...)` it is the one
    unpickled from the experiment (no public accessor in ray 2.60)."""
    local = getattr(tuner, "_local_tuner", None)
    config = getattr(local, "_tune_config", None)
    return getattr(config, "scheduler", None)


def local_cluster_addresses() -> list[str]:
    """GCS addresses of the Ray clusters running on this machine (what `ray.address=auto` finds)."""
    from ray._private.services import find_gcs_addresses  # private: no public lookup in ray 2.60

    return list(find_gcs_addresses())


def enable_token_auth_as_auto_does() -> None:
    """What `ray.init(address="auto")` does before connecting (ray 2.60): turn on token
    authentication when RAY_AUTH_MODE is unset and a token exists (`ray start` enables it by
    default). The search resolves `auto` itself (to connect where the preflight probed) and so
    passes Ray an explicit address, for which Ray skips this step."""
    from ray._private.authentication import authentication_token_setup  # private: no public switch in ray 2.60

    authentication_token_setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def missing_internals() -> list[str]:
    """The private names above that the installed Ray / Optuna lack (empty when all are there)."""
    missing = [f"{cls.__module__}.{cls.__name__}.{name}" for cls, name in _CLASS_ATTRIBUTES
               if not hasattr(cls, name)]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        search = OptunaSearch(
            space={"x": optuna.distributions.CategoricalDistribution([0, 1])}, metric="m", mode="max"
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    missing += [f"OptunaSearch().{name}" for name in _OPTUNA_SEARCH_ATTRIBUTES if not hasattr(search, name)]
    hyperband = HyperBandScheduler(metric="m", mode="max", max_t=4)
    missing += [f"HyperBandScheduler().{name}" for name in _HYPERBAND_ATTRIBUTES if not hasattr(hyperband, name)]
    asha = AsyncHyperBandScheduler(metric="m", mode="max", max_t=4)
    missing += [f"AsyncHyperBandScheduler().{name}" for name in _ASHA_ATTRIBUTES if not hasattr(asha, name)]
    tuner = Tuner(lambda config: None)
    local = getattr(tuner, "_local_tuner", None)
    if not hasattr(local, "_tune_config"):
        missing.append("Tuner()._local_tuner._tune_config")
    try:
        import ray._private.services as services  # private: the name local_cluster_addresses uses
    except ImportError:
        services = None
    if not hasattr(services, "find_gcs_addresses"):
        missing.append("ray._private.services.find_gcs_addresses")
    try:
        from ray._private.authentication import authentication_token_setup  # private: see above
    except ImportError:
        authentication_token_setup = None
    if not hasattr(authentication_token_setup, "maybe_enable_token_auth_if_token_available"):
        missing.append("ray._private.authentication.authentication_token_setup.maybe_enable_token_auth_if_token_available")
    return missing
