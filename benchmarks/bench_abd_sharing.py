"""The ABD stage with and without the shared activation-boundary prefix (issue 10), in one run.

    python benchmarks/bench_abd_sharing.py [--workdir /tmp/doktra_bench_sharing] [--preset cpu]

1. The preset's CTT and student stages run once (`search.stop_after=student`), or are reused.
2. Its ABD stage runs twice from those winners, `stages.abd.share_prefix=true` and `=false`, each in
   a copy of that run directory: wall time, epochs trained, and whether every grid point's per-epoch
   dev metrics and the winner agree.
3. The epoch-units the paper's grid plans (lr2 x beta2 x gamma = 3 x 4 x 4, e2 = 10).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from doktra_tune.stages.step_losses import switch_epoch  # noqa: E402


def planned_epochs(lrs: int, betas: list[float], gammas: list[float], e2: int) -> tuple[int, int]:
    """(epochs without sharing, with sharing): one trunk per lr2 to the latest switch, then each
    (beta2, gamma) branch from its own switch to e2."""
    alone = lrs * len(betas) * len(gammas) * e2
    trunk = max(switch_epoch(e2, g) for g in gammas)
    branches = sum(e2 - switch_epoch(e2, g) for _, g in itertools.product(betas, gammas))
    return alone, lrs * (trunk + branches)


def search(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "doktra_tune.search", *args], env=env, cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return time.perf_counter() - t0


def curves(run_dir: Path) -> dict[str, list]:
    out = {}
    for trial in json.loads((run_dir / "stages" / "abd" / "winner.json").read_text())["trials"]:
        (trial_dir,) = (run_dir / "ray" / "abd").glob(f"*_{trial['trial_id']}_*")
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        key = json.dumps({k: trial["params"][k] for k in ("lr", "beta", "gamma")}, sort_keys=True)
        out[key] = [{k: v for k, v in r.items() if k.startswith("dev_")} for r in rows]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/doktra_bench_sharing"))
    parser.add_argument("--preset", default="cpu")
    args = parser.parse_args()
    env = dict(os.environ)
    common = ["task=chemprot", f"preset={args.preset}", "search.keep_checkpoints=all"]
    base = args.workdir / "base"
    if not (base / "prep" / "stages" / "student" / "winner.json").is_file():
        print("preparing the CTT and student winners ...", flush=True)
        search([*common, f"runs_root={base}", "search_id=prep", "search.stop_after=student"], env)
    results = {}
    for share in ("true", "false"):
        root = args.workdir / f"share-{share}"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(base, root)
        wall = search([*common, f"runs_root={root}", "search_id=prep", "search.stop_after=abd",
                       f"stages.abd.share_prefix={share}"], env)
        info = json.loads((root / "prep" / "stages" / "abd" / "winner.json").read_text())
        results[share] = {"wall_s": wall, "epochs": info["epochs_spent"], "winner": info["params"],
                          "curves": curves(root / "prep")}
        print(f"share_prefix={share}: ABD stage {wall:.0f} s wall (the driver's start included), "
              f"{info['epochs_spent']} epochs trained, winner {info['params']}", flush=True)
    same = results["true"]["curves"] == results["false"]["curves"]
    print(f"every grid point's per-epoch dev metrics identical: {same}; same winner: "
          f"{results['true']['winner'] == results['false']['winner']}")
    print(f"epochs: {results['true']['epochs']} of {results['false']['epochs']} "
          f"({100 * results['true']['epochs'] / results['false']['epochs']:.0f} %); wall "
          f"{results['true']['wall_s']:.0f} s vs {results['false']['wall_s']:.0f} s")
    alone, shared = planned_epochs(3, [0.0, 0.3, 0.5, 0.7], [0.6, 0.7, 0.8, 0.9], 10)
    print(f"paper grid (3 lr2 x 4 beta2 x 4 gamma, e2 = 10): {shared} of {alone} epoch-units "
          f"({100 * shared / alone:.1f} %)")


if __name__ == "__main__":
    main()
