"""A run directory's own MLflow store after the directory moved: its artifact root follows it.

The embedded store (`sqlite:///<run_dir>/mlflow.db`) keeps its artifacts beside it
(`<run_dir>/mlartifacts`), and MLflow records that root as an absolute URI in the experiment and in
every run (and logged model and model version) it creates. Once the run directory is moved or
mounted at another path, those URIs name the old place: new artifacts would be written there (the
old directory created again, or a failed write where it cannot be) and the MLflow UI would show none
of the old ones. `relocate_artifacts` rewrites the old root to the new one in the store, once, before
the store is opened. MLflow has no API that changes a recorded artifact location, so this is the one
place that writes MLflow's tables (`experiments`, `runs`, `logged_models`, `model_versions`) itself.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

ARTIFACTS_DIR = "mlartifacts"  # beside the store's file (tracking.runs.SearchTracker creates it so)
# (table, column) pairs holding artifact URIs, each under an experiment's artifact root
_URI_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                ("logged_models", "artifact_location"), ("model_versions", "source"),
                ("model_versions", "storage_location"))


def artifact_root(db: Path) -> str:
    """The artifact root of the sqlite store at `db`: `file://<db's folder>/mlartifacts`."""
    return (Path(db).expanduser().resolve().parent / ARTIFACTS_DIR).as_uri()


def relocate_artifacts(db: Path) -> int:
    """Rewrite, in the sqlite store `db`, every artifact URI under an artifact root that is not the
    store's own (`artifact_root(db)`) but ends like one (`.../mlartifacts`): the store was moved with
    its run directory. Returns the number of rows changed (0: nothing had moved, or no store yet)."""
    if not Path(db).is_file():
        return 0
    new = artifact_root(db)
    changed = 0
    with sqlite3.connect(db, timeout=60) as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return 0
        roots = {row[0] for row in con.execute("SELECT artifact_location FROM experiments")
                 if row[0] and row[0].startswith("file://") and row[0].rstrip("/").endswith("/" + ARTIFACTS_DIR)}
        for old in sorted(roots - {new}):
            for table, column in _URI_COLUMNS:
                if table not in tables:
                    continue
                cursor = con.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608 - fixed names above
                    f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                    (new, len(old) + 1, old, len(old) + 1, old + "/"),
                )
                changed += cursor.rowcount
    return changed
