"""The I/O checks of a plan, before anything is written: data files, models (fetched from the hub
once, here), Ray address, MLflow URI, run directory. Each failure is a one-line
`ConfigError`/`DataError` naming the fix."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

from doktra_tune.data import MissingDataError, gad_fold_format, load_split
from doktra_tune.errors import ConfigError, DataError
from doktra_tune.models import fetch_model, max_positions
from doktra_tune.plan.schema import is_ray_client, ray_client_line
from doktra_tune.plan.search_plan import REPO_ROOT, Plan
from doktra_tune.tasks import get_task
from doktra_tune.tracking import check_tracking_uri

RAY_FIX = "start a cluster with `ray start --head` or drop the override ray.address to run locally"


def missing_data_line(plan: Plan, path: Path) -> str:
    """The one line for task data that is not there: where it was looked for (and which setting said
    so), where it comes from, and how to point data_root at it."""
    task = get_task(plan.task)
    subdir = plan.config.task.data_subdir
    if plan.data_root_origin == "the default data_root":
        origin = f"the default data_root, ../shared/data beside the repository {REPO_ROOT}"
    elif plan.data_root_origin == "data_root":
        origin = f"data_root={plan.config.data_root}"
    else:
        origin = f"DOKTRA_DATA_ROOT={os.environ.get('DOKTRA_DATA_ROOT', '')}"
    return (f"no {task.name} data at {path} ({origin}); get {task.data_source(plan.data.data_format)} and set "
            f"data_root=<folder holding {subdir}/> (or export DOKTRA_DATA_ROOT)")


def check_data(plan: Plan) -> None:
    """The task's data are there and every split loads (labels in the task's set, subsamples drawn), on
    the search's data and on every GAD fold of the final runs. A missing folder or file is one line
    naming where the data come from (`missing_data_line`)."""
    data = plan.data
    formats = [data.data_format] + [gad_fold_format(data.data_format, k) for k in plan.config.final.folds or ()]
    try:
        if not Path(data.data_dir).is_dir():
            raise MissingDataError(f"no folder {data.data_dir}", data.data_dir)
        for data_format in dict.fromkeys(formats):
            for split, limit in (("train", data.train_limit), ("dev", data.dev_limit), ("test", data.test_limit)):
                load_split(data.task, split, data.data_dir, data_format=data_format, limit=limit,
                           seed=data.subsample_seed)
    except MissingDataError as err:
        raise DataError(missing_data_line(plan, err.path)) from err


def fetch_models(plan: Plan) -> None:
    """Both models can be loaded without the network from here on: a hub id is downloaded once, here,
    into the Hugging Face cache (progress bar), not by every trial (which then run offline); and
    data.max_len fits both models' position embeddings."""
    for key, spec in (("teacher_model", plan.config.teacher_model), ("student_model", plan.config.student_model)):
        try:
            fetch_model(spec)
        except ConfigError as err:
            raise ConfigError(f"{key}={spec}: {err}") from err
        limit = max_positions(spec)
        if limit is not None and plan.data.max_len > limit:
            raise ConfigError(
                f"data.max_len={plan.data.max_len} is longer than {key}={spec} can take ({limit} "
                f"positions); set data.max_len={min(limit, 128)} or less (the paper uses 128)"
            )


def check_ray_address(address: str, timeout: float) -> None:
    """ConfigError unless `address` (auto | <host>:<port>) answers within `timeout`. Ray Client
    (`ray://`, also as auto's $RAY_ADDRESS) is refused with the Ray Jobs command (`ray_client_line`)."""
    setting = "ray.address"
    if address == "auto":
        from doktra_tune.ray_compat import (
            local_cluster_addresses,  # a private Ray name: loaded only for auto
        )

        env = os.environ.get("RAY_ADDRESS")
        found = [env] if env else local_cluster_addresses()
        if not found:
            raise ConfigError(f"ray.address=auto found no running Ray cluster on this machine; {RAY_FIX}")
        address, setting = found[0], "RAY_ADDRESS" if env else setting
    if is_ray_client(address):
        raise ConfigError(ray_client_line(setting, address))
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        raise ConfigError(f"{setting}={address!r} is not auto or <host>:<port> (the head's GCS address, port 6379 "
                          f"by default); {RAY_FIX}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ConfigError(f"{setting}={address} does not answer ({err.strerror or err}); {RAY_FIX}") from err


def check_run_dir(run_dir: Path) -> None:
    """The run directory can be created (or written): a probe directory is made and removed again
    in its nearest existing ancestor, so nothing stays behind."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        probe = tempfile.mkdtemp(prefix=".doktra-probe-", dir=existing)
    except OSError as err:
        raise ConfigError(
            f"run directory {run_dir} cannot be created ({existing}: {err.strerror or err}); "
            "set runs_root=<a writable folder>"
        ) from err
    shutil.rmtree(probe, ignore_errors=True)


def preflight(plan: Plan) -> None:
    """Every I/O check of `plan`; the first failure raises its one-line error."""
    check_run_dir(plan.run_dir)
    check_data(plan)
    if plan.config.ray.address:
        check_ray_address(plan.config.ray.address, plan.config.ray.connect_timeout_s)
    if plan.config.tracking_uri:
        check_tracking_uri(plan.config.tracking_uri)
    fetch_models(plan)  # last: it may download
