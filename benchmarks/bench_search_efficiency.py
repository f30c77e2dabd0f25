"""How busy a finished search kept its trial slots: Σ trial seconds ÷ (wall × slots).

Reads every Tune experiment of a run directory (`<run_dir>/ray/<stage>/`, through Tune's public
`ExperimentAnalysis`) and prints, per experiment and in all: the trials, Σ trial seconds (each
trial's last `time_total_s`: its function's own time, start-up inside the worker included, Tune's
scheduling between trials not), the span from the first trial's start (its first result's `timestamp`
− that result's `time_total_s`) to the last trial's last result, and the idle slot-seconds
between the stages (one stage's last result to the next stage's first start, × slots). The efficiency
is Σ trial seconds ÷ (span × slots); a search that kept every slot busy from its first trial to its
last scores 1.

    python benchmarks/bench_search_efficiency.py runs/chemprot-cpu-22682373 [--slots 2]

`--slots`: concurrent trials (default: the run's `ray.num_cpus`, else this machine's CPU count,
÷ `resources.cpus_per_trial`). A resumed search counts only its last attempt's wall per trial
(Tune restores `time_total_s` across a resume but the span then holds the pause): read its figure
with that in mind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass
class Experiment:
    name: str
    trials: int
    trial_seconds: float  # Σ of each trial's last time_total_s
    start: float  # the first trial's start (unix seconds)
    end: float  # the last result's timestamp


def read_experiment(path: Path) -> Experiment | None:
    from ray.tune import ExperimentAnalysis

    frames = [df for df in ExperimentAnalysis(str(path)).trial_dataframes.values() if len(df)]
    if not frames:
        return None
    starts = [float(df["timestamp"].iloc[0] - df["time_total_s"].iloc[0]) for df in frames]
    return Experiment(
        name=path.name, trials=len(frames),
        trial_seconds=sum(float(df["time_total_s"].iloc[-1]) for df in frames),
        start=min(starts), end=max(float(df["timestamp"].iloc[-1]) for df in frames),
    )


def default_slots(run_dir: Path) -> int:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cpus = (cfg.get("ray") or {}).get("num_cpus") or os.cpu_count() or 1
    per_trial = float((cfg.get("resources") or {}).get("cpus_per_trial") or 1)
    return max(1, int(cpus // per_trial))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--slots", type=int, default=None)
    args = p.parse_args(argv)
    ray_dir = args.run_dir / "ray"
    if not ray_dir.is_dir():
        print(f"error: no Tune experiments under {ray_dir}; give a finished search's run directory", file=sys.stderr)
        return 2
    slots = args.slots or default_slots(args.run_dir)
    found = (read_experiment(path) for path in ray_dir.iterdir() if path.is_dir())
    experiments = sorted((e for e in found if e is not None), key=lambda e: e.start)
    print(f"{'experiment':12s} {'trials':>6s} {'Σ trial s':>10s} {'span s':>8s} {'gap before s':>12s}")
    gaps = 0.0
    for before, exp in zip([None, *experiments[:-1]], experiments):
        gap = max(0.0, exp.start - before.end) if before else 0.0
        gaps += gap
        print(f"{exp.name:12s} {exp.trials:6d} {exp.trial_seconds:10.0f} {exp.end - exp.start:8.0f} {gap:12.0f}")
    span = experiments[-1].end - experiments[0].start
    busy = sum(e.trial_seconds for e in experiments)
    result = {"slots": slots, "span_s": round(span, 1), "trial_seconds": round(busy, 1),
              "gap_s": round(gaps, 1), "efficiency": round(busy / (span * slots), 3)}
    print(f"all: {sum(e.trials for e in experiments)} trials, Σ {busy:.0f} trial-seconds over {span:.0f} s × "
          f"{slots} slots: efficiency {result['efficiency']:.2f}; idle between stages {gaps * slots:.0f} slot-seconds")
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
