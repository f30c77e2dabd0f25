"""An empty MLflow store for a test's run directory, without MLflow's schema migrations each time."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from doktra_tune.tracking import default_tracking_uri


def new_store(run_dir: Path) -> str:
    """`run_dir`'s default tracking URI on a copy of an empty, already-migrated mlflow.db (MLflow
    runs its schema migrations once per MLflow version and machine instead of once per test)."""
    template = Path(tempfile.gettempdir()) / f"doktra-mlflow-template-{mlflow.__version__}.db"
    if not template.exists():
        partial = template.with_suffix(f".{os.getpid()}.tmp")
        MlflowClient(tracking_uri=f"sqlite:///{partial}").search_experiments()
        partial.replace(template)  # atomic: concurrent sessions never see a half-made file
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "mlflow.db").exists():
        shutil.copyfile(template, run_dir / "mlflow.db")
    return default_tracking_uri(run_dir)
