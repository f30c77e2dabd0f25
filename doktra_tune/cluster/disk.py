"""Disk use of a run directory, and what a finished stage no longer needs
(`search.keep_checkpoints=needed`, the default; `all` keeps everything).

Kept: what a later stage or a resume needs — every stage's winner (`stages/<stage>/winner/`, and
the β₁ = 0 teacher of the winners protocol), Tune's checkpoints while their stage runs (a paused
synchronous-halving trial or a retried one resumes from them), the chain's per-seed models until
the distillations that need them have run. Freed: Tune's per-trial checkpoints once the stage's
winner is written; the chain's models and Tune's final checkpoints once `final/results.json` is;
the winners' checkpoints once they are in the MLflow Model Registry (`outcome`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def dir_bytes(path: Path) -> int:
    """Bytes of the files under `path` (links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat(follow_symlinks=False).st_size
            except OSError:
                pass
    return total


def fmt_bytes(n: float) -> str:
    """`512 B`, `1.5 KiB`, ... up to GiB."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def disk_line(run_dir: Path) -> str:
    used = dir_bytes(run_dir)
    free = shutil.disk_usage(run_dir).free
    return f"run dir {fmt_bytes(used)} on disk ({used} bytes), {fmt_bytes(free)} free"


def _remove(paths: list[Path]) -> int:
    freed = 0
    for path in paths:
        if path.exists():
            freed += dir_bytes(path) if path.is_dir() else path.stat().st_size
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return freed


def tune_checkpoints(run_dir: Path, experiment: str) -> list[Path]:
    """Tune's per-trial checkpoints of experiment `experiment` and its resumed parts."""
    ray_dir = run_dir / "ray"
    experiments = [ray_dir / experiment, *sorted(ray_dir.glob(f"{experiment}-resume*"))]
    return [ckpt for exp in experiments for ckpt in sorted(exp.glob("*/checkpoint_*")) if ckpt.is_dir()]


def free_stage(run_dir: Path, stage: str) -> int:
    """After `stage`'s winner is written: its trials' Tune checkpoints, and ABD's trunks (bytes freed)."""
    experiments = {"ctt": ["ctt", "ctt_ft"], "abd": ["abd", "abd_trunk"]}.get(stage, [stage])
    extra = [run_dir / "stages" / "abd" / "trunks"] if stage == "abd" else []
    return _remove([ckpt for exp in experiments for ckpt in tune_checkpoints(run_dir, exp)] + extra)


def free_final(run_dir: Path) -> int:
    """After final/results.json: the final runs' Tune checkpoints and the chain's per-seed models."""
    ckpts = tune_checkpoints(run_dir, "final") + tune_checkpoints(run_dir, "final-distill")
    return _remove([*ckpts, run_dir / "final" / "models"])


def free_winners(run_dir: Path) -> int:
    """After the winners are in the Model Registry: their checkpoints under stages/ (winner.json stays)."""
    stages = run_dir / "stages"
    return _remove([*sorted(stages.glob("*/winner")), stages / "ctt" / "teacher_ft"])
