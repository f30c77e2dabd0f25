"""A search's final (seed) runs as numbers: one row per run (`final_results`), mean ± std over
seeds per (variant, task) (`summarize`), and the cell text every table uses (`fmt`, `cell`).

Final runs are MLflow trial runs tagged `doktra.stage=final`, `doktra.variant`, `doktra.seed`,
with metrics `test_f1`, `test_ece`, `test_lat` (the last logged value). F1 and ECE are shown x100.
std is the sample std (ddof=1) over seeds; a single seed shows the mean alone. A run that stands for
other variants too (`doktra.also`: β₁ = 0 won CTT, so teacher_ft is teacher_ctt's runs, trained
once) is one row per variant, the copies with `same_as` = the variant trained. GAD's runs on its
ten folds (`doktra.fold`): with its search's `final.gad_std=over_seeds` (the paper's, §4.2: three
seeds, their std) each seed's folds are averaged first and the std is over those seed means; with
`over_runs` over every fold x seed run. Errored/pruned final runs are left out.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

from analysis.runs import search_configs, tag, trial_runs

FINANCIAL_TASKS = ("fpb", "fts")
TASK_ORDER = ("chemprot", "gad", "ddi", "i2b2", "hoc", "fpb", "fts")
TASK_NAMES = {"chemprot": "ChemProt", "gad": "GAD", "ddi": "DDI", "i2b2": "i2b2", "hoc": "HoC",
              "fpb": "FPB", "fts": "FTS"}
MISSING = "–"
_METRICS = ("test_f1", "test_ece", "test_lat", "test_macro_f1", "dev_lat_start", "dev_lat_switch")
GAD_STD_DEFAULT = "over_seeds"  # final.gad_std of a search that recorded none


def final_results(runs: pd.DataFrame) -> pd.DataFrame:
    """Long frame of final runs: task, variant, seed, fold, origin, teacher, test_f1, test_ece,
    test_lat, test_macro_f1, dev_lat_start, dev_lat_switch (ABD: dev L_AT before training and at the
    switch), student_model, teacher_model, gad_std (the search's final.gad_std), same_as (a copy of
    the run of that variant, `doktra.also`; None for a run of its own)."""
    final = trial_runs(runs, "final")
    columns = ["task", "variant", "seed", "fold", "origin", "teacher", *_METRICS, "student_model", "teacher_model",
               "gad_std", "same_as"]
    if final.empty:
        return pd.DataFrame(columns=columns)
    # a run counts once it has finished: Ray's `completed`, or (no outcome recorded) a test score;
    # a run killed with its driver, and re-run by the resume, has neither
    status = tag(final, "doktra.status").astype("string").fillna("")
    scored = final["metrics.test_f1"].notna() if "metrics.test_f1" in final else pd.Series(False, index=final.index)
    final = final[((status == "completed") | ((status == "") & scored)).to_numpy(dtype=bool)]
    out = pd.DataFrame(
        {
            "task": tag(final, "doktra.task"),
            "variant": tag(final, "doktra.variant"),
            "seed": tag(final, "doktra.seed"),
            "fold": tag(final, "doktra.fold"),
            "origin": tag(final, "doktra.origin"),
            "teacher": tag(final, "doktra.teacher"),
            "student_model": tag(final, "doktra.student_model"),
            "teacher_model": tag(final, "doktra.teacher_model"),
            "also": tag(final, "doktra.also"),
        }
    )
    for metric in _METRICS:
        column = f"metrics.{metric}"
        out[metric] = pd.to_numeric(final[column], errors="coerce") if column in final else np.nan
    rules = {task: (config.get("final") or {}).get("gad_std") or GAD_STD_DEFAULT
             for task, config in search_configs(runs).items()}
    out["gad_std"] = out["task"].map(lambda task: rules.get(task, GAD_STD_DEFAULT))
    return with_aliases(out)[columns].reset_index(drop=True)


def with_aliases(results: pd.DataFrame) -> pd.DataFrame:
    """`results` (column `also`: the comma-separated variants a run stands for too) with one copy of
    each such run per variant: `variant` the alias, `same_as` the variant trained."""
    own = results.assign(same_as=None)
    copies = [own.loc[[i]].assign(variant=alias, same_as=row["variant"])
              for i, row in own.iterrows() if isinstance(row["also"], str)
              for alias in row["also"].split(",") if alias]
    return pd.concat([own, *copies]) if copies else own


def summarize(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """mean, std (ddof=1; NaN for one value) and n (the values: runs, or GAD's seeds) per (variant, task),
    NaN values dropped. GAD's fold runs under gad_std over_seeds (the default): one value per seed,
    the mean over its folds."""
    valid = results.dropna(subset=[metric])
    folded = valid["fold"].notna() if "fold" in valid else pd.Series(False, index=valid.index)
    rule = valid["gad_std"] if "gad_std" in valid else pd.Series(GAD_STD_DEFAULT, index=valid.index)
    by_seed = (folded & (rule.fillna(GAD_STD_DEFAULT) == "over_seeds")).to_numpy(dtype=bool)
    seed_means = valid[by_seed].groupby(["variant", "task", "seed"], as_index=False)[metric].mean()
    values = pd.concat([valid.loc[~by_seed, ["variant", "task", metric]], seed_means[["variant", "task", metric]]])
    grouped = values.groupby(["variant", "task"])[metric]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()})


def fmt(mean: float | None, std: float | None = None, scale: float = 100.0, digits: int = 2) -> str:
    """`77.42 ± 0.04` (values x scale); the mean alone when std is NaN/None; `–` when missing."""
    if mean is None or not math.isfinite(mean):
        return MISSING
    text = f"{mean * scale:.{digits}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {std * scale:.{digits}f}"
    return text


def cell(stats: pd.DataFrame, variant: str, task: str, scale: float = 100.0) -> str:
    """`fmt` of the (variant, task) row of `summarize`'s frame; `–` when there is none."""
    if (variant, task) not in stats.index:
        return MISSING
    row = stats.loc[(variant, task)]
    return fmt(row["mean"], row["std"], scale)


def mean_of(stats: pd.DataFrame, variant: str, task: str) -> float:
    """The (variant, task) mean of `summarize`'s frame; NaN when there is none."""
    return float(stats.loc[(variant, task), "mean"]) if (variant, task) in stats.index else math.nan


def average(values: Iterable[float]) -> float:
    """The mean of the finite values (a table's Avg. column); NaN when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def percent(value: float) -> str:
    """`99.72%`; `–` when not finite."""
    return f"{value:.2f}%" if math.isfinite(value) else MISSING


def ordered_tasks(tasks: Iterable[str]) -> list[str]:
    """The tasks in the paper's column order, unknown ones after them by name."""
    tasks = {t for t in tasks if isinstance(t, str)}
    return [t for t in TASK_ORDER if t in tasks] + sorted(tasks - set(TASK_ORDER))


def student_model_of(results: pd.DataFrame) -> str | None:
    """The student model the final runs used (it picks the paper's ALBERT or RoBERTa rows)."""
    models = results["student_model"].dropna()
    return str(models.iloc[0]) if len(models) else None


def short_number(text: str) -> str:
    """A logged hyperparameter as the paper writes it: `3`, `1e-05`, `0.9`; non-numbers as they are."""
    try:
        value = float(text)
    except ValueError:
        return text
    return f"{int(value)}" if value.is_integer() and abs(value) >= 1 else f"{value:g}"
