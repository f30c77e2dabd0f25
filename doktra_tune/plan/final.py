"""The final runs (§4.2: "All experiments were repeated three times with different random seeds"):
the teachers and students, and the distillations from them, each distillation starting as soon as
its teacher and student exist (`dependent_runs.DependentRuns`).

`final.protocol`:
* `shared_models` (default): the teacher (β₁ winner, and β₁ = 0) and student (lr₁, e₁ winner) rows
  are seed re-runs, one per (fold, seed), as in chain; every distillation seed of a fold distils
  (lr₂, β₂, γ winner) from the teacher and starts from the student of the FIRST seed of
  `final.seeds` (same fold), read by name. Table 2's DoKTra ± is smaller than its teacher's and
  student's in 9 of 10 cells, as when only the distillation's seed varies; the authors' README
  commands pass one fixed --init_checkpoint_teacher / --init_checkpoint with a --random_seed. With
  one seed it is chain.
* `chain`: every (fold, seed) re-trains the teacher and the student and then distils from *that*
  teacher into *that* student, so each row of the tables — teacher, student, DoKTra — is a model the
  DoKTra row of the same seed actually used, and Table 5's teacher ECE is of the very teachers
  distilled from.
* `winners`: the search's own teacher and student (trained with `train.seed`) are scored once
  (wave 1 evaluates them) and every distillation seed starts from them; only the distillation
  (and the student_ft_cpl ablation) varies with the seed.

No run is trained twice: when β₁ = 0 wins CTT (the paper's HoC, Table A1) teacher_ft has
teacher_ctt's very hyperparameters, so seed for seed it is the same run, and so are doktra_no_ctt
and doktra, kld and ctt_kld, student_ft_cpl and student_ft (`FinalPlan.aliases`). Each is trained
once; its run's `also` label names the variants it stands for, and results.json and the tables
give those variants the same rows (`same_as`).

GAD (`final.folds`): the seed re-runs run on each of BioBERT's ten folds with the search's dev mode
(`gad_folds:<k>:test|carve`); the search itself ran on one fold, as Table 4 does. Table 2's GAD cell
is the mean over folds and seeds, its ± the spread over seeds (§4.2: "repeated three times with
different random seeds ... standard deviations"): `final.gad_std=over_seeds` averages each seed's
folds first and takes the sample std of those seed means (`over_runs`: the std over every fold x
seed run, which mixes the spread between the ten test sets into it).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Any, Sequence

from doktra_tune.data import gad_fold_format
from doktra_tune.plan.schema import GAD_STD
from doktra_tune.run_spec import LABEL_TAGS, RunSpec
from doktra_tune.trial_record import TrialRecord

RUN_KEYS = ("variant", "seed", "fold")  # what identifies a final run spec
TEACHERS = ("teacher_ctt", "teacher_ft")
BASELINE_VARIANTS = ("doktra_no_ctt", "kld", "teacher_ft")  # the variants that need the β₁ = 0 teacher
# distillation variant -> (the teacher it distils from, its distillation loss); Table 5 / Table 6
DISTILLATIONS = {
    "doktra": ("teacher_ctt", "abd"),
    "doktra_no_ctt": ("teacher_ft", "abd"),
    "kld": ("teacher_ft", "kld"),
    "ctt_kld": ("teacher_ctt", "kld"),
}
WAVE1 = ("teacher_ctt", "teacher_ft", "student_ft", "student_ft_cpl")
SEED_RERUN = "seed re-run"
SEARCH_WINNER = "search winner"
_NOT_HYPERPARAMETERS = ("variant", "run", "seed")
# results.json: a final run's own columns, apart from its `params` (the rest of its record)
_NOT_PARAMS = (*LABEL_TAGS, "seed", "stage", "publish", "needs")


def hyperparameters(params: dict[str, Any]) -> dict[str, Any]:
    """A winner's params without the run bookkeeping keys."""
    return {k: v for k, v in params.items() if k not in _NOT_HYPERPARAMETERS}


def model_name(variant: str, seed: int, fold: int | None) -> str:
    """`teacher_ctt-seed2` / `student_ft-seed1-fold3`: the name of a final model (dirs, tags)."""
    return f"{variant}-seed{seed}" + (f"-fold{fold}" if fold is not None else "")


def also_of(value: Any) -> list[str]:
    """The variants of an `also` label (`teacher_ft,doktra_no_ctt`: comma-separated) as a list."""
    return [v for v in str(value or "").split(",") if v]


def alias_words(aliases: dict[str, str]) -> str:
    """`teacher_ft = teacher_ctt, doktra_no_ctt = doktra`: `FinalPlan.aliases` in words."""
    return ", ".join(f"{variant} = {target}" for variant, target in aliases.items())


@dataclass(frozen=True)
class FinalPlan:
    """The final runs of a finished search: which, with which hyperparameters, from which models."""

    winners: dict[str, dict[str, Any]]  # stage -> winner.json content (ctt with its "baseline")
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    folds: tuple[int, ...] | None
    eval_splits: tuple[str, ...]
    protocol: str  # shared_models | chain | winners
    every_epoch: bool  # search.handoff=best_epoch: score test every epoch, report the best dev epoch
    search_seed: int  # train.seed: the seed the search's own models were trained with
    data_format: str | None = None  # the search's task.data_format (GAD: its dev mode, kept on every fold)
    dedupe: bool = True  # train a run that several variants are (β₁ = 0 won CTT) once; False: once per variant

    @property
    def distillations(self) -> list[str]:
        return [v for v in self.variants if v in DISTILLATIONS]

    def _folds(self) -> list[int | None]:
        return list(self.folds) if self.folds else [None]

    @property
    def beta1(self) -> float:
        """CTT's winning β₁ (a winner without beta trained with StageConfig's default, 0)."""
        return float(self.winners["ctt"]["params"].get("beta", 0.0))

    def _same_teachers(self) -> bool:
        """Whether teacher_ft is teacher_ctt: β₁ = 0 won CTT (seed re-runs of the same hyperparameters);
        winners: the β₁ = 0 teacher the search picked is the very trial that won CTT."""
        ctt = self.winners["ctt"]
        if self.protocol == "winners":
            baseline, trial = (ctt.get("baseline") or {}).get("trial_id"), ctt.get("trial_id")
            return baseline is not None and trial is not None and baseline == trial
        return self.beta1 == 0.0

    def aliases(self) -> dict[str, str]:
        """variant -> the variant whose runs it is, trained once for both: with β₁ = 0 (the paper's
        HoC, Table A1) teacher_ft = teacher_ctt and student_ft_cpl = student_ft (Table 6's CPL with
        β = 0 is plain fine-tuning; not under winners, where student_ft is the search's own model),
        and then each distillation from teacher_ft = the same loss's from teacher_ctt. Only variants
        that are themselves run are aliased to; empty with `dedupe=False`."""
        if not self.dedupe:
            return {}
        wave1 = self.wave1_variants()
        same: dict[str, str] = {}
        if self._same_teachers() and {"teacher_ctt", "teacher_ft"} <= set(wave1):
            same["teacher_ft"] = "teacher_ctt"
        student_beta = float(self.winners["student"]["params"].get("beta", 0.0))
        if (self.protocol != "winners" and self.beta1 == student_beta == 0.0
                and {"student_ft", "student_ft_cpl"} <= set(wave1)):
            same["student_ft_cpl"] = "student_ft"
        for variant in self.distillations:
            teacher, loss = DISTILLATIONS[variant]
            if teacher in same:
                target = next((d for d in self.distillations if DISTILLATIONS[d] == (same[teacher], loss)), None)
                if target is not None:
                    same[variant] = target
        return same

    def saved_runs(self, models_dir: str = "<final models>") -> int:
        """How many runs `aliases` saves: the runs with every variant trained on its own, less these."""
        return len(replace(self, dedupe=False).runs(models_dir)) - len(self.runs(models_dir))

    def same_note(self) -> str:
        """`; β₁ = 0 won CTT: teacher_ft = teacher_ctt, doktra_no_ctt = doktra, each trained once (6 runs
        fewer)`: what `aliases` saves, for the driver's start line; empty without aliases."""
        aliases = self.aliases()
        if not aliases:
            return ""
        saved = self.saved_runs()
        return f"; β₁ = 0 won CTT: {alias_words(aliases)}, each trained once ({saved} run{'s' if saved != 1 else ''} fewer)"

    def _labels(self, variant: str, fold: int | None, origin: str) -> dict[str, Any]:
        """What a run is; `also`: the variants it stands for too (comma-separated; `aliases`)."""
        also = ",".join(v for v, target in self.aliases().items() if target == variant)
        return {"variant": variant, "fold": fold, "origin": origin, **({"also": also} if also else {})}

    def _common(self, seed: int, fold: int | None) -> dict[str, Any]:
        """The overrides every final run has: its seed, the splits it is scored on, its GAD fold."""
        overrides: dict[str, Any] = {"seed": int(seed), "eval_splits": list(self.eval_splits),
                                     "eval_every_epoch": self.every_epoch}
        if fold is not None:
            overrides["data"] = {"data_format": gad_fold_format(self.data_format, fold)}
        return overrides

    def _trained(self, variant: str) -> tuple[str, dict[str, Any]]:
        """The stage and hyperparameters that (re-)train `variant` (wave 1)."""
        ctt, student = self.winners["ctt"], self.winners["student"]
        hp_ctt, hp_student = hyperparameters(ctt["params"]), hyperparameters(student["params"])
        e1 = int(student["e1"])
        return {
            "teacher_ctt": ("ctt", hp_ctt),
            "teacher_ft": ("ctt", {**hp_ctt, "beta": 0.0}),
            "student_ft": ("student", {**hp_student, "epochs": e1}),
            "student_ft_cpl": ("student", {**hp_student, "epochs": e1, "beta": self.beta1}),
        }[variant]

    def wave1_variants(self) -> list[str]:
        """The teachers and students to train or score: those asked for and those a distillation needs."""
        needed = set(self.variants)
        for variant in self.distillations:
            needed |= {DISTILLATIONS[variant][0], "student_ft"}
        return [v for v in WAVE1 if v in needed]

    def _teacher_of(self, distillation: str) -> str:
        """The variant whose models a distillation reads as its teacher (an aliased teacher's target)."""
        teacher = DISTILLATIONS[distillation][0]
        return self.aliases().get(teacher, teacher)

    def _source_seed(self, seed: int) -> int:
        """The seed of the teacher and student a distillation of `seed` reads: its own (chain), the
        first of final.seeds (shared_models)."""
        return self.seeds[0] if self.protocol == "shared_models" else seed

    def wave1(self) -> list[RunSpec]:
        """The teachers and students: chain / shared_models: every (fold, seed) trains them, publishing
        the models a distillation reads (`publish`: its model name; shared_models: the first seed's);
        winners: the search's teacher, β₁ = 0 teacher and student are scored once (student_ft_cpl is
        trained per seed). A variant that is another's runs (`aliases`) is not run."""
        specs: list[RunSpec] = []
        aliases = self.aliases()
        read = {self._teacher_of(v) for v in self.distillations} | ({"student_ft"} if self.distillations else set())
        for variant in self.wave1_variants():
            if variant in aliases:
                continue
            if self.protocol == "winners" and variant != "student_ft_cpl":
                specs.append(RunSpec("evaluate", {**self._common(self.search_seed, None), "model": self.search_model(variant)},
                                     self._labels(variant, None, SEARCH_WINNER)))
                continue
            stage, hp = self._trained(variant)
            for fold in self._folds():
                for seed in self.seeds:
                    publish = (model_name(variant, seed, fold)
                               if self.protocol != "winners" and variant in read and self._source_seed(seed) == seed
                               else None)
                    specs.append(RunSpec(stage, {**self._common(seed, fold), **hp},
                                         self._labels(variant, fold, SEED_RERUN), publish=publish))
        return specs

    def runs(self, models_dir: str) -> list[RunSpec]:
        """Every final run: the teachers and students, then the distillations, which read the seed
        re-runs' models by name under `models_dir` (`needs`), or the search's own (winners)."""
        return self.wave1() + self._distillation_specs(models_dir)

    def search_model(self, variant: str) -> str:
        """The search's own checkpoint of a wave-1 variant (the winners protocol)."""
        if variant == "teacher_ctt":
            return str(self.winners["ctt"]["checkpoint"])
        if variant == "teacher_ft":
            return str(self.winners["ctt"]["baseline"]["checkpoint"])
        return str(self.winners["student"]["checkpoint"])

    def _distillation_specs(self, models_dir: str) -> list[RunSpec]:
        """Every distillation variant x fold x seed: its hyperparameters and loss, and the teacher and
        student it starts from: its seed's models (chain) or the first seed's (shared_models), by
        name, or the search's own (winners)."""
        hp_abd = hyperparameters(self.winners["abd"]["params"])
        aliases = self.aliases()
        specs = []
        for variant in self.distillations:
            if variant in aliases:
                continue
            teacher_variant, loss = self._teacher_of(variant), DISTILLATIONS[variant][1]
            for fold in self._folds():
                for seed in self.seeds:
                    labels = self._labels(variant, fold, SEED_RERUN)
                    overrides = {**self._common(seed, fold), **hp_abd, "distill_loss": loss}
                    if self.protocol == "winners":
                        teacher = model_name(teacher_variant, self.search_seed, None)
                        student = model_name("student_ft", self.search_seed, None)
                        overrides.update(teacher_checkpoint=self.search_model(teacher_variant),
                                         model=self.search_model("student_ft"))
                        needs: tuple[str, ...] = ()
                    else:
                        source = self._source_seed(seed)
                        teacher, student = model_name(teacher_variant, source, fold), model_name("student_ft", source, fold)
                        overrides.update(teacher_checkpoint=f"{models_dir}/{teacher}", model=f"{models_dir}/{student}")
                        needs = (teacher, student)
                    specs.append(RunSpec("abd", overrides, {**labels, "teacher": teacher, "student": student}, needs=needs))
        return specs


def with_aliases(entry: dict[str, Any], also: Any) -> list[dict[str, Any]]:
    """A results.json entry and one copy per variant its run also is (`also`): the copy's `variant`
    is the alias, `same_as` the variant that was trained, `trained` false."""
    names = also_of(also)
    own = {**entry, "also": names, "same_as": None}
    return [own, *({**entry, "variant": v, "also": [], "same_as": entry["variant"], "trained": False} for v in names)]


def final_runs(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One entry of results.json per final trial: what it is, its status and its scores (at the
    epoch whose model it is: the last, or the best dev epoch with search.handoff=best_epoch); and
    a copy for each variant the trial also is (`with_aliases`)."""
    runs = []
    for r in records:
        run = r.params
        metrics = {k: v for k, v in r.kept_metrics.items()
                   if k.startswith(("dev_", "test_")) or k in ("epoch", "train_loss")}
        runs += with_aliases({
            "variant": run.get("variant"), "seed": run.get("seed"), "fold": run.get("fold"),
            "stage": run.get("stage"), "origin": run.get("origin"), "teacher": run.get("teacher"),
            "student": run.get("student"), "trial_id": r.trial_id, "status": r.status, "node_id": r.node_id,
            "error": r.error, "metrics": metrics, "trained": True,
            "params": {k: v for k, v in run.items() if k not in _NOT_PARAMS},
        }, run.get("also"))
    return runs


def missing_runs(specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """results.json entries for distillations that could not run (their teacher or student failed)."""
    rows = []
    for spec in specs:
        labels = spec.labels
        rows += with_aliases({
            "variant": labels["variant"], "seed": spec.overrides["seed"], "fold": labels.get("fold"),
            "stage": "abd", "origin": labels["origin"], "teacher": labels["teacher"], "student": labels["student"],
            "trial_id": "", "status": "errored", "node_id": "",
            "error": f"not run: its teacher {labels['teacher']} or student {labels['student']} failed in wave 1",
            "metrics": {}, "trained": False, "params": {}}, labels.get("also"))
    return rows


def summarize(runs: Sequence[dict[str, Any]], gad_std: str = GAD_STD[0]) -> dict[str, dict[str, Any]]:
    """Per variant, the mean and (sample) standard deviation of its metrics over its completed runs;
    runs on GAD folds (`gad_std=over_seeds`, the paper's): each seed's mean over its folds first, the
    mean and std over those seed means (`over_runs`: over every fold x seed run). `std_over` says which;
    `same_as`: the variant whose runs these are (`FinalPlan.aliases`: the same numbers), else absent."""
    if gad_std not in GAD_STD:
        raise ValueError(f"gad_std={gad_std!r}: use one of {', '.join(GAD_STD)}")
    out: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        ok = [r for r in runs if r["variant"] == variant and r["status"] == "completed"]
        folded = any(r.get("fold") is not None for r in ok)
        entry: dict[str, Any] = {
            "n": len(ok), "errored": sum(1 for r in runs if r["variant"] == variant and r["status"] == "errored"),
            "origin": next((r.get("origin") for r in ok), None),
            "std_over": "seeds (fold means)" if folded and gad_std == "over_seeds" else "runs",
        }
        same = {r.get("same_as") for r in runs if r["variant"] == variant}
        if len(same) == 1 and None not in same:
            entry["same_as"] = same.pop()
        keys = sorted({k for r in ok for k in r["metrics"] if k.startswith(("dev_", "test_"))})
        for key in keys:
            scored = [r for r in ok if isinstance(r["metrics"].get(key), (int, float))]
            vals = [float(r["metrics"][key]) for r in scored]
            if folded and gad_std == "over_seeds":
                per_seed: dict[Any, list[float]] = {}
                for r, v in zip(scored, vals):
                    per_seed.setdefault(r.get("seed"), []).append(v)
                vals = [statistics.fmean(v) for v in per_seed.values()]
            if vals:
                entry[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        out[str(variant)] = entry
    return out
