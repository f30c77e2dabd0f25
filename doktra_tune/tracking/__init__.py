"""MLflow tracking of a search (docs/DESIGN.md "Tracking contract"): the run tree
(`runs`: SearchTracker on the driver, `trial_run` in the trials), the client that never stalls
training (`client`: bounded waits, `outbox`: writes kept on disk while the server is away), and the
tracking URIs (`uris`)."""

from doktra_tune.tracking.client import TrackingClient, dataset_input
from doktra_tune.tracking.outbox import OUTBOX_DIR, Outbox, RunKey
from doktra_tune.tracking.runs import (
    LEVEL,
    OUTCOME_TO_RUN_STATUS,
    SEARCH_ID,
    STAGE,
    STATUS,
    TASK,
    TRIAL_ID,
    SearchTracker,
    TrialLogger,
    flatten,
    trial_run,
)
from doktra_tune.tracking.uris import SERVER_FIX, check_tracking_uri, default_tracking_uri

__all__ = [
    "LEVEL", "OUTBOX_DIR", "OUTCOME_TO_RUN_STATUS", "SEARCH_ID", "SERVER_FIX", "STAGE", "STATUS", "TASK", "TRIAL_ID",
    "Outbox", "RunKey", "SearchTracker", "TrackingClient", "TrialLogger", "check_tracking_uri", "dataset_input",
    "default_tracking_uri", "flatten", "trial_run",
]
