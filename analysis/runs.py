"""Read a search's runs back from MLflow (`mlflow.search_runs` into pandas).

Works on any finished or partial search and on any store: the run directory's embedded sqlite
file, or a search id on a tracking server (a search that ran on a cluster).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from doktra_tune.errors import ConfigError, DataError, first_line
from doktra_tune.tracking import check_tracking_uri, default_tracking_uri

FIX_SOURCE = (
    "pass the search's run directory (runs/<search_id>, holding mlflow.db) or a search id "
    "with --tracking-uri URI"
)


@dataclass(frozen=True)
class SearchSource:
    """Where a search's runs live and where its tables/plots go."""

    tracking_uri: str
    search_id: str | None  # None: every search in the store (a run dir holds exactly one)
    out_dir: Path


def resolve_source(target: str, tracking_uri: str | None = None) -> SearchSource:
    """`target` is a run directory or a search id; ConfigError (one line) when neither works."""
    path = Path(target).expanduser()
    if path.is_dir():
        if tracking_uri is None:
            if not (path / "mlflow.db").is_file():
                raise ConfigError(f"run directory {path} holds no mlflow.db; {FIX_SOURCE}")
            tracking_uri = default_tracking_uri(path)
            return SearchSource(tracking_uri, None, path.resolve())
        return SearchSource(tracking_uri, path.name, path.resolve())
    if tracking_uri is None:
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if tracking_uri is None:
        raise ConfigError(f"no run directory {target!r} and no tracking URI given; {FIX_SOURCE}")
    return SearchSource(tracking_uri, path.name, Path("runs").resolve() / path.name)


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point the global `mlflow` tracking URI at `uri` for the block, then restore it."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def load_runs(source: SearchSource) -> pd.DataFrame:
    """Every run of the search (search, stage and trial levels) as `mlflow.search_runs` returns
    them (`tags.*`, `params.*`, `metrics.*` columns), oldest first, from all `doktra-*`
    experiments. Empty frame when there are none."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if source.tracking_uri.startswith(("http://", "https://")):
        check_tracking_uri(source.tracking_uri)  # fail in seconds, not after MLflow's retries
    client = MlflowClient(tracking_uri=source.tracking_uri)
    try:
        experiments = [
            e.experiment_id
            for e in client.search_experiments(filter_string="name LIKE 'doktra-%'")
        ]
    except Exception as err:  # noqa: BLE001 - unreachable server / broken store: one line
        raise ConfigError(
            f"cannot read MLflow store {source.tracking_uri} ({first_line(err, 200)}); "
            f"{FIX_SOURCE}"
        ) from err
    if not experiments:
        return pd.DataFrame()
    filter_string = (
        f"tags.`doktra.search_id` = '{source.search_id}'" if source.search_id else ""
    )
    with using_tracking_uri(source.tracking_uri):
        df = mlflow.search_runs(
            experiment_ids=experiments,
            filter_string=filter_string,
            order_by=["attributes.start_time ASC"],
            output_format="pandas",
        )
    return df.reset_index(drop=True)


def tag(df: pd.DataFrame, name: str) -> pd.Series:
    """Column `tags.<name>` (all-NA when no run carries the tag)."""
    column = f"tags.{name}"
    return df[column] if column in df.columns else pd.Series(pd.NA, index=df.index, dtype="object")


def trial_runs(df: pd.DataFrame, stage: str | None = None) -> pd.DataFrame:
    """Trial/seed runs, optionally of one stage."""
    if df.empty:
        return df
    mask = tag(df, "doktra.level") == "trial"
    if stage is not None:
        mask &= tag(df, "doktra.stage") == stage
    return df[mask.fillna(False).astype(bool)]


def stage_runs(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    return df[(tag(df, "doktra.level") == "stage").fillna(False).astype(bool)]


def metric_history(tracking_uri: str, run_id: str, key: str) -> pd.DataFrame:
    """One metric's per-epoch history of a run: columns step, value (sorted by step)."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=tracking_uri).get_metric_history(run_id, key)
    frame = pd.DataFrame({"step": [m.step for m in history], "value": [m.value for m in history]})
    return frame.sort_values("step", kind="stable").reset_index(drop=True)


def epoch_table(tracking_uri: str, run_id: str, keys: list[str]) -> pd.DataFrame:
    """Per-epoch metrics of a run, one row per step, one column per key."""
    frames = []
    for key in keys:
        history = metric_history(tracking_uri, run_id, key)
        frames.append(history.rename(columns={"value": key}).set_index("step"))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, axis=1).reset_index()


def search_curve_rows(
    tracking_uri: str, trials: pd.DataFrame, f1_key: str = "dev_f1"
) -> pd.DataFrame:
    """Rows for `plots.plot_search_curve`: one per trial in start order, with the epochs it ran,
    its best dev F1, its status, the cumulative epochs spent and the best eligible F1 so far."""
    rows = []
    for _, run in trials.sort_values("start_time", kind="stable").iterrows():
        history = metric_history(tracking_uri, run["run_id"], f1_key)
        status = run.get("tags.doktra.status")
        rows.append(
            {
                "run_id": run["run_id"],
                "trial_id": run.get("tags.ray.trial_id"),
                "status": status if isinstance(status, str) else "unknown",
                "epochs": int(history["step"].nunique()),
                "dev_f1": float(history["value"].max()) if len(history) else float("nan"),
            }
        )
    frame = pd.DataFrame(rows, columns=["run_id", "trial_id", "status", "epochs", "dev_f1"])
    frame["cum_epochs"] = frame["epochs"].cumsum()
    eligible = frame["dev_f1"].where(~frame["status"].isin(["pruned", "errored"]))
    frame["best_so_far"] = eligible.cummax().ffill()
    return frame


def load_json_artifact(tracking_uri: str, run_id: str, name: str) -> Any | None:
    """A JSON artifact of a run (e.g. `reliability_test.json`), or None when it is absent."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking_uri=tracking_uri)
    if name not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, name, tmp)
        try:
            return json.loads(Path(local).read_text())
        except json.JSONDecodeError as err:
            raise DataError(
                f"artifact {name} of run {run_id} is not valid JSON ({err}); re-run that trial"
            ) from err


def _param_value(text: Any) -> Any:
    """A logged param back as a value: numbers, lists, None ("None"/"null"), else the string."""
    import yaml

    if not isinstance(text, str):
        return None if text is None or (isinstance(text, float) and text != text) else text
    if text in ("None", "null", ""):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def search_configs(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """task -> the resolved configuration of its search (the search run's params, unflattened)."""
    if runs.empty:
        return {}
    searches = runs[(tag(runs, "doktra.level") == "search").fillna(False).astype(bool)]
    out: dict[str, dict[str, Any]] = {}
    for _, row in searches.iterrows():
        config: dict[str, Any] = {}
        for column, value in row.items():
            if not str(column).startswith("params."):
                continue
            parts = str(column)[len("params."):].split(".")
            node = config
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    break
            else:
                node[parts[-1]] = _param_value(value)
        task = row.get("tags.doktra.task") or (config.get("task") or {}).get("name")
        if isinstance(task, str):
            out[task] = config
    return out


def stage_winner_info(tracking_uri: str, runs: pd.DataFrame, task: str, stage: str) -> dict[str, Any] | None:
    """The winner.json a stage run carries (its trials with the rows the winner rule ranked)."""
    stages = stage_runs(runs)
    mask = (tag(stages, "doktra.stage") == stage) & (tag(stages, "doktra.task") == task)
    chosen = stages[mask.fillna(False).astype(bool)]
    if chosen.empty:
        return None
    return load_json_artifact(tracking_uri, str(chosen["run_id"].iloc[-1]), "winner.json")
