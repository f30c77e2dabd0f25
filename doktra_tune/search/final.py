"""The final runs (paper §4.2: "All experiments were repeated three times with different random
seeds"): the run specs of every (variant x seed), and the summary over seeds of their scores."""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from doktra_tune.search.trials import TrialRecord

RUN_KEYS = ("variant", "seed")  # what identifies a final run spec
_NOT_HYPERPARAMETERS = ("variant", "run", "seed")


def hyperparameters(params: dict[str, Any]) -> dict[str, Any]:
    """A winner's params without the run bookkeeping keys."""
    return {k: v for k, v in params.items() if k not in _NOT_HYPERPARAMETERS}


def final_specs(
    ctt: dict[str, Any], student: dict[str, Any], abd: dict[str, Any], *,
    variants: Sequence[str], seeds: Sequence[int], eval_splits: Sequence[str],
) -> list[dict[str, Any]]:
    """The (variant x seed) run specs of the final runs, each a `run` dict for final_trainable:
    `stage` names the stage function, the rest overrides the stage's base config."""
    hp = {"ctt": hyperparameters(ctt["params"]), "student": hyperparameters(student["params"]),
          "abd": hyperparameters(abd["params"])}
    baseline = (ctt.get("baseline") or {}).get("checkpoint")
    common = {"eval_splits": list(eval_splits), "eval_every_epoch": False}  # test once, at the end
    per_variant: dict[str, dict[str, Any]] = {
        "teacher_ctt": {"stage": "ctt", **hp["ctt"]},
        "teacher_ft": {"stage": "ctt", **hp["ctt"], "beta": 0.0},
        "student_ft": {"stage": "student", **hp["student"], "epochs": int(student["best_epoch"])},
        "student_ft_cpl": {"stage": "student", **hp["student"], "epochs": int(student["best_epoch"]),
                           "beta": float(ctt["params"].get("beta", 0.0))},
        "doktra": {"stage": "abd", **hp["abd"], "teacher_checkpoint": ctt["checkpoint"]},
        "doktra_no_ctt": {"stage": "abd", **hp["abd"], "teacher_checkpoint": baseline},
        "kld": {"stage": "abd", **hp["abd"], "distill_loss": "kld", "teacher_checkpoint": baseline},
        "ctt_kld": {"stage": "abd", **hp["abd"], "distill_loss": "kld", "teacher_checkpoint": ctt["checkpoint"]},
    }
    return [{**per_variant[variant], **common, "variant": variant, "seed": int(seed)}
            for variant in variants for seed in seeds]


def final_runs(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One entry of results.json per final trial: variant, seed, status and its scores."""
    runs = []
    for r in records:
        run = r.params
        metrics = {k: v for k, v in r.last_metrics.items()
                   if k.startswith(("dev_", "test_")) or k in ("epoch", "train_loss")}
        runs.append({
            "variant": run.get("variant"), "seed": run.get("seed"), "stage": run.get("stage"),
            "trial_id": r.trial_id, "status": r.status, "node_id": r.node_id, "error": r.error,
            "metrics": metrics, "params": {k: v for k, v in run.items() if k not in ("variant", "seed", "stage")},
        })
    return runs


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and (sample) standard deviation over seeds of each final variant's metrics."""
    out: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        ok = [r for r in runs if r["variant"] == variant and r["status"] == "completed"]
        entry: dict[str, Any] = {
            "n": len(ok), "errored": sum(1 for r in runs if r["variant"] == variant and r["status"] == "errored"),
        }
        keys = sorted({k for r in ok for k in r["metrics"] if k.startswith(("dev_", "test_"))})
        for key in keys:
            vals = [float(r["metrics"][key]) for r in ok if isinstance(r["metrics"].get(key), (int, float))]
            if vals:
                entry[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        out[str(variant)] = entry
    return out
