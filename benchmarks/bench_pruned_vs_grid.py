"""Compute to the winner: the exhaustive grid vs a pruned search, on the real stage code.

Runs one DoKTra stage through Ray Tune twice with the real trainable (`trainables/`), the real
core (`doktra_tune.stages`) and `doktra_tune.search.search_algorithms.build_search`:

  1. grid:   every point of the grid in order, no pruning (the paper's protocol, Sec. 4.2);
  2. pruned: the same grid (or a TPE budget) with a pruner (`--pruner`: median, Optuna's
     successive halving, synchronous halving, hyperband, ASHA).

and prints the epoch-units each spent (sum over trials of the epochs they trained) and the dev F1
of each search's winner (best epoch of the best non-pruned trial, as the driver's selection rule:
pruned rows never win). Goal (issue 3): <= 30 % of the grid's epochs for a winner within 0.5 F1
points.

Setting ("cpu-preset-like", on ChemProt from ../shared/data): a seeded stratified subsample,
a MiniLM teacher (CTT, 1 epoch) and a small random BERT student fine-tuned first (both made once and
cached under --workdir), then the stage under test:
  --stage abd:     lr2 x beta2 x gamma, the paper's 4 x 4 beta/gamma grid with lrs for a small
                   random student (48 points, 10 epochs, as Appendix A);
  --stage student: lr1 x batch size (12 points).

    python benchmarks/bench_pruned_vs_grid.py --stage abd [--pruner successive_halving] [--quick]
    python benchmarks/bench_pruned_vs_grid.py --stage student --epochs 10 --grid-json G.json --replay
    # (--replay: a grid run's recorded curves through a pruner, in seconds)
    python benchmarks/bench_pruned_vs_grid.py --simulate   # paper-size 48 x 10 grid, synthetic curves
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GRIDS = {
    "abd": {
        "lr": [1e-4, 3e-4, 1e-3],
        "beta": [0.0, 0.3, 0.5, 0.7],
        "gamma": [0.6, 0.7, 0.8, 0.9],
    },
    "student": {
        "lr": [3e-5, 1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3],
        "batch_size": [16, 32],
    },
}
QUICK_GRIDS = {
    "abd": {"lr": [1e-4, 1e-3], "beta": [0.0, 0.5], "gamma": [0.6, 0.8]},
    "student": {"lr": [1e-4, 4e-4, 1.6e-3], "batch_size": [16, 32]},
}


def simulated_trainable(config: dict) -> None:
    """Synthetic learning curve (no training): `--simulate`.

    Each grid point gets a final dev F1 q (a smooth function of lr/beta/gamma plus seeded noise of
    0.01) and the curve f_t = q - (q - 0.70) * exp(-t / tau) + N(0, 0.003), tau shorter for larger
    lr: the saturating curves the pruners assume. Deterministic per config."""
    import hashlib
    import math as m

    import numpy as np
    from ray import tune

    key = json.dumps({k: config[k] for k in sorted(config) if k != "epochs"}, sort_keys=True)
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    lr = float(config.get("lr", 3e-4))
    x = m.log10(lr / 3e-4)  # 0 at the best learning rate
    q = 0.78 - 0.03 * x * x - 0.02 * (float(config.get("beta", 0.3)) - 0.3) ** 2
    q -= 0.05 * (float(config.get("gamma", 0.8)) - 0.8) ** 2 + 0.01 * abs(rng.normal())
    tau = 1.5 * (3e-4 / lr) ** 0.3
    for t in range(1, int(config["epochs"]) + 1):
        f = q - (q - 0.70) * m.exp(-t / tau) + rng.normal(0, 0.003)
        tune.report({"epoch": t, "dev_f1": f})


def replayed_trainable(config: dict, curves: dict, epoch_s: float) -> None:
    """`--replay`: report a grid run's recorded per-epoch metrics for this point (no training).

    Training here is deterministic per point (fixed seed, one thread), so a pruned search over the
    same grid sees exactly these curves; replaying them through the real Ray + Optuna pruners
    (`epoch_s` of sleep per epoch keeps concurrent trials in step) tries a pruner setting in
    seconds. The figures to quote come from a real run (no --replay)."""
    import tempfile

    from ray import tune

    curve = curves[_point_key(config)]
    start = 0
    checkpoint = tune.get_checkpoint()  # synchronous halving resumes paused trials
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = json.loads((Path(d) / "epoch.json").read_text())["epoch"]
    for epoch, row in enumerate(curve[: int(config["epochs"])], start=1):
        if epoch <= start:
            continue
        time.sleep(epoch_s)
        d = tempfile.mkdtemp()
        (Path(d) / "epoch.json").write_text(json.dumps({"epoch": epoch}))
        tune.report({k: v for k, v in row.items() if k != "training_iteration"},
                    checkpoint=tune.Checkpoint.from_directory(d))


def _point_key(config: dict) -> str:
    return json.dumps({k: config[k] for k in sorted(config) if k != "epochs"}, sort_keys=True)


def data_root() -> Path:
    return Path(os.environ.get("DOKTRA_DATA_ROOT", REPO.parent / "shared" / "data")).expanduser()


def prepare(workdir: Path, args: argparse.Namespace) -> dict:
    """Data config + teacher (CTT) + fine-tuned student checkpoints, made once under `workdir`."""
    from doktra_tune.config import DataConfig, StageConfig
    from doktra_tune.stages import train_student, train_teacher

    data = DataConfig(
        task="chemprot", data_dir=str(data_root() / "chemprot_scibert"), max_len=args.max_len,
        train_limit=args.train_limit, dev_limit=args.dev_limit, test_limit=64,
        cache_dir=str(workdir / "cache"),
    )
    common = dict(batch_size=32, eval_batch_size=128, seed=42, torch_threads=1,
                  eval_splits=("dev",), keep_checkpoints="last")
    made = {}
    needed = (
        ("teacher", train_teacher, "minilm", 5e-5, 1),
        ("student", train_student, args.student_model, 3e-4, 2),
    ) if args.stage == "abd" else ()  # the student stage starts from the model spec itself
    for name, fn, model, lr, epochs in needed:
        out = workdir / "prep" / name
        marker = out / "checkpoint.json"
        if not marker.exists():
            t0 = time.perf_counter()
            cfg = StageConfig(data=data, model=model, output_dir=str(out), lr=lr, epochs=epochs, **common)
            result = fn(cfg)
            marker.write_text(json.dumps({
                "checkpoint": str(result.last_checkpoint), "dev_f1": result.last_metrics.get("dev_f1"),
            }))
            print(f"prepared {name} ({model}) in {time.perf_counter() - t0:.0f} s: "
                  f"dev F1 {result.last_metrics.get('dev_f1'):.4f}", flush=True)
        made[name] = json.loads(marker.read_text())["checkpoint"]
    return {"data": data, "common": common, "student_model": args.student_model, **made}


def run_search(label: str, stage: str, prep: dict, grid: dict, epochs: int, storage: Path,
               *, mode: str, num_samples: int | None, pruner: str, grace_period: int,
               n_startup_trials: int, seed: int, reduction_factor: int = 3,
               replay: dict | None = None, replay_epoch_s: float = 0.3) -> dict:
    from ray import tune

    from doktra_tune.cluster.ray_session import RAY_SETTINGS
    from doktra_tune.config import DistillConfig, StageConfig
    from doktra_tune.metrics import SEARCH_METRIC
    from doktra_tune.plan.schema import PAUSING_PRUNERS
    from doktra_tune.search.pruning import pruned_trial_ids
    from doktra_tune.search.search_algorithms import build_search
    from doktra_tune.search_space import SearchSpace
    from trainables.abd import abd_trainable
    from trainables.student import student_trainable

    if replay is not None:
        trainable, base = tune.with_parameters(replayed_trainable, curves=replay, epoch_s=replay_epoch_s), None
    elif prep is None:
        trainable, base = simulated_trainable, None
    elif stage == "abd":
        base = DistillConfig(
            data=prep["data"], model=prep["student"], teacher_checkpoint=prep["teacher"],
            output_dir="", epochs=epochs, **prep["common"],
        )
        trainable = abd_trainable
    else:
        base = StageConfig(
            data=prep["data"], model=prep["student_model"], output_dir="", epochs=epochs, **prep["common"],
        )
        trainable = student_trainable
    space = SearchSpace(stage=stage, params=grid, fixed={"epochs": epochs})
    searcher, scheduler, n = build_search(
        space, mode=mode, num_samples=num_samples, pruner=pruner, max_t=epochs, seed=seed,
        metric="dev_f1" if prep is None and replay is None else SEARCH_METRIC,  # as the driver
        grace_period=grace_period, n_startup_trials=n_startup_trials, reduction_factor=reduction_factor,
    )
    if pruner in PAUSING_PRUNERS and base is not None:
        base = dataclasses.replace(base, save_training_state=True)  # paused trials resume from their checkpoint
    tuner = tune.Tuner(
        tune.with_resources(
            trainable if base is None else tune.with_parameters(trainable, base=base, tracking=None),
            {"cpu": 1},
        ),
        param_space=dict(space.fixed),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=n,
                                    max_concurrent_trials=None if pruner in PAUSING_PRUNERS else 2,
                                    **RAY_SETTINGS.tune_config_kwargs()),
        run_config=tune.RunConfig(
            name=label, storage_path=str(storage),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="dev_f1", checkpoint_score_order="max"),
            **RAY_SETTINGS.run_config_kwargs(),
        ),
    )
    t0 = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - t0
    pruned = pruned_trial_ids(scheduler)
    trials = []
    for r in results:
        df = r.metrics_dataframe
        f1s = list(df["dev_f1"]) if df is not None and "dev_f1" in df else [r.metrics.get("dev_f1")]
        curve = []
        if df is not None and "dev_f1" in df:
            cols = [c for c in ("training_iteration", "dev_f1", "dev_loss", SEARCH_METRIC) if c in df]
            curve = df[cols].to_dict("records")
        trials.append({
            "trial_id": r.metrics["trial_id"],
            "curve": curve,
            "params": {k: r.config[k] for k in grid},
            "epochs": int(r.metrics.get("training_iteration", 0)),
            "best_f1": max(f for f in f1s if f is not None),
            "pruned": r.metrics["trial_id"] in pruned,
            "error": r.error is not None,
        })
    eligible = [t for t in trials if not t["pruned"] and not t["error"]]
    winner = max(eligible, key=lambda t: t["best_f1"])
    return {
        "label": label, "trials": trials, "wall_s": wall, "n_trials": len(trials),
        "n_pruned": sum(t["pruned"] for t in trials),
        "epochs_spent": sum(t["epochs"] for t in trials), "winner": winner,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["abd", "student"], default="abd")
    parser.add_argument("--pruner", default="successive_halving",
                        choices=["median", "successive_halving", "synchronous_halving", "hyperband", "asha"])
    parser.add_argument("--mode", choices=["grid", "tpe"], default="grid",
                        help="the pruned search's sampler (the baseline is always the full grid)")
    parser.add_argument("--num-samples", type=int, default=None, help="tpe budget")
    parser.add_argument("--grace-period", type=int, default=1)
    parser.add_argument("--n-startup-trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="default: abd 10, student 6")
    parser.add_argument("--quick", action="store_true", help="8-point grid, 4 epochs")
    parser.add_argument("--simulate", action="store_true",
                        help="synthetic learning curves instead of training (real Ray + pruners)")
    parser.add_argument("--student-model", default="random:bert:L2-H128")
    parser.add_argument("--train-limit", type=int, default=400)
    parser.add_argument("--dev-limit", type=int, default=200)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/doktra_bench_pruned"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--grid-json", type=Path, default=None,
                        help="reuse the grid figures of an earlier --json run (same settings)")
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--replay", action="store_true",
                        help="with --grid-json: replay its recorded curves through the pruned "
                             "search (real Ray and pruners, no training) to try a pruner setting")
    parser.add_argument("--replay-epoch-s", type=float, default=0.3)
    args = parser.parse_args()
    if args.replay and not args.grid_json:
        parser.error("--replay needs --grid-json (a grid run's figures with per-epoch curves)")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from doktra_tune.cluster.ray_session import RAY_SETTINGS

    RAY_SETTINGS.apply_env()
    import ray
    import torch

    torch.set_num_threads(1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    prep = None if args.simulate or args.replay else prepare(args.workdir, args)
    grid = (QUICK_GRIDS if args.quick else GRIDS)[args.stage]
    if args.simulate and args.stage == "abd" and not args.quick:
        grid = {"lr": [1e-4, 3e-4, 1e-3], "beta": [0.0, 0.3, 0.5, 0.7], "gamma": [0.6, 0.7, 0.8, 0.9]}
    epochs = args.epochs or (4 if args.quick else (10 if args.stage == "abd" else 6))
    storage = args.workdir / "ray"
    shutil.rmtree(storage, ignore_errors=True)
    ray.init(**RAY_SETTINGS.init_kwargs(num_cpus=2))
    common = dict(grace_period=args.grace_period, n_startup_trials=args.n_startup_trials,
                  seed=args.seed, reduction_factor=args.reduction_factor)
    replay = None
    if args.grid_json:  # the grid is deterministic: reuse an earlier run's figures
        full = json.loads(args.grid_json.read_text())["grid"]
        if args.replay:
            replay = {_point_key(t["params"]): t["curve"] for t in full["trials"]}
    else:
        full = run_search("grid", args.stage, prep, grid, epochs, storage,
                          mode="grid", num_samples=None, pruner="none", **common)
    pruned = run_search("pruned", args.stage, prep, grid, epochs, storage,
                        mode=args.mode, num_samples=args.num_samples, pruner=args.pruner,
                        replay=replay, replay_epoch_s=args.replay_epoch_s, **common)
    ray.shutdown()

    kind = "SIMULATED " if args.simulate else ("REPLAYED " if args.replay else "")
    print(f"\n{kind}stage {args.stage}: grid {json.dumps(grid)}, {epochs} epochs per trial; "
          f"pruned search = mode {args.mode}, pruner {args.pruner}, grace {args.grace_period}, "
          f"reduction factor {args.reduction_factor}, startup trials {args.n_startup_trials}")
    for run in (full, pruned):
        w = run["winner"]
        print(f"{run['label']:>6}: {run['n_trials']} trials ({run['n_pruned']} pruned), "
              f"{run['epochs_spent']} epoch-units, {run['wall_s']:.0f} s wall; "
              f"winner {w['params']} dev F1 {100 * w['best_f1']:.2f}")
    share = pruned["epochs_spent"] / full["epochs_spent"]
    gap = 100 * (full["winner"]["best_f1"] - pruned["winner"]["best_f1"])
    ok = share <= 0.30 and gap <= 0.5
    print(f"pruned/grid epochs: {100 * share:.1f} % (goal <= 30 %); "
          f"winner F1 gap: {gap:.2f} points (goal <= 0.5) -> {'MET' if ok else 'NOT MET'}")
    if args.json:
        args.json.write_text(json.dumps({"grid": full, "pruned": pruned, "share": share,
                                         "gap_points": gap}, indent=1, default=str))


if __name__ == "__main__":
    main()
