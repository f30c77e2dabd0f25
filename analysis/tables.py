"""The paper's result tables (2, 5, 6, 7, A1-A3) and the CTT winner-rule table, built from the
final runs' numbers (`analysis.results`) and the stage runs' winners; `write_all_tables` writes every
table the runs support (`analysis.render`).

Which variant of ours a paper row measures is `paper_values.ROW_VARIANTS` (Tables 2, 7) and the
keys of `paper_values.TABLE6_CHEMPROT`, one mapping for every table. The paper's "BioBERT-ft
(teacher)" row (Tables 2 and 6 alike, 76.20 +/- 0.65 on ChemProt) is the teacher that is distilled
from, i.e. fine-tuned with its dev-tuned confidence penalty beta1 (Table A1; beta1 = 0 for HoC): the
teacher row and Retain % use variant `teacher_ctt` (Retain = Avg(student-DoKTra) / Avg(teacher) x
100, §4.3), falling back to `teacher_ft` when no `teacher_ctt` run exists; `teacher_ft` (beta1 = 0)
is shown as its own row, without a paper value, when present.

Every row says which models it measured (column "Which model", from the runs' `doktra.origin` tag):
the seed re-runs of `final.protocol=chain` (the teachers and students the DoKTra rows of the same
seeds distilled from and started from) or of `shared_models` (every DoKTra seed distilled from the
first seed's teacher into its student), or the search's own winners (`final.protocol=winners`).
A row whose runs are another variant's (β₁ = 0 won CTT: teacher_ft is teacher_ctt's runs, trained
once; column `same_as` of `final_results`) says so, and shows the same numbers.
Wherever the paper's numbers stand beside ours, the caption says what differs
(`analysis.caveats`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis import paper_values as paper
from analysis.render import write_table
from analysis.directions import directions
from analysis.results import (
    FINANCIAL_TASKS,
    MISSING,
    TASK_NAMES,
    average,
    cell,
    final_results,
    fmt,
    mean_of,
    ordered_tasks,
    percent,
    short_number,
    student_model_of,
    summarize,
)
from analysis.runs import stage_runs
from doktra_tune.selection import NoWinnerError, SelectionRule, select_winner

ABLATION_ROWS = (  # Table 6: label, our variant
    ("teacher-ft (CTT, tuned beta1)", "teacher_ctt"),  # the rows of Table 2, the same mapping
    ("teacher-ft (beta1 = 0)", "teacher_ft"),
    ("student-ft", "student_ft"),
    ("+KLD", "kld"),
    ("+CTT+KLD", "ctt_kld"),
    ("+ABD", "doktra_no_ctt"),
    ("+CTT+ABD (DoKTra)", "doktra"),
    ("student-ft+CPL", "student_ft_cpl"),
)
UNIMPROVED = ("teacher_ctt", "teacher_ft", "student_ft")  # Table 6 rows without an improvement


# --------------------------------------------------------------------------------------------
# Table 2 / Table 7


ROLES = {  # variant -> what the model is to the DoKTra rows
    "teacher_ctt": "the teacher DoKTra distilled from",
    "teacher_ft": "the teacher DoKTra−CTT distilled from",
    "student_ft": "the student DoKTra started from",
    "doktra": "distilled from the rows above",
}


SHARED_ROLES = {  # final.protocol=shared_models: every DoKTra seed read the first seed's models
    "teacher_ctt": "its first seed is the teacher every DoKTra seed distilled from",
    "teacher_ft": "its first seed is the teacher every DoKTra−CTT seed distilled from",
    "student_ft": "its first seed is the student every DoKTra seed started from",
}
_SEED = re.compile(r"-seed(\d+)(?:-|$)")


def shares_models(results: pd.DataFrame) -> bool:
    """Whether a distillation read another seed's teacher (`doktra.teacher`: final.protocol=shared_models)."""
    if "teacher" not in results:
        return False
    for seed, teacher in zip(results["seed"], results["teacher"]):
        match = _SEED.search(teacher) if isinstance(teacher, str) else None
        if match and str(seed) != match.group(1):
            return True
    return False


def which_model(results: pd.DataFrame, variant: str) -> str:
    """What the runs of a row are: seed re-runs (how many) or the search's winner, and their role;
    runs that are another variant's (`same_as`: β₁ = 0 won CTT, trained once) say whose."""
    rows = results[results["variant"] == variant]
    if rows.empty:
        return ""
    origins = set(rows["origin"].dropna())
    n = len(rows)
    folds = rows["fold"].dropna().nunique() if "fold" in rows else 0
    if origins == {"search winner"}:
        what = "search winner"
    elif origins == {"seed re-run"}:
        what = f"seed re-runs (n={n}{f', {folds} folds' if folds > 1 else ''})"
    else:
        what = f"n={n}"
    copies = rows[rows["same_as"].notna()] if "same_as" in rows else rows.iloc[0:0].assign(same_as=None)
    for target in dict.fromkeys(copies["same_as"]):
        same = f"= {target}'s runs (β₁ = 0 won CTT: trained once)"
        if len(copies) < n:  # some tasks only
            tasks = ordered_tasks(copies.loc[copies["same_as"] == target, "task"])
            same = f"{', '.join(TASK_NAMES.get(t, t) for t in tasks)}: {same}"
        what = f"{what}; {same}"
    shared = origins == {"seed re-run"} and variant in SHARED_ROLES and shares_models(results)
    role = SHARED_ROLES[variant] if shared else ROLES.get(variant)
    return f"{what}; {role}" if role else what


def _main_table(results: pd.DataFrame, tasks: Sequence[str], financial: bool) -> pd.DataFrame:
    stats = summarize(results, "test_f1")
    variants = set(results["variant"].dropna())
    teacher_row = paper.TEACHER_ROWS["financial" if financial else "biomedical"]
    teacher = paper.ROW_VARIANTS[teacher_row]  # the CTT teacher DoKTra distils from (paper_values)
    if teacher not in variants:
        teacher = "teacher_ft"
    rows: list[tuple[str, str]] = [("teacher-ft (CTT, tuned beta1)", "teacher_ctt")]
    if "teacher_ft" in variants or teacher == "teacher_ft":
        rows.append(("teacher-ft (beta1 = 0)", "teacher_ft"))
    rows += [("student-ft", "student_ft"), ("student-DoKTra", "doktra")]
    rows = [(label, v) for label, v in rows if v in variants]
    names = [TASK_NAMES.get(t, t) for t in tasks]
    macro = summarize(results, "test_macro_f1") if financial else None
    table = []
    teacher_avg = average(mean_of(stats, teacher, t) for t in tasks)
    for label, variant in rows:
        avg = average(mean_of(stats, variant, t) for t in tasks)
        retain = 100 * avg / teacher_avg if variant == "doktra" and teacher_avg else math.nan
        extra = [cell(macro, variant, t) for t in tasks] if macro is not None else []
        table.append([label, which_model(results, variant), *(cell(stats, variant, t) for t in tasks), fmt(avg),
                      percent(retain) if variant == "doktra" else "", *extra])
    # the paper's rows for the same tasks
    family = paper.student_family(student_model_of(results))
    source = paper.TABLE7 if financial else paper.TABLE2
    paper_rows = [teacher_row, f"{family}-ft (student)", f"{family}-DoKTra"]
    paper_teacher = average(source[teacher_row].get(t, (math.nan, None))[0] for t in tasks)
    if any(t in source[teacher_row] for t in tasks):
        for row in paper_rows:
            cells = [
                fmt(source[row][t][0], source[row][t][1], scale=1.0) if t in source[row] else MISSING
                for t in tasks
            ]
            avg = average(source[row].get(t, (math.nan, None))[0] for t in tasks)
            retain = percent(100 * avg / paper_teacher) if row.endswith("DoKTra") else ""
            table.append([f"paper: {row}", "paper (3 seeds)", *cells, fmt(avg, scale=1.0), retain,
                          *([MISSING] * len(tasks) if macro is not None else [])])
    macro_names = [f"{n} macro-F1" for n in names] if macro is not None else []
    return pd.DataFrame(table, columns=["Model", "Which model", *names, "Avg.", "Retain", *macro_names])


def table2(results: pd.DataFrame) -> pd.DataFrame:
    """Table 2: teacher-ft, student-ft, student-DoKTra test F1 per biomedical/clinical task,
    Avg. and Retain %, next to the paper's rows (ALBERT or RoBERTa by the student model)."""
    tasks = ordered_tasks(t for t in results["task"].unique() if t not in FINANCIAL_TASKS)
    return _main_table(results[results["task"].isin(tasks)], tasks, financial=False)


def table7(results: pd.DataFrame) -> pd.DataFrame:
    """Table 7: the same for the financial tasks (FPB, FTS): F1 is the authors' micro-F1 over the
    three classes (= accuracy), with macro-F1 as extra columns."""
    tasks = ordered_tasks(t for t in results["task"].unique() if t in FINANCIAL_TASKS)
    return _main_table(results[results["task"].isin(tasks)], tasks, financial=True)


# --------------------------------------------------------------------------------------------
# Table 5 / Table 6


def table5(results: pd.DataFrame) -> pd.DataFrame:
    """Table 5: test F1 and L_AT (Eq. 4) of DoKTra without CTT (`doktra_no_ctt`) vs with CTT
    (`doktra`), plus the test ECE and F1 of the two teachers they distilled from (beta1 = 0 vs CTT)
    and the paper's values."""
    f1 = summarize(results, "test_f1")
    lat = summarize(results, "test_lat")
    ece = summarize(results, "test_ece")
    rows = []  # the teacher columns are the very teachers the DoKTra rows distilled from (final.protocol)
    for task in ordered_tasks(results["task"].unique()):
        p = paper.TABLE5.get(task)
        rows.append(
            [
                TASK_NAMES.get(task, task),
                cell(f1, "doktra_no_ctt", task),
                cell(lat, "doktra_no_ctt", task, scale=1.0),
                cell(f1, "doktra", task),
                cell(lat, "doktra", task, scale=1.0),
                cell(ece, "teacher_ft", task),
                cell(ece, "teacher_ctt", task),
                cell(f1, "teacher_ft", task),
                cell(f1, "teacher_ctt", task),
                fmt(p["no_ctt"][0], p["no_ctt"][1], 1.0) if p else MISSING,
                fmt(p["no_ctt"][2], None, 1.0) if p else MISSING,
                fmt(p["ctt"][0], p["ctt"][1], 1.0) if p else MISSING,
                fmt(p["ctt"][2], None, 1.0) if p else MISSING,
            ]
        )
    return pd.DataFrame(
        rows,
        columns=["Task", "DoKTra−CTT F1", "DoKTra−CTT L_AT", "DoKTra F1", "DoKTra L_AT",
                 "teacher ECE (beta1 = 0)", "teacher ECE (CTT)", "teacher F1 (beta1 = 0)", "teacher F1 (CTT)",
                 "paper DoKTra−CTT F1",
                 "paper DoKTra−CTT L_AT", "paper DoKTra F1", "paper DoKTra L_AT"],
    )


def table6(results: pd.DataFrame) -> pd.DataFrame | None:
    """Table 6 ablation (test F1, improvement over student-ft in points) for every task with at
    least one ablation run (kld, ctt_kld, doktra_no_ctt, student_ft_cpl); None when there are none.
    The paper's ChemProt column alongside."""
    ablations = {"kld", "ctt_kld", "doktra_no_ctt", "student_ft_cpl"}
    stats = summarize(results, "test_f1")
    rows = []
    for task in ordered_tasks(results["task"].unique()):
        present = set(results.loc[results["task"] == task, "variant"].dropna())
        if not present & ablations:
            continue
        base = mean_of(stats, "student_ft", task)
        for label, variant in ABLATION_ROWS:
            if variant not in present and variant not in paper.TABLE6_CHEMPROT:
                continue
            mean = mean_of(stats, variant, task)
            improvement = (
                f"{100 * (mean - base):+.2f}"
                if variant not in UNIMPROVED and math.isfinite(mean - base)
                else ""
            )
            p = paper.TABLE6_CHEMPROT.get(variant) if task == "chemprot" else None
            p_base = paper.TABLE6_CHEMPROT["student_ft"][0]
            p_improvement = (
                f"{p[0] - p_base:+.2f}" if p and variant not in UNIMPROVED else ""
            )
            rows.append([TASK_NAMES.get(task, task), label, cell(stats, variant, task),
                         improvement, fmt(p[0], p[1], 1.0) if p else MISSING, p_improvement])
    if not rows:
        return None
    return pd.DataFrame(
        rows, columns=["Task", "Model", "F1 (%)", "Improvement", "paper F1 (%)", "paper Improvement"]
    )


# --------------------------------------------------------------------------------------------
# Tables A1-A3: selected hyperparameters


def _winner_value(row: pd.Series, *names: str) -> str:
    """First present `params.winner.<name>` (also under `config.` / `run.` prefixes). The search
    driver logs the winner as {trial_id, epoch, **the trial's sampled params, handoff, e1}: e is the
    epoch of the teacher handed on (`epoch`), e1 the student's (`e1`: its schedule length, or its
    best epoch in e1_mode=best_epoch); e2 is the ABD schedule length `epochs` (gamma splits it).
    `best_epoch` is read from searches logged before it was renamed."""
    for name in names:
        for prefix in ("", "config.", "run."):
            column = f"params.winner.{prefix}{name}"
            value = row.get(column)
            if isinstance(value, str) and value not in ("", "None", "nan"):
                return short_number(value)
    return MISSING


def _winners(runs: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    stages = stage_runs(runs)
    out: dict[tuple[str, str], pd.Series] = {}
    winner_columns = [c for c in stages.columns if c.startswith("params.winner.")]
    for _, row in stages.iterrows():
        if row[winner_columns].notna().any() if winner_columns else False:
            out[(row.get("tags.doktra.task"), row.get("tags.doktra.stage"))] = row
    return out


def _paper_cell(values: Mapping[str, float] | None, key: str) -> str:
    return short_number(str(values[key])) if values and key in values else MISSING


def table_a1(runs: pd.DataFrame) -> pd.DataFrame | None:
    """Table A1/A4: the CTT stage's selected epochs and beta1 per task (ours vs the paper's)."""
    winners = _winners(runs)
    tasks = ordered_tasks(task for task, stage in winners if stage == "ctt")
    if not tasks:
        return None
    rows = []
    for task in tasks:
        row = winners[(task, "ctt")]
        p = paper.TABLE_A1.get(task)
        rows.append([TASK_NAMES.get(task, task), _winner_value(row, "epoch", "best_epoch", "epochs"),
                     _winner_value(row, "beta"), _paper_cell(p, "e"), _paper_cell(p, "beta1")])
    return pd.DataFrame(rows, columns=["Task", "e", "beta1", "paper e", "paper beta1"])


def table_abd(runs: pd.DataFrame, family: str) -> pd.DataFrame | None:
    """Table A2 (ALBERT) / A3 (RoBERTa): student fine-tuning e1, lr1 and ABD e2, lr2, beta2,
    gamma selected per task, next to the paper's."""
    winners = _winners(runs)
    tasks = ordered_tasks(task for task, stage in winners if stage in ("student", "abd"))
    if not tasks:
        return None
    source = paper.TABLE_A3 if family == "RoBERTa" else paper.TABLE_A2
    rows = []
    for task in tasks:
        student = winners.get((task, "student"), pd.Series(dtype=object))
        abd = winners.get((task, "abd"), pd.Series(dtype=object))
        ours = [
            _winner_value(student, "e1", "epoch", "best_epoch", "epochs"), _winner_value(student, "lr"),
            _winner_value(abd, "epochs", "epoch", "best_epoch"), _winner_value(abd, "lr"),
            _winner_value(abd, "beta"), _winner_value(abd, "gamma"),
        ]
        p = source.get(task)
        theirs = [_paper_cell(p, k) for k in ("e1", "lr1", "e2", "lr2", "beta2", "gamma")]
        rows.append([TASK_NAMES.get(task, task), *ours, *theirs])
    keys = ["e1", "lr1", "e2", "lr2", "beta2", "gamma"]
    return pd.DataFrame(rows, columns=["Task", *keys, *(f"paper {k}" for k in keys)])


# --------------------------------------------------------------------------------------------
# the CTT winner rule on a real stage (App. A.1: beta1 "in terms of the F1 score and ECE")

SELECTION_RULES = (
    ("dev F1 only (ties: ECE)", SelectionRule(use_ece=True, f1_tolerance=0.0)),
    ("dev F1 within 0.5 point, then ECE", SelectionRule(use_ece=True, f1_tolerance=0.005)),
    ("dev F1 within 1 point, then ECE", SelectionRule(use_ece=True, f1_tolerance=0.01)),
    ("dev F1 within 2 points, then ECE", SelectionRule(use_ece=True, f1_tolerance=0.02)),
    ("Pareto front (F1, ECE), best F1", SelectionRule(kind="pareto", use_ece=True, f1_tolerance=0.0)),
)


def ctt_selection(winner_info: Mapping[str, Any]) -> pd.DataFrame | None:
    """Each CTT trial (beta1, dev F1, dev ECE at the epoch handed on) and the beta1 each winner
    rule picks; the row `this search` is the rule the search ran with."""
    trials = [t for t in winner_info.get("trials", []) if t.get("dev_f1") is not None]
    if not trials:
        return None
    rows = pd.DataFrame([{"beta1": t["params"].get("beta"), "dev_f1": t["dev_f1"], "dev_ece": t.get("dev_ece"),
                          "status": t.get("status", "completed")} for t in trials])
    table = [[f"trial beta1 = {short_number(str(r.beta1))}", fmt(r.dev_f1), fmt(r.dev_ece), r.status]
             for r in rows.itertuples()]
    used = winner_info.get("selection") or {}
    rules = list(SELECTION_RULES)
    if used:
        rules.append(("this search", SelectionRule(kind=used.get("kind", "lexicographic"), use_ece=True,
                                                   f1_tolerance=float(used.get("f1_tolerance", 0.0)))))
    for label, rule in rules:
        try:
            pick = select_winner(rows, rule, status_col="status")
            table.append([f"rule: {label}", fmt(pick["dev_f1"]), fmt(pick["dev_ece"]),
                          f"picks beta1 = {short_number(str(pick['beta1']))}"])
        except NoWinnerError:
            table.append([f"rule: {label}", MISSING, MISSING, "no eligible trial"])
    return pd.DataFrame(table, columns=["CTT trial / winner rule", "dev F1 (%)", "dev ECE (%)", "status / pick"])


def write_all_tables(
    runs: pd.DataFrame, out_dir: Path, *, caveats: str = "", ctt_winners: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, pd.DataFrame]:
    """Every table that the runs support, written under `out_dir`; returns them by name. `caveats`
    (what differs from the paper's setting) goes under every table that shows the paper's values;
    `ctt_winners` (task -> the CTT stage's winner.json) gives the CTT winner-rule tables."""
    results = final_results(runs)
    written: dict[str, pd.DataFrame] = {}
    if not results.empty:
        out_dir.mkdir(parents=True, exist_ok=True)
        results.to_csv(out_dir / "final_runs.csv", index=False)
    family = paper.student_family(student_model_of(results)) if not results.empty else "ALBERT"
    candidates: list[tuple[str, pd.DataFrame | None, str]] = []
    if not results.empty:
        bio = results[~results["task"].isin(FINANCIAL_TASKS)]
        fin = results[results["task"].isin(FINANCIAL_TASKS)]
        if not bio.empty:
            candidates.append(("table2", table2(results), "Table 2: test F1 (%) over seeds "
                               "(mean ± std); Retain = Avg(student-DoKTra) / Avg(teacher)."))
            candidates.append(("table5", table5(bio), "Table 5: DoKTra with vs without the "
                               "calibrated teacher: test F1 (%), L_AT (Eq. 4), teacher ECE (%)."))
            candidates.append(("directions", directions(bio), "The paper's three directions (§4.5), seed by "
                               "seed: teacher ECE (%), L_AT (Eq. 4) before ABD / at the switch (dev) / after "
                               "refinement (test), test F1 (%)."))
        if not fin.empty:
            candidates.append(("table7", table7(results), "Table 7: financial tasks, test F1 (%)."))
        candidates.append(("table6", table6(results), "Table 6: ablation, test F1 (%), "
                           "improvement over student-ft in points."))
    candidates.append(("tableA1", table_a1(runs), "Table A1/A4: CTT hyperparameters selected on dev."))
    abd_name = "tableA3" if family == "RoBERTa" else "tableA2"
    candidates.append((abd_name, table_abd(runs, family), f"Table {abd_name[-2:]}: student "
                       f"fine-tuning and ABD hyperparameters selected on dev ({family} rows)."))
    for name, df, caption in candidates:
        if df is not None and not df.empty:
            write_table(df, name, out_dir, f"{caption}\n\n{caveats}" if caveats else caption)
            written[name] = df
    for task, info in (ctt_winners or {}).items():
        df = ctt_selection(info)
        if df is not None:
            name = f"ctt_selection_{task}"
            write_table(df, name, out_dir, f"{TASK_NAMES.get(task, task)}: the CTT trials at the epoch handed on "
                        "and the beta1 each winner rule picks (App. A.1: F1 and ECE).")
            written[name] = df
    return written
