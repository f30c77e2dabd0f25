"""Ray Tune overhead per trial: stock Tuner set-up vs `doktra_tune.cluster.ray_session.RAY_SETTINGS`.

Runs N trivial function trials (one report each, no work) under each set-up, each variant in a
fresh Python process (Ray reads its environment variables once), and prints seconds per trial:
`Tuner.fit()` wall time / N, and the same including `ray.init`. Goal (issue 3): <= 1.0 s/trial for
8 trials on the 2-core box (stock: about 1.9 s/trial on ray 2.60).

    python benchmarks/bench_ray_overhead.py [--trials 8] [--repeats 1] [--env KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def trivial(config: dict) -> None:
    from ray import tune

    tune.report({"dev_f1": float(config["x"])})


def run_variant(variant: str, trials: int, extra_env: list[str]) -> dict[str, float]:
    """One timed experiment; run in its own process."""
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
        tuner = tune.Tuner(
            trivial,
            param_space={"x": tune.grid_search(list(range(trials)))},
            tune_config=tune_config,
            run_config=run_config,
        )
        t1 = time.perf_counter()
        results = tuner.fit()
        t_fit = time.perf_counter() - t1
    assert len(results) == trials and not results.errors
    ray.shutdown()
    return {
        "variant": variant,
        "trials": trials,
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
    parser.add_argument("--variant", choices=["stock", "tuned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process
        print("RESULT " + json.dumps(run_variant(args.variant, args.trials, args.env)))
        return
    rows = []
    for _ in range(args.repeats):
        for variant in ("stock", "tuned"):
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--trials", str(args.trials)]
                + [f"--env={item}" for item in args.env],
                capture_output=True, text=True, check=True,
            ).stdout
            line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
            rows.append(json.loads(line[len("RESULT "):]))
            r = rows[-1]
            print(
                f"{r['variant']:>5}: {r['trials']} trials, ray.init {r['init_s']:.2f} s, "
                f"fit {r['fit_s']:.2f} s -> {r['fit_s_per_trial']:.2f} s/trial "
                f"({r['total_s_per_trial']:.2f} s/trial with ray.init)",
                flush=True,
            )


if __name__ == "__main__":
    main()
