"""The final runs (§4.2: "All experiments were repeated three times with different random seeds"):
the teachers and students, and the distillations from them, each distillation starting as soon as
its teacher and student exist (`dependent_runs.DependentRuns`).

`final.protocol`:
* `chain` (default): every (fold, seed) re-trains the teacher (β₁ winner, and β₁ = 0), the student
  (lr₁, e₁ winner) and then distils (lr₂, β₂, γ winner) from *that* teacher into *that* student, so
  each row of the tables — teacher, student, DoKTra — is a model the DoKTra row actually used, and
  Table 5's teacher ECE is of the very teachers distilled from.
* `winners`: the search's own teacher and student (trained with `train.seed`) are scored once
  (wave 1 evaluates them) and every distillation seed starts from them; only the distillation
  (and the student_ft_cpl ablation) varies with the seed.

GAD (`final.folds`): the chain runs on each of BioBERT's ten folds (Table 2 reports the mean over
folds and seeds); the search itself ran on one fold, as Table 4 does.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from doktra_tune.search.trials import TrialRecord

RUN_KEYS = ("variant", "seed", "fold")  # what identifies a final run spec
TEACHERS = ("teacher_ctt", "teacher_ft")
# distillation variant -> (the teacher it distils from, its distillation loss); Table 5 / Table 6
DISTILLATIONS = {
    "doktra": ("teacher_ctt", "abd"),
    "doktra_no_ctt": ("teacher_ft", "abd"),
    "kld": ("teacher_ft", "kld"),
    "ctt_kld": ("teacher_ctt", "kld"),
}
SEED_RERUN = "seed re-run"
SEARCH_WINNER = "search winner"
_NOT_HYPERPARAMETERS = ("variant", "run", "seed")



def hyperparameters(params: dict[str, Any]) -> dict[str, Any]:
    """A winner's params without the run bookkeeping keys."""
    return {k: v for k, v in params.items() if k not in _NOT_HYPERPARAMETERS}


def model_name(variant: str, seed: int, fold: int | None) -> str:
    """`teacher_ctt-seed2` / `student_ft-seed1-fold3`: the name of a final model (dirs, tags)."""
    return f"{variant}-seed{seed}" + (f"-fold{fold}" if fold is not None else "")


@dataclass(frozen=True)
class FinalPlan:
    """The final runs of a finished search: which, with which hyperparameters, from which models."""

    winners: dict[str, dict[str, Any]]  # stage -> winner.json content (ctt with its "baseline")
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    folds: tuple[int, ...] | None
    eval_splits: tuple[str, ...]
    protocol: str  # chain | winners
    every_epoch: bool  # search.handoff=best_epoch: score test every epoch, report the best dev epoch
    search_seed: int  # train.seed: the seed the search's own models were trained with

    @property
    def distillations(self) -> list[str]:
        return [v for v in self.variants if v in DISTILLATIONS]

    def _folds(self) -> list[int | None]:
        return list(self.folds) if self.folds else [None]

    def _common(self, variant: str, seed: int, fold: int | None, origin: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"variant": variant, "seed": int(seed), "fold": fold, "origin": origin,
                                "eval_splits": list(self.eval_splits), "eval_every_epoch": self.every_epoch}
        if fold is not None:
            spec["data"] = {"data_format": f"gad_folds:{fold}"}
        return spec

    def _trained(self, variant: str) -> dict[str, Any]:
        """The stage and hyperparameters that (re-)train `variant` (wave 1)."""
        ctt, student = self.winners["ctt"], self.winners["student"]
        hp_ctt, hp_student = hyperparameters(ctt["params"]), hyperparameters(student["params"])
        e1 = int(student["e1"])
        return {
            "teacher_ctt": {"stage": "ctt", **hp_ctt},
            "teacher_ft": {"stage": "ctt", **hp_ctt, "beta": 0.0},
            "student_ft": {"stage": "student", **hp_student, "epochs": e1},
            "student_ft_cpl": {"stage": "student", **hp_student, "epochs": e1, "beta": float(ctt["params"].get("beta", 0.0))},
        }[variant]

    def wave1_variants(self) -> list[str]:
        """The teachers and students to train or score: those asked for and those a distillation needs."""
        needed = set(self.variants)
        for variant in self.distillations:
            needed |= {DISTILLATIONS[variant][0], "student_ft"}
        return [v for v in ("teacher_ctt", "teacher_ft", "student_ft", "student_ft_cpl") if v in needed]

    def wave1(self) -> list[dict[str, Any]]:
        """The teachers and students: chain: every (fold, seed) trains them, publishing the models a
        distillation reads (`publish`: its model name); winners: the search's teacher, β₁ = 0
        teacher and student are scored once (student_ft_cpl is trained per seed)."""
        specs: list[dict[str, Any]] = []
        read = {DISTILLATIONS[v][0] for v in self.distillations} | ({"student_ft"} if self.distillations else set())
        for variant in self.wave1_variants():
            if self.protocol == "winners" and variant != "student_ft_cpl":
                checkpoint = self.search_model(variant)
                specs.append({**self._common(variant, self.search_seed, None, SEARCH_WINNER),
                              "stage": "evaluate", "model": checkpoint})
                continue
            for fold in self._folds():
                for seed in self.seeds:
                    spec = {**self._common(variant, seed, fold, SEED_RERUN), **self._trained(variant)}
                    if self.protocol == "chain" and variant in read:
                        spec["publish"] = model_name(variant, seed, fold)
                    specs.append(spec)
        return specs

    def runs(self, models_dir: str) -> list[dict[str, Any]]:
        """Every final run spec: the teachers and students, then the distillations, which read the
        chain's models by name under `models_dir` (`needs`), or the search's own (winners)."""
        specs = self.wave1()
        for spec in self._distillation_specs():
            teacher, student = spec.pop("_teacher_key"), spec.pop("_student_key")
            if self.protocol == "winners":
                spec.update(teacher_checkpoint=self.search_model(teacher[0]), model=self.search_model(student[0]))
            else:
                spec.update(teacher_checkpoint=f"{models_dir}/{spec['teacher']}", model=f"{models_dir}/{spec['student']}",
                            needs=[spec["teacher"], spec["student"]])
            specs.append(spec)
        return specs

    def search_model(self, variant: str) -> str:
        """The search's own checkpoint of a wave-1 variant (the winners protocol)."""
        if variant == "teacher_ctt":
            return str(self.winners["ctt"]["checkpoint"])
        if variant == "teacher_ft":
            return str(self.winners["ctt"]["baseline"]["checkpoint"])
        return str(self.winners["student"]["checkpoint"])

    def _distillation_specs(self) -> list[dict[str, Any]]:
        """Every distillation variant x fold x seed: its hyperparameters, loss, and which teacher and
        student (by model name) it starts from."""
        hp_abd = hyperparameters(self.winners["abd"]["params"])
        specs = []
        for variant in self.distillations:
            teacher, loss = DISTILLATIONS[variant]
            for fold in self._folds():
                for seed in self.seeds:
                    source_seed = seed if self.protocol == "chain" else self.search_seed
                    source_fold = fold if self.protocol == "chain" else None
                    t_key, s_key = (teacher, source_seed, source_fold), ("student_ft", source_seed, source_fold)
                    specs.append({**self._common(variant, seed, fold, SEED_RERUN), "stage": "abd", **hp_abd,
                                  "distill_loss": loss, "teacher": model_name(*t_key), "student": model_name(*s_key),
                                  "_teacher_key": t_key, "_student_key": s_key})
        return specs


def final_runs(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One entry of results.json per final trial: what it is, its status and its scores (at the
    epoch whose model it is: the last, or the best dev epoch with search.handoff=best_epoch)."""
    runs = []
    for r in records:
        run = r.params
        metrics = {k: v for k, v in r.kept_metrics.items()
                   if k.startswith(("dev_", "test_")) or k in ("epoch", "train_loss")}
        runs.append({
            "variant": run.get("variant"), "seed": run.get("seed"), "fold": run.get("fold"),
            "stage": run.get("stage"), "origin": run.get("origin"), "teacher": run.get("teacher"),
            "student": run.get("student"), "trial_id": r.trial_id, "status": r.status, "node_id": r.node_id,
            "error": r.error, "metrics": metrics,
            "params": {k: v for k, v in run.items()
                       if k not in ("variant", "seed", "fold", "stage", "origin", "teacher", "student", "publish", "needs")},
        })
    return runs


def missing_runs(specs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """results.json entries for distillations that could not run (their teacher or student failed)."""
    return [{"variant": s["variant"], "seed": s["seed"], "fold": s.get("fold"), "stage": "abd", "origin": s["origin"],
             "teacher": s["teacher"], "student": s["student"], "trial_id": "", "status": "errored", "node_id": "",
             "error": f"not run: its teacher {s['teacher']} or student {s['student']} failed in wave 1",
             "metrics": {}, "params": {}} for s in specs]


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and (sample) standard deviation over seeds (and GAD folds) of each variant's metrics."""
    out: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        ok = [r for r in runs if r["variant"] == variant and r["status"] == "completed"]
        entry: dict[str, Any] = {
            "n": len(ok), "errored": sum(1 for r in runs if r["variant"] == variant and r["status"] == "errored"),
            "origin": next((r.get("origin") for r in ok), None),
        }
        keys = sorted({k for r in ok for k in r["metrics"] if k.startswith(("dev_", "test_"))})
        for key in keys:
            vals = [float(r["metrics"][key]) for r in ok if isinstance(r["metrics"].get(key), (int, float))]
            if vals:
                entry[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        out[str(variant)] = entry
    return out
