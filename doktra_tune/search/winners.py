"""A stage's winner: chosen by the one selection rule (`doktra_tune.selection`), written to
`stages/<stage>/winner.json` with its checkpoint copied to `stages/<stage>/winner/`, read back when
the stage is skipped on a rerun.

The run directory's JSON files refer to what lies inside it by paths relative to it
(`"checkpoint": "stages/ctt/winner"`, `paths.run_relative`); their readers (`read_winner`,
`read_run_json`) return them absolute against where the run directory is now, so a run directory
moved or mounted elsewhere resumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from doktra_tune.errors import DoktraError
from doktra_tune.models import copy_checkpoint
from doktra_tune.plan.paths import run_absolute, run_relative
from doktra_tune.plan.schema import SelectionOptions
from doktra_tune.search.trials import clean
from doktra_tune.selection import SelectionRule, select_winner
from doktra_tune.trial_record import TrialRecord

WINNER_FILE = "winner.json"


def atomic_write_json(path: Path, data: Any, run_dir: Path | None = None) -> None:
    """`data` as JSON at `path`, written to a temporary file and renamed (never half a file); with
    `run_dir`, its paths into the run directory stored relative to it (`read_run_json` reads them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = clean(data)
    if run_dir is not None:
        data = run_relative(data, run_dir)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def read_run_json(path: Path, run_dir: Path) -> dict[str, Any]:
    """A JSON file of the run directory `run_dir`, its relative paths into it made absolute."""
    return run_absolute(json.loads(path.read_text()), run_dir)


def stage_run_dir(stage_dir: Path) -> Path:
    """The run directory of `<run_dir>/stages/<stage>`."""
    return stage_dir.parent.parent


def selection_rule(options: SelectionOptions, stage: str) -> SelectionRule:
    """The winner rule of `stage`: dev F1; the CTT teacher also on dev ECE (App. A.1)."""
    return SelectionRule(kind=options.kind, use_ece=(stage == "ctt"), f1_tolerance=options.f1_tolerance)


def pick_winner(
    stage: str, records: list[TrialRecord], rule: SelectionRule, where: Path,
    only: Callable[[TrialRecord], bool] | None = None,
) -> TrialRecord:
    """The winning trial among those with a checkpoint (and `only`); one-line error if none."""
    pool = [r for r in records if r.checkpoint and (only is None or only(r))]
    if not pool:
        raise DoktraError(
            f"stage {stage}: no trial left a checkpoint to select from; inspect {where} "
            "and rerun with a wider grid or more epochs"
        )
    rows = pd.DataFrame([r.row() for r in pool])
    if not (rows["status"] == "completed").any():
        rows["status"] = rows["status"].where(rows["status"] == "errored", "completed")
    winner = select_winner(rows, rule, status_col="status")
    return pool[int(winner.name)]


def epochs_spent(records: list[TrialRecord], trunks: list[TrialRecord] = ()) -> int:
    """Epochs a stage trained: each trial's own (not those it took from a trunk), plus the trunks'."""
    return sum(r.epochs_run - r.shared_epochs for r in records) + sum(t.epochs_run for t in trunks)


def winner_info(
    stage: str, winner: TrialRecord, records: list[TrialRecord], rule: SelectionRule, checkpoint: Path,
    extra: dict[str, Any], trunks: list[TrialRecord] = (),
) -> dict[str, Any]:
    """The content of winner.json."""
    return clean({
        "stage": stage,
        "trial_id": winner.trial_id,
        "params": winner.params,
        "epoch": winner.kept_epoch,
        "metrics": winner.kept_metrics,
        "checkpoint": str(checkpoint),
        "selection": {**dataclasses.asdict(rule), "rows": "one per trial: the epoch whose checkpoint is its model"},
        "epochs_spent": epochs_spent(records, trunks),
        "trials": [r.summary() for r in records],
        **extra,
    })


def write_winner(
    stage_dir: Path, stage: str, winner: TrialRecord, records: list[TrialRecord], rule: SelectionRule,
    extra: dict[str, Any], trunks: list[TrialRecord] = (),
) -> dict[str, Any]:
    """Copy the winner's checkpoint to `<stage_dir>/winner/` and write `<stage_dir>/winner.json`
    (`stage_dir`: `<run_dir>/stages/<stage>`), its paths into the run directory relative to it.
    Returns its content with those paths absolute, as `read_winner` does."""
    assert winner.checkpoint is not None
    target = copy_checkpoint(winner.checkpoint, stage_dir / "winner")
    info = winner_info(stage, winner, records, rule, target, extra, trunks)
    atomic_write_json(stage_dir / WINNER_FILE, info, stage_run_dir(stage_dir))
    return info


def leaderboard(records: list[TrialRecord], winner: TrialRecord | None) -> list[dict[str, Any]]:
    """One row per trial, best first: hyperparameters, status, epochs, the dev metrics of its model."""
    rows = []
    for r in sorted(records, key=lambda r: -(r.kept_metrics.get("dev_f1") or -1.0)):
        rows.append({"trial_id": r.trial_id, "winner": winner is not None and r.trial_id == winner.trial_id,
                     "status": r.status, **{f"param.{k}": v for k, v in sorted(r.params.items())},
                     "epochs_run": r.epochs_run, "shared_epochs": r.shared_epochs, "epoch": r.kept_epoch,
                     "dev_f1": r.kept_metrics.get("dev_f1"),
                     "dev_ece": r.kept_metrics.get("dev_ece"), "dev_lat": r.kept_metrics.get("dev_lat"),
                     "error": r.error})
    return rows


def write_leaderboard(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def holes(records: list[TrialRecord]) -> list[str]:
    """The trials that failed (after their retries): a grid point with no result."""
    return [f"{r.trial_id} {r.params}: {r.error or 'errored'}" for r in records if r.status == "errored"]


def read_winner(stage_dir: Path) -> dict[str, Any] | None:
    """The winner.json of a finished stage (`stage_dir`: `<run_dir>/stages/<stage>`), its paths
    absolute against where the run directory is now; None when the stage has not finished."""
    path = stage_dir / WINNER_FILE
    return read_run_json(path, stage_run_dir(stage_dir)) if path.is_file() else None
