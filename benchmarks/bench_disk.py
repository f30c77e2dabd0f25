"""Disk use of a search's run directory, by what holds it, and an estimate for the paper preset.

    python benchmarks/bench_disk.py runs/<search_id> [more run dirs ...]
    python benchmarks/bench_disk.py --paper            # the estimate alone

The estimate counts, per stage, the checkpoints Tune keeps (one per trial: the model; while a trial
runs also its training state, AdamW's two moments = 2x the model; `DropTrainingState` removes it
when the trial ends) and what `search.keep_checkpoints` keeps or frees.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from doktra_tune.cluster.disk import dir_bytes, fmt_bytes  # noqa: E402

GB = 1024**3
# fp32 parameters x 4 bytes (safetensors): BioBERT-base 108M, ALBERT-xlarge 59M, RoBERTa-large 355M
PAPER_MODELS = {"BioBERT-base (teacher)": 108e6 * 4, "ALBERT-xlarge (student)": 59e6 * 4,
                "RoBERTa-large (student)": 355e6 * 4}
# the paper grids (search_spaces/*.yaml) and the chain's final runs with 3 seeds
PAPER_TRIALS = {"ctt": 4, "student": 18, "abd": 48}
FINAL = {"teacher": 6, "student": 9}  # teacher_ctt + teacher_ft; student_ft + doktra + doktra_no_ctt (x 3 seeds)


def categories(run_dir: Path) -> dict[str, int]:
    """Bytes under `run_dir` by what holds them."""
    ray_dir = run_dir / "ray"
    tune_ckpt = sum(dir_bytes(p) for p in ray_dir.glob("*/*/checkpoint_*"))
    # MLflow 3 keeps logged models under <artifact root>/models/m-<id>/ (older: <run>/artifacts/model)
    registry = dir_bytes(run_dir / "mlartifacts" / "models") + sum(
        dir_bytes(p) for p in (run_dir / "mlartifacts").glob("*/artifacts/model"))
    out = {
        "Tune checkpoints (ray/*/*/checkpoint_*)": tune_ckpt,
        "Tune experiment files (results, state)": dir_bytes(ray_dir) - tune_ckpt if ray_dir.is_dir() else 0,
        "stage winners (stages/*/winner)": sum(dir_bytes(p) for p in (run_dir / "stages").glob("*/winner"))
        + dir_bytes(run_dir / "stages" / "ctt" / "teacher_ft"),
        "chain models (final/models)": dir_bytes(run_dir / "final" / "models"),
        "registered models (mlartifacts/models)": registry,
        "other MLflow artifacts (plots, tables)": dir_bytes(run_dir / "mlartifacts") - registry,
        "mlflow.db": (run_dir / "mlflow.db").stat().st_size if (run_dir / "mlflow.db").is_file() else 0,
    }
    out["other (tables/, plots/, json)"] = dir_bytes(run_dir) - sum(out.values())
    return out


def paper_estimate(student: str = "ALBERT-xlarge (student)") -> list[tuple[str, int, float, float]]:
    """(stage, trials, bytes held while it runs, bytes it leaves behind with keep_checkpoints=all).
    While a stage runs it holds one model per trial plus the running trial's training state (one
    GPU: one trial at a time); with =needed it leaves nothing (its winner is copied, then registered)."""
    teacher = PAPER_MODELS["BioBERT-base (teacher)"]
    model = PAPER_MODELS[student]
    rows = []
    for stage, n in PAPER_TRIALS.items():
        size = teacher if stage == "ctt" else model
        rows.append((stage, n, n * size + 2 * size, n * size))
    final = FINAL["teacher"] * teacher + FINAL["student"] * model
    rows.append(("final (chain, 3 seeds)", FINAL["teacher"] + FINAL["student"], final + 2 * teacher, final))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", type=Path)
    parser.add_argument("--paper", action="store_true", help="print the paper preset's estimate")
    args = parser.parse_args()
    for run_dir in args.run_dirs:
        cats = categories(run_dir)
        total = dir_bytes(run_dir)
        print(f"== {run_dir}: {fmt_bytes(total)} ({total} bytes)")
        for name, size in cats.items():
            print(f"   {fmt_bytes(size):>10}  {name}")
    if args.paper or not args.run_dirs:
        winners = PAPER_MODELS["BioBERT-base (teacher)"] + 2 * PAPER_MODELS["ALBERT-xlarge (student)"]
        print("== paper preset, ChemProt, ALBERT-xlarge student, one GPU (fp32 checkpoints)")
        print(f"   {'stage':24s} {'trials':>6}  {'held while it runs':>18}  {'left after it (all)':>19}")
        for stage, n, held, left in paper_estimate():
            print(f"   {stage:24s} {n:6d}  {held / GB:14.1f} GiB  {left / GB:15.1f} GiB")
        rows = paper_estimate()
        print(f"   keep_checkpoints=all ends with {(sum(r[3] for r in rows) + winners) / GB:.1f} GiB; needed peaks at "
              f"{max(r[2] for r in rows) / GB:.1f} GiB (the ABD stage) and ends with the registered winners, "
              f"{winners / GB:.1f} GiB, plus MLflow's database")


if __name__ == "__main__":
    main()
