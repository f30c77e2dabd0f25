"""Every private or internal Ray name this project still relies on, in one place (Optuna: none).

Imported only where needed, inside functions or by modules that are themselves imported lazily:
a search with `search.pruner=none` and a local Ray (`ray.address` unset, the default) never loads
this module (`tests/integration/test_lazy_pruning.py`). Five names are left (ray 2.60), each because no public
API does the job:

1. `ray._private.services.find_gcs_addresses` (`local_cluster_addresses`): the GCS addresses of
   the Ray clusters running on this machine, which `ray.address=auto` means. The preflight needs
   the address before `ray.init` (to probe it within a timeout) and the session connects to exactly
   that address; Ray's public `ray.init(address="auto")` does the lookup only inside itself.
2. `ray._private.authentication.authentication_token_setup.maybe_enable_token_auth_if_token_available`
   (`enable_token_auth_as_auto_does`): what `ray.init(address="auto")` does before it connects
   (turn on token authentication when a token exists; `ray start` clusters use it by default).
   The session passes Ray the explicit address found in 1., for which Ray skips that step.
3. `TuneController.stop_trial` (`stop_paused_trial`; `ray.tune.execution`, handed to every
   scheduler call): synchronous halving stops the trials paused at a rung when the rung's last
   trial reports. `TrialScheduler.on_trial_result` can only decide for the reporting trial;
   Ray's own HyperBand (and BOHB, built on it) calls this method for the others.
4. `Trial.status` with `Trial.PENDING` / `RUNNING` / `PAUSED` (`is_pending`, `is_running`,
   `is_paused`; `ray.tune.experiment.Trial`, a DeveloperAPI): which trials a halving may stop or
   resume, and which one `choose_trial_to_run` picks. Ray's public `FIFOScheduler` reads the same.
5. `Trial.is_saving` (`is_paused`): a trial Tune is still checkpointing on its way to PAUSED
   counts as paused, as in Ray's HyperBand.

Gone with the rewrite of the pruning bridge on public APIs (issue 17, item 4): `OptunaSearch._setup_study`,
`._ot_study`, `._ot_trials`, `._completed_trials` (now an own `Searcher` on Optuna's ask/tell:
`doktra_tune.search.optuna_searcher`); `ray.tune.schedulers.hyperband._Bracket` and its
`successive_halving` / `filled` / `add_trial`, `HyperBandScheduler._hyperbands`, `._trial_info`,
`._eta`, `._time_attr`, `._max_t_attr`, `._metric`, `._metric_op` (now an own bracket on the public
scheduler interface: `doktra_tune.search.synchronous_halving`); `AsyncHyperBandScheduler._time_attr`,
`._max_t` (kept by `RecordingASHAScheduler` itself); `Tuner._local_tuner._tune_config` (the
pruned set after a restore is read from the searcher state Tune saves with the experiment);
`GridSampler._search_space`, `._all_grids` (grid points are enqueued in order instead).

`missing_internals()` lists what an installed Ray no longer has; `tests/unit/test_ray_compat.py` fails
with that list, and `pyproject.toml` pins the range the code is tested with.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial


def local_cluster_addresses() -> list[str]:
    """GCS addresses of the Ray clusters running on this machine (what `ray.address=auto` finds)."""
    from ray._private.services import find_gcs_addresses  # private 1: no public lookup in ray 2.60

    return list(find_gcs_addresses())


def enable_token_auth_as_auto_does() -> None:
    """What `ray.init(address="auto")` does before connecting (ray 2.60): turn on token
    authentication when RAY_AUTH_MODE is unset and a token exists (`ray start` enables it by
    default). The search resolves `auto` itself (to connect where the preflight probed) and so
    passes Ray an explicit address, for which Ray skips this step."""
    from ray._private.authentication import authentication_token_setup  # private 2: no public switch

    authentication_token_setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def stop_paused_trial(tune_controller: Any, trial: Any) -> None:
    """Stop `trial`, which is not the one reporting (a scheduler decides for that one by its
    return value): the call Ray's HyperBand makes (internal 3)."""
    tune_controller.stop_trial(trial)


def is_pending(trial: Any) -> bool:
    return trial.status == Trial.PENDING  # internal 4


def is_running(trial: Any) -> bool:
    return trial.status == Trial.RUNNING  # internal 4


def is_paused(trial: Any, saving: bool = True) -> bool:
    """PAUSED, or (with `saving`) still saving its checkpoint on the way there (internals 4, 5)."""
    return trial.status == Trial.PAUSED or (saving and bool(trial.is_saving))


def missing_internals() -> list[str]:
    """The names above that the installed Ray lacks (empty when all are there)."""
    from ray.tune.execution.tune_controller import TuneController  # internal module: what schedulers get

    missing = [] if callable(getattr(TuneController, "stop_trial", None)) else ["TuneController.stop_trial"]
    # Trial.status is set in Trial.__init__ (an instance attribute); Ray's FIFOScheduler reads it too
    missing += [f"Trial.{name}" for name in ("PENDING", "RUNNING", "PAUSED", "is_saving") if not hasattr(Trial, name)]
    try:
        import ray._private.services as services  # private 1
    except ImportError:
        services = None
    if not hasattr(services, "find_gcs_addresses"):
        missing.append("ray._private.services.find_gcs_addresses")
    try:
        from ray._private.authentication import authentication_token_setup  # private 2
    except ImportError:
        authentication_token_setup = None
    if not hasattr(authentication_token_setup, "maybe_enable_token_auth_if_token_available"):
        missing.append(
            "ray._private.authentication.authentication_token_setup.maybe_enable_token_auth_if_token_available"
        )
    return missing
