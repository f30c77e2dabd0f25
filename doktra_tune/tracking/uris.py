"""Tracking URIs: the run directory's default store, and the check that a store can be used before
any training starts."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from doktra_tune.errors import ConfigError

SERVER_FIX = (
    "start it with `mlflow server --host 127.0.0.1 --port 5000` or drop the override to use "
    "the embedded sqlite store"
)


def default_tracking_uri(run_dir: Path | str) -> str:
    """The embedded default store: `sqlite:///<absolute run_dir>/mlflow.db`."""
    return f"sqlite:///{Path(run_dir).expanduser().resolve()}/mlflow.db"


def sqlite_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///") :])


def is_local(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def _http_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (user's URI)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_tracking_uri(uri: str, timeout: float = 3.0) -> None:
    """Fail fast (before any training) when the tracking store cannot be used.

    http(s): GET `<uri>/health`, then `<uri>/api/2.0/mlflow/experiments/search`, each with a short
    timeout; sqlite / file: the store's directory must be writable (created later if missing).
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(f"mlflow.tracking_uri is empty; {SERVER_FIX}")
    uri = uri.strip()
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        if _http_ok(f"{base}/health", timeout) or _http_ok(
            f"{base}/api/2.0/mlflow/experiments/search?max_results=1", timeout
        ):
            return
        raise ConfigError(
            f"MLflow tracking server mlflow.tracking_uri={uri} is unreachable; {SERVER_FIX}"
        )
    if uri.startswith("sqlite:"):
        if not uri.startswith("sqlite:///") or uri == "sqlite:///":
            raise ConfigError(
                f"mlflow.tracking_uri={uri} is not a sqlite file URI; use sqlite:////abs/path/mlflow.db "
                "or drop the override to use the embedded sqlite store"
            )
        directory = _nearest_existing(sqlite_path(uri).parent)
    elif uri.startswith("file:"):
        directory = _nearest_existing(Path(urllib.parse.urlparse(uri).path or "/"))
    elif "://" not in uri:
        directory = _nearest_existing(Path(uri).expanduser().resolve())
    else:
        return  # other MLflow schemes (databricks, postgresql, ...): SearchTracker's first call checks
    if not os.access(directory, os.W_OK):
        raise ConfigError(
            f"mlflow.tracking_uri={uri}: directory {directory} is not writable; "
            "choose a writable run directory or drop the override to use the embedded sqlite store"
        )
