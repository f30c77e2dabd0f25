"""Ray Tune overhead per trial: stock Tuner set-up vs `doktra_tune.cluster.ray_session.RAY_SETTINGS`.

Runs N trivial function trials (one report each, no work) under each set-up, each variant in a
fresh Python process (Ray reads its environment variables once), and prints seconds per trial:
`Tuner.fit()` wall time / N, and the same including `ray.init`. Goal (issue 3): <= 1.0 s/trial for
8 trials on the 2-core box (stock: about 1.9 s/trial on ray 2.60).

`--trial-imports --work-s S` makes each trial a short real one: it imports what a trial process
imports (every `trainables` module: torch, transformers, sklearn, matplotlib; ~7 s in a new
worker process) and then works S seconds. That is where the pending-placement-group limit shows:
`--env TUNE_MAX_PENDING_TRIALS_PG=1` (the setting before) against the tuned default (Tune's
"auto": a placement group per grid trial ahead).

    python benchmarks/bench_ray_overhead.py [--trials 8] [--repeats 1] [--env KEY=VALUE ...]
        [--trial-imports] [--work-s 0] [--tuners 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time


def trivial(config: dict) -> None:
    from ray import tune

    if config.get("trial_imports"):
        import importlib
        from pathlib import Path

        import trainables

        for path in sorted(Path(trainables.__file__).parent.glob("*.py")):
            importlib.import_module(f"trainables.{path.stem}")
    time.sleep(float(config.get("work_s", 0.0)))
    tune.report({"dev_f1": float(config["x"])})


def run_variant(variant: str, trials: int, extra_env: list[str], *, trial_imports: bool = False,
                work_s: float = 0.0, tuners: int = 1) -> dict[str, float]:
    """One timed experiment (`tuners` Tuners one after another, as a search's stages); run in its own process."""
    from doktra_tune.cluster.ray_session import RAY_SETTINGS

    if variant == "tuned":
        RAY_SETTINGS.apply_env()
    os.environ.update(dict(item.split("=", 1) for item in extra_env))
    import ray
    from ray import tune

    t0 = time.perf_counter()
    if variant == "tuned":
        ray.init(**RAY_SETTINGS.init_kwargs(num_cpus=2))
    else:
        ray.init(num_cpus=2)
    t_init = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as storage:
        if variant == "tuned":
            tune_config = tune.TuneConfig(num_samples=1, **RAY_SETTINGS.tune_config_kwargs())
            run_config = tune.RunConfig(
                name="bench", storage_path=storage, **RAY_SETTINGS.run_config_kwargs()
            )
        else:
            tune_config = tune.TuneConfig(num_samples=1)
            run_config = tune.RunConfig(name="bench", storage_path=storage)
        t1 = time.perf_counter()
        for index in range(tuners):
            tuner = tune.Tuner(
                trivial,
                param_space={"x": tune.grid_search(list(range(trials))), "trial_imports": trial_imports,
                             "work_s": work_s},
                tune_config=tune_config,
                run_config=dataclasses.replace(run_config, name=f"bench{index}"),
            )
            results = tuner.fit()
            assert len(results) == trials and not results.errors
        t_fit = (time.perf_counter() - t1) / tuners
    ray.shutdown()
    return {
        "variant": variant,
        "trials": trials,
        "tuners": tuners,
        "init_s": t_init,
        "fit_s": t_fit,
        "fit_s_per_trial": t_fit / trials,
        "total_s_per_trial": (t_fit + t_init) / trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment variable for both variants (ablations)")
    parser.add_argument("--trial-imports", action="store_true",
                        help="each trial imports what a real trial process imports (torch, transformers, ...)")
    parser.add_argument("--work-s", type=float, default=0.0, help="seconds each trial works after its imports")
    parser.add_argument("--tuners", type=int, default=1, help="Tuners one after another (fit time is per Tuner)")
    parser.add_argument("--variant", choices=["stock", "tuned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = ["--trials", str(args.trials), "--work-s", str(args.work_s), "--tuners", str(args.tuners),
             *(["--trial-imports"] if args.trial_imports else [])]
    if args.variant:  # child process
        print("RESULT " + json.dumps(run_variant(args.variant, args.trials, args.env, trial_imports=args.trial_imports,
                                                 work_s=args.work_s, tuners=args.tuners)))
        return
    rows = []
    for _ in range(args.repeats):
        for variant in ("stock", "tuned"):
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant, *shape]
                + [f"--env={item}" for item in args.env],
                capture_output=True, text=True, check=True,
            ).stdout
            line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
            rows.append(json.loads(line[len("RESULT "):]))
            r = rows[-1]
            print(
                f"{r['variant']:>5}: {r['trials']} trials, ray.init {r['init_s']:.2f} s, "
                f"fit {r['fit_s']:.2f} s{' per Tuner' if r['tuners'] > 1 else ''} -> {r['fit_s_per_trial']:.2f} s/trial "
                f"({r['total_s_per_trial']:.2f} s/trial with ray.init)",
                flush=True,
            )


if __name__ == "__main__":
    main()
