"""analysis tables and the `python -m analysis` command, on a real sqlite MLflow store filled
through doktra_tune.tracking the way the search driver and trainables fill it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.__main__ import main as analysis_main
from analysis.directions import directions
from analysis.render import to_latex, to_markdown
from analysis.results import final_results, fmt
from analysis.runs import load_runs, resolve_source, search_curve_rows, trial_runs
from analysis.tables import table2, table5, table6
from doktra_tune.tracking import SearchTracker, trial_run
from tests.helpers.tracking_store import new_store

# final test F1 per variant over seeds 1..3 (hand-checkable means/stds)
FINAL_F1 = {
    "teacher_ctt": [0.75, 0.75, 0.75],  # 75.00 ± 0.00
    "teacher_ft": [0.74, 0.76, 0.78],  # 76.00 ± 2.00
    "student_ft": [0.60, 0.62, 0.64],  # 62.00 ± 2.00
    "doktra": [0.70, 0.72, 0.74],  # 72.00 ± 2.00 -> Retain 72 / 75 = 96.00%
    "doktra_no_ctt": [0.66, 0.68, 0.70],  # 68.00 ± 2.00
    "kld": [0.65, 0.65, 0.65],
}
LAT = {"doktra": [10.0, 12.0, 14.0], "doktra_no_ctt": [20.0, 20.0, 20.0]}
# dev L_AT before ABD and at the switch, per seed (the distillations only)
LAT_START = {"doktra": [40.0, 41.0, 42.0], "doktra_no_ctt": [50.0, 51.0, 52.0]}
LAT_SWITCH = {"doktra": [5.0, 6.0, 7.0], "doktra_no_ctt": [8.0, 9.0, 4.0]}
ECE = {"teacher_ctt": 0.02, "teacher_ft": 0.08}
BINS = {
    "n_bins": 4, "edges": [0.0, 0.25, 0.5, 0.75, 1.0], "accuracy": [None, 0.4, 0.6, 0.9],
    "confidence": [None, 0.45, 0.62, 0.85], "count": [0, 5, 10, 20], "ece": 0.03, "n": 35,
    "extra": {},
}


def fill_search(run_dir: Path, search_id: str = "s1") -> SearchTracker:
    """A small but complete search: ctt/student/abd trials (with pruned + errored ones), stage
    winners, and final seed runs for every variant."""
    tracker = SearchTracker(new_store(run_dir), "chemprot", search_id,
                            {"task": "chemprot"}, run_dir)
    models = {"doktra.teacher_model": "random:bert:L1-H32",
              "doktra.student_model": "random:albert:L1-H32"}
    stages = {
        "ctt": [("c0", {"beta": 0.0, "epochs": 3}, [0.5, 0.6, 0.62]),
                ("c1", {"beta": 0.3, "epochs": 3}, [0.55, 0.66, 0.64]),
                ("c2", {"beta": 0.5, "epochs": 3}, [0.40])],
        "student": [("s0", {"lr": 1e-5, "epochs": 2}, [0.5, 0.58])],
        "abd": [(f"a{i}", {"gamma": g, "beta": b, "lr": 1e-5, "epochs": 2}, [0.6 + i / 100, 0.61 + i / 100])
                for i, (g, b) in enumerate([(0.6, 0.0), (0.6, 0.3), (0.9, 0.0), (0.9, 0.3)])],
    }
    outcomes = {"ctt": {"c0": "completed", "c1": "completed", "c2": "pruned"},
                "student": {"s0": "completed"},
                "abd": {"a0": "completed", "a1": "completed", "a2": "completed", "a3": "errored"}}
    for stage, trials in stages.items():
        tracking = tracker.trial_tracking(stage, models)
        for trial_id, params, f1s in trials:
            with trial_run(tracker, tracking, params, {"ray.trial_id": trial_id, "doktra.seed": 1}) as log:
                for epoch, f1 in enumerate(f1s, start=1):
                    log.log_epoch({"dev_f1": f1, "dev_ece": 0.05}, step=epoch)
        tracker.record_outcomes(stage, outcomes[stage])
    # as the search driver logs them: {trial_id, epoch, **sampled params, handoff, e1}
    tracker.log_stage_summary("ctt", {"trial_id": "c1", "epoch": 2, "beta": 0.3, "epochs": 3})
    tracker.log_stage_summary("student", {"trial_id": "s0", "epoch": 2, "lr": 1e-5, "e1": 2})
    tracker.log_stage_summary("abd", {"trial_id": "a2", "epoch": 2, "gamma": 0.9, "beta": 0.0,
                                      "lr": 1e-5})
    tracking = tracker.trial_tracking("final", models)
    for variant, values in FINAL_F1.items():
        for seed, f1 in enumerate(values, start=1):
            tags = {"ray.trial_id": f"{variant}-{seed}", "doktra.variant": variant,
                    "doktra.seed": seed, "doktra.origin": "seed re-run"}
            with trial_run(tracker, tracking, {"seed": seed}, tags) as log:
                metrics = {"test_f1": f1, "test_ece": ECE.get(variant, 0.05)}
                if variant in LAT:
                    metrics["test_lat"] = LAT[variant][seed - 1]
                    metrics["dev_lat_start"] = LAT_START[variant][seed - 1]
                    metrics["dev_lat_switch"] = LAT_SWITCH[variant][seed - 1]
                log.log_epoch({"test_f1": 0.1}, step=1)  # the last value counts
                log.log_epoch(metrics, step=2)
                if variant.startswith("teacher") and seed == 1:
                    log.log_dict({**BINS, "ece": ECE[variant]}, "reliability_test.json")
                if variant == "doktra" and seed == 1:
                    log.log_dict({"split": "test", "labels": ["false", "CPR:3"],
                                  "matrix": [[30, 2], [4, 9]]}, "confusion_test.json")
    # a seed run killed with its driver at epoch 1 (no test score, no outcome) and re-run by the
    # resume above: not a row of its own
    tags = {"ray.trial_id": "teacher_ft-2-killed", "doktra.variant": "teacher_ft", "doktra.seed": 2,
            "doktra.origin": "seed re-run"}
    with trial_run(tracker, tracking, {"seed": 2}, tags) as log:
        log.log_epoch({"dev_f1": 0.5}, step=1)
    client = MlflowClient(tracker.tracking_uri)
    (killed,) = client.search_runs([tracker.experiment_id], "tags.`ray.trial_id` = 'teacher_ft-2-killed'")
    client.delete_tag(killed.info.run_id, "doktra.status")  # a killed process writes no outcome
    client.update_run(killed.info.run_id, status="RUNNING")
    tracker.finish()
    return tracker


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "s1"
    fill_search(run_dir)
    return run_dir


def test_fmt_mean_std_and_missing() -> None:
    assert fmt(0.7742, 0.0004) == "77.42 ± 0.04"
    assert fmt(0.5, float("nan")) == "50.00"
    assert fmt(float("nan"), 0.1) == "–"
    assert fmt(139.79, 1.5, scale=1.0) == "139.79 ± 1.50"


def test_final_results_and_table2(filled: Path) -> None:
    runs = load_runs(resolve_source(str(filled)))
    results = final_results(runs)
    assert len(results) == 18 and set(results["seed"]) == {"1", "2", "3"}
    t2 = table2(results)
    assert list(t2.columns) == ["Model", "Which model", "ChemProt", "Avg.", "Retain"]
    which = dict(zip(t2["Model"], t2["Which model"]))
    assert which["teacher-ft (CTT, tuned beta1)"] == "seed re-runs (n=3); the teacher DoKTra distilled from"
    assert which["student-ft"] == "seed re-runs (n=3); the student DoKTra started from"
    assert which["paper: ALBERT-DoKTra"] == "paper (3 seeds)"
    cells = dict(zip(t2["Model"], zip(t2["ChemProt"], t2["Avg."], t2["Retain"])))
    assert cells["teacher-ft (CTT, tuned beta1)"] == ("75.00 ± 0.00", "75.00", "")
    assert cells["teacher-ft (beta1 = 0)"] == ("76.00 ± 2.00", "76.00", "")
    assert cells["student-ft"] == ("62.00 ± 2.00", "62.00", "")
    assert cells["student-DoKTra"] == ("72.00 ± 2.00", "72.00", "96.00%")
    # the paper's ALBERT rows for ChemProt: 77.42 / 76.20 = 101.60 %
    assert cells["paper: ALBERT-DoKTra"] == ("77.42 ± 0.04", "77.42", "101.60%")
    assert cells["paper: BioBERT-ft (teacher)"][0] == "76.20 ± 0.65"


def test_gad_cells_take_the_std_over_seeds_of_fold_means() -> None:
    """Table 2's GAD ± (§4.2: three seeds): each seed's mean over the ten folds first, the std over
    those seed means; a search with final.gad_std=over_runs gets the std over every fold x seed run."""
    import statistics

    from analysis.results import cell, summarize

    f1 = {(1, 1): 0.60, (1, 2): 0.80, (2, 1): 0.70, (2, 2): 0.90, (3, 1): 0.65, (3, 2): 0.85}
    rows = [{"task": "gad", "variant": "doktra", "seed": str(seed), "fold": str(fold), "test_f1": v,
             "gad_std": "over_seeds"} for (seed, fold), v in f1.items()]
    rows.append({"task": "chemprot", "variant": "doktra", "seed": "1", "fold": None, "test_f1": 0.7,
                 "gad_std": "over_seeds"})
    rows.append({"task": "chemprot", "variant": "doktra", "seed": "2", "fold": None, "test_f1": 0.8,
                 "gad_std": "over_seeds"})
    results = pd.DataFrame(rows)
    stats = summarize(results, "test_f1")
    seed_means = [0.70, 0.80, 0.75]
    assert stats.loc[("doktra", "gad"), "n"] == 3
    assert cell(stats, "doktra", "gad") == fmt(statistics.fmean(seed_means), statistics.stdev(seed_means))
    assert cell(stats, "doktra", "chemprot") == fmt(0.75, statistics.stdev([0.7, 0.8]))
    runs = summarize(results.assign(gad_std="over_runs"), "test_f1")
    assert runs.loc[("doktra", "gad"), "n"] == 6
    assert cell(runs, "doktra", "gad") == fmt(statistics.fmean(f1.values()), statistics.stdev(f1.values()))
    assert cell(summarize(results.drop(columns="gad_std"), "test_f1"), "doktra", "gad") == cell(stats, "doktra", "gad")


def test_table5_and_table6(filled: Path) -> None:
    results = final_results(load_runs(resolve_source(str(filled))))
    t5 = table5(results).iloc[0]
    assert t5["DoKTra F1"] == "72.00 ± 2.00" and t5["DoKTra L_AT"] == "12.00 ± 2.00"
    assert t5["DoKTra−CTT F1"] == "68.00 ± 2.00" and t5["DoKTra−CTT L_AT"] == "20.00 ± 0.00"
    assert (t5["teacher ECE (beta1 = 0)"], t5["teacher ECE (CTT)"]) == ("8.00 ± 0.00", "2.00 ± 0.00")
    assert (t5["teacher F1 (beta1 = 0)"], t5["teacher F1 (CTT)"]) == ("76.00 ± 2.00", "75.00 ± 0.00")
    assert t5["paper DoKTra L_AT"] == "139.79"
    t6 = table6(results)
    rows = {r["Model"]: r for _, r in t6.iterrows()}
    assert rows["+KLD"]["F1 (%)"] == "65.00 ± 0.00" and rows["+KLD"]["Improvement"] == "+3.00"
    assert rows["+CTT+ABD (DoKTra)"]["Improvement"] == "+10.00"
    assert rows["+CTT+ABD (DoKTra)"]["paper Improvement"] == "+3.75"
    assert rows["+CTT+KLD"]["F1 (%)"] == "–"  # no ctt_kld runs: the paper's value stays visible
    # the paper's teacher row (76.20 ± 0.65) is the CTT teacher, as in Table 2; the beta1 = 0 teacher has none
    teacher, plain = rows["teacher-ft (CTT, tuned beta1)"], rows["teacher-ft (beta1 = 0)"]
    assert (teacher["F1 (%)"], teacher["paper F1 (%)"], teacher["Improvement"]) == ("75.00 ± 0.00", "76.20 ± 0.65", "")
    assert (plain["F1 (%)"], plain["paper F1 (%)"]) == ("76.00 ± 2.00", "–")


def test_directions_seed_by_seed(filled: Path) -> None:
    """Each seed's paired comparison of the paper's three directions, and the count of seeds where
    each holds (ECE: teacher_ctt 2 % < teacher_ft 8 %; test L_AT: doktra 10/12/14 < doktra_no_ctt 20;
    F1: doktra 70/72/74 > student_ft 60/62/64)."""
    df = directions(final_results(load_runs(resolve_source(str(filled)))))
    assert df is not None
    rows = {r["seed"]: r for _, r in df.iterrows()}
    one = rows["1"]
    assert (one["teacher ECE β₁=0"], one["teacher ECE CTT"]) == ("8.00", "2.00")
    assert (one["dev L_AT before ABD, CTT teacher"], one["dev L_AT before ABD, β₁=0 teacher"]) == ("40.00", "50.00")
    assert (one["dev L_AT at switch, DoKTra"], one["dev L_AT at switch, DoKTra−CTT"]) == ("5.00", "8.00")
    assert (one["test L_AT, DoKTra"], one["DoKTra F1"], one["student-ft F1"]) == ("10.00", "70.00", "60.00")
    assert [rows[s]["L_AT lower with CTT (test)"] for s in ("1", "2", "3")] == ["yes", "yes", "yes"]
    total = rows["seeds where it holds"]
    assert (total["CTT lowers teacher ECE"], total["L_AT lower with CTT (test)"], total["DoKTra above student-ft"]) == (
        "3 of 3", "3 of 3", "3 of 3")
    assert directions(final_results(load_runs(resolve_source(str(filled)))).query("variant != 'doktra'")) is None


def test_a_paper_number_printed_in_two_tables_is_one_variant() -> None:
    """Tables 2, 5, 6 and 7 map the paper's rows to our variants one way: a number the paper prints in two
    tables (76.20 ± 0.65 for ChemProt's teacher in Tables 2 and 6; 77.42 ± 0.04 for ALBERT-DoKTra in 2, 5
    and 6; 73.67 ± 0.98 for ALBERT-ft in 2 and 6) is one variant of ours, and a variant printed in two tables
    has one mean (the paper prints DoKTra−CTT's ChemProt std as 0.20 in Table 5 and 0.24 in Table 6)."""
    from collections import defaultdict

    from analysis import paper_values as paper

    variants, tables, means = defaultdict(set), defaultdict(set), defaultdict(set)
    for c in paper.variant_cells():
        variants[(c.task, c.mean, c.std)].add(c.variant)
        tables[(c.task, c.mean, c.std)].add(c.table)
        means[(c.task, c.student, c.variant)].add(c.mean)
    shared = {number: tables[number] for number in tables if len(tables[number]) > 1}
    assert shared[("chemprot", 76.20, 0.65)] == {"Table 2", "Table 6"}
    assert shared[("chemprot", 77.42, 0.04)] == {"Table 2", "Table 5", "Table 6"}
    assert shared[("chemprot", 73.67, 0.98)] == {"Table 2", "Table 6"}
    assert {number: variants[number] for number in shared if len(variants[number]) != 1} == {}
    assert variants[("chemprot", 76.20, 0.65)] == {"teacher_ctt"}
    assert {key: m for key, m in means.items() if len(m) != 1} == {}


def _cells(markdown_row: str) -> list[str]:
    """The cells of one Markdown table row, without the padding."""
    return [cell.strip() for cell in markdown_row.strip().strip("|").split("|")]


def test_markdown_and_latex_format() -> None:
    df = pd.DataFrame([["DoKTra", "77.42 ± 0.04", "99.72%"]], columns=["Model", "L_AT", "Retain"])
    assert to_markdown(df).splitlines() == [  # tabulate's pipe table: columns padded to their widest cell
        "| Model   | L_AT         | Retain   |", "|:--------|:-------------|:---------|",
        "| DoKTra  | 77.42 ± 0.04 | 99.72%   |"]
    numbers = pd.DataFrame([["+3.00", "1e-05", "7"]], columns=["Improvement", "lr", "e"])
    assert _cells(to_markdown(numbers).splitlines()[2]) == ["+3.00", "1e-05", "7"]  # shown as given, not re-parsed
    latex = to_latex(df, "cap")
    assert r"77.42 $\pm$ 0.04 & 99.72\% \\" in latex and r"$\mathcal{L}_{AT}$" in latex


def test_search_curve_rows(filled: Path) -> None:
    source = resolve_source(str(filled))
    ctt = trial_runs(load_runs(source), "ctt")
    rows = search_curve_rows(source.tracking_uri, ctt)
    assert list(rows["trial_id"]) == ["c0", "c1", "c2"]
    assert list(rows["epochs"]) == [3, 3, 1] and list(rows["cum_epochs"]) == [3, 6, 7]
    assert list(rows["status"]) == ["completed", "completed", "pruned"]
    assert list(rows["best_so_far"]) == [0.62, 0.66, 0.66]


def test_cli_writes_tables_and_plots(filled: Path, capsys) -> None:
    assert analysis_main([str(filled)]) == 0  # = python -m analysis <run dir>
    out = capsys.readouterr().out
    assert ["student-DoKTra", "seed re-runs (n=3); distilled from the rows above", "72.00 ± 2.00", "72.00",
            "96.00%"] in [_cells(line) for line in out.splitlines()]
    for name in ("table2", "table5", "table6", "tableA1", "tableA2"):
        for ext in ("md", "tex", "csv"):
            assert (filled / "tables" / f"{name}.{ext}").stat().st_size > 0
    a1 = pd.read_csv(filled / "tables" / "tableA1.csv", dtype=str)
    assert a1.iloc[0].to_dict() == {"Task": "ChemProt", "e": "2", "beta1": "0.3",
                                    "paper e": "5", "paper beta1": "0.3"}
    a2 = pd.read_csv(filled / "tables" / "tableA2.csv", dtype=str).iloc[0]
    assert (a2["e1"], a2["lr1"], a2["e2"], a2["beta2"], a2["gamma"]) == ("2", "1e-05", "2", "0", "0.9")
    pngs = sorted(p.name for p in (filled / "plots").glob("*.png"))
    assert pngs == ["chemprot_abd_grid.png", "chemprot_confusion_doktra.png",
                    "chemprot_reliability_teacher_ctt.png", "chemprot_reliability_teacher_ft.png",
                    "chemprot_reliability_teachers.png", "chemprot_search_abd.png",
                    "chemprot_search_ctt.png", "chemprot_search_student.png"]
    for png in (filled / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_one_line_errors(tmp_path: Path, capsys) -> None:
    for target in (tmp_path / "nope", tmp_path):  # missing dir; dir without mlflow.db
        assert analysis_main([str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "; " in err
    empty = tmp_path / "empty"
    SearchTracker(new_store(empty), "chemprot", "e", {}, empty)
    assert analysis_main([str(empty)]) == 0  # a search that has only started: not an error
    assert "no final seed runs yet" in capsys.readouterr().out
    assert analysis_main([str(tmp_path / "x"), "--tracking-uri", new_store(tmp_path / "y")]) == 2
    assert "no MLflow runs" in capsys.readouterr().err


def test_two_searches_make_one_table2_with_avg_and_retain(filled: Path, tmp_path: Path,
                                                          capsys) -> None:
    ddi = tmp_path / "ddi-search"
    tracker = SearchTracker(new_store(ddi), "ddi", "d1", {"task": "ddi"}, ddi)
    tracking = tracker.trial_tracking("final", {"doktra.student_model": "random:albert:L1-H32"})
    for variant, f1 in (("teacher_ctt", 0.85), ("student_ft", 0.70), ("doktra", 0.80)):
        with trial_run(tracker, tracking, {}, {"ray.trial_id": variant, "doktra.variant": variant,
                                      "doktra.seed": 1}) as log:
            log.log_epoch({"test_f1": f1}, step=1)
    tracker.finish()
    assert analysis_main([str(filled), str(ddi)]) == 2  # several searches need --out
    assert "--out" in capsys.readouterr().err
    out = tmp_path / "combined"
    assert analysis_main([str(filled), str(ddi), "--out", str(out)]) == 0
    t2 = pd.read_csv(out / "tables" / "table2.csv", dtype=str, keep_default_na=False)
    doktra = t2[t2["Model"] == "student-DoKTra"].iloc[0]
    # ChemProt 72.00 (3 seeds), DDI 80.00 (1 seed): Avg 76.00; teacher Avg (75 + 85) / 2 = 80
    assert (doktra["ChemProt"], doktra["DDI"], doktra["Avg."]) == ("72.00 ± 2.00", "80.00", "76.00")
    assert doktra["Retain"] == "95.00%"
    paper_row = t2[t2["Model"] == "paper: ALBERT-DoKTra"].iloc[0]
    assert (paper_row["DDI"], paper_row["Avg."]) == ("82.30 ± 0.41", "79.86")  # (77.42 + 82.30) / 2
    assert (out / "plots" / "s1" / "chemprot_search_ctt.png").is_file()


def test_table7_scores_micro_f1_with_macro_f1_beside_it_and_says_what_differs(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "fpb"
    config = {"task": {"name": "fpb", "data_format": None}, "teacher_model": "minilm",
              "student_model": "random:bert:L4-H192", "data": {"train_limit": 1000, "dev_limit": None,
                                                               "test_limit": None, "max_len": 96},
              "stages": {"ctt": {"epochs": 2}, "abd": {"epochs": 4}}}
    tracker = SearchTracker(new_store(run_dir), "fpb", "f1", config, run_dir)
    tracking = tracker.trial_tracking("final", {"doktra.student_model": "random:bert:L4-H192"})
    for variant, micro, macro in (("teacher_ctt", 0.80, 0.70), ("student_ft", 0.70, 0.55), ("doktra", 0.75, 0.60)):
        with trial_run(tracker, tracking, {}, {"ray.trial_id": variant, "doktra.variant": variant, "doktra.seed": 1,
                                      "doktra.origin": "seed re-run"}) as log:
            log.log_epoch({"test_f1": micro, "test_macro_f1": macro}, step=1)
    tracker.finish()
    assert analysis_main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    t7 = pd.read_csv(run_dir / "tables" / "table7.csv", dtype=str, keep_default_na=False)
    doktra = t7[t7["Model"] == "student-DoKTra"].iloc[0]
    assert (doktra["FPB"], doktra["FPB macro-F1"], doktra["Retain"]) == ("75.00", "60.00", "93.75%")
    assert t7[t7["Model"] == "paper: ALBERT-DoKTra"].iloc[0]["FPB"] == "86.25 ± 0.19"
    caption = (run_dir / "tables" / "table7.md").read_text().split("\n\n")[1]
    assert caption.startswith("**Not the paper's setting")
    for expected in ("FPB (50 % agree, 4,846 sentences) split here 80/10/10", "train 1000 examples",
                     "teacher minilm (paper: yiyanghkust/finbert-pretrain)",
                     "student random:bert:L4-H192 (paper: albert-xlarge-v2 or roberta-base)", "CTT: e 2 (paper: 5).",
                     "ABD: e₂ 4 (paper: 10).", "max_len 96 tokens (paper: 128)"):
        assert expected in caption, expected
    assert "Not the paper's setting" in out  # printed under the main table too


def test_ctt_selection_table_shows_which_beta1_each_rule_picks() -> None:
    from analysis.tables import ctt_selection

    info = {"selection": {"kind": "lexicographic", "f1_tolerance": 0.01},
            "trials": [{"params": {"beta": 0.0}, "dev_f1": 0.810, "dev_ece": 0.153, "status": "completed"},
                       {"params": {"beta": 0.3}, "dev_f1": 0.815, "dev_ece": 0.120, "status": "completed"},
                       {"params": {"beta": 0.5}, "dev_f1": 0.820, "dev_ece": 0.151, "status": "completed"},
                       {"params": {"beta": 0.7}, "dev_f1": 0.790, "dev_ece": 0.050, "status": "completed"}]}
    table = ctt_selection(info)
    picks = dict(zip(table["CTT trial / winner rule"], table["status / pick"]))
    assert picks["rule: dev F1 only (ties: ECE)"] == "picks beta1 = 0.5"
    assert picks["rule: dev F1 within 1 point, then ECE"] == "picks beta1 = 0.3"  # 0.815 within 0.01 of 0.82
    assert picks["rule: dev F1 within 2 points, then ECE"] == "picks beta1 = 0.3"  # 0.79 is 3 points off
    assert picks["rule: Pareto front (F1, ECE), best F1"] == "picks beta1 = 0.5"
    assert picks["rule: this search"] == "picks beta1 = 0.3"


# ----------------------------------------------------------------------------- caveats


def _config(*overrides: str) -> dict:
    from doktra_tune.plan.search_plan import resolved_dict
    from doktra_tune.search import compose_config

    return resolved_dict(compose_config(list(overrides)))


def test_caveats_name_every_difference_from_the_paper_preset() -> None:
    """The paper's setting is the paper preset composed for the task: models, grids and epochs, batch
    size, precision, max_len, seeds and the protocol keys are compared with it, not re-typed."""
    from analysis.caveats import DATASET_NOTES, comparison_caveats

    chemprot_note = f"data: {DATASET_NOTES['chemprot_jsonl']}."
    assert chemprot_note.startswith("data: ChemProt: SciBERT's copy (no false class), not BLUE's")
    assert comparison_caveats(_config("task=chemprot")) == []  # the paper preset reads BLUE's ChemProt
    assert comparison_caveats(_config("task=chemprot", "task.data_copy=scibert")) == [chemprot_note]
    fpb = comparison_caveats(_config("task=fpb", "student_model=roberta-base"))  # the paper's RoBERTa-base student
    assert len(fpb) == 2 and fpb[1].startswith("models: teacher yiyanghkust/finbert-pretrain is FinBERT-FinVocab")
    cpu = comparison_caveats(_config("task=chemprot", "preset=cpu"))
    assert cpu == [
        chemprot_note,
        "data: seeded stratified subsample (train 1000, dev 200, test 300 examples), not the full splits.",
        "models: teacher minilm (paper: dmis-lab/biobert-base-cased-v1.1).",
        "models: student random:bert:L4-H192 (paper: albert-xlarge-v2 or roberta-large).",
        "CTT: β₁ {0, 0.5} (paper: {0, 0.3, 0.5, 0.7}), lr 1.5e-4 (paper: 2e-5), e 2 (paper: 5).",
        "student fine-tuning: lr₁ {3e-4, 5e-4} (paper: {6e-6, 8e-6, 1e-5}), e₁ {3, 5} (paper: {5, 6, 7, 8, 9, 10}).",
        "ABD: lr₂ 3e-4 (paper: {6e-6, 8e-6, 1e-5}), β₂ {0, 0.5} (paper: {0, 0.3, 0.5, 0.7}), "
        "γ {0.5, 0.75} (paper: {0.6, 0.7, 0.8, 0.9}), e₂ 4 (paper: 10).",
        "training: batch size 16 (paper: 50); precision auto (paper: tf32; auto is bf16 autocast on a GPU, "
        "fp32 on a CPU); batching bucketed (paper: random, the authors' RandomSampler; bucketed batches hold "
        "sentences of similar length: other batch-mates, other SGD noise).",
        "max_len 96 tokens (paper: 128).",
        "protocol: final.protocol=chain (paper preset: shared_models).",  # preset=cpu pins chain (its README figures)
    ]
    options = comparison_caveats(_config(
        "task=gad", "train.precision=bf16", "stages.abd.grid.gamma=[0.9]", "final.seeds=[1]", "final.folds=[1]",
        "search.pruner=median", "stages.student.e1_mode=best_epoch"))
    assert options == [  # GAD's dev as the paper's (the fold's test file): no data line
        "student fine-tuning: e₁ 10 (paper: {5, 6, 7, 8, 9, 10}).",
        "ABD: γ 0.9 (paper: {0.6, 0.7, 0.8, 0.9}).",
        "training: precision bf16 (paper: tf32).",
        "seeds: 1 final seed [1] (paper: 3).",
        "protocol: search.pruner=median (paper preset: none); stages.student.e1_mode=best_epoch (paper preset: "
        "grid); final.folds=[1] (paper preset: none).",
    ]
    gad = comparison_caveats(_config("task=gad", "task.data_format=gad_folds:1:carve", "final.gad_std=over_runs"))
    assert gad == [
        f"data: {DATASET_NOTES['gad_folds:carve']}.",
        "protocol: final.gad_std=over_runs (paper preset: over_seeds).",
    ]
    old_gad = _config("task=gad")  # a GAD search recorded before the dev modes carved its dev
    old_gad["task"]["data_format"], _ = None, old_gad["final"].pop("gad_std")
    assert comparison_caveats(old_gad) == [f"data: {DATASET_NOTES['gad_folds:carve']}."]


def test_caveats_compose_the_paper_preset_inside_the_search_app() -> None:
    """The search writes its report inside its Hydra app: the paper preset is composed there without
    clearing the app's Hydra."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from analysis.caveats import comparison_caveats, paper_config
    from doktra_tune.compose import CONF_DIR

    config = _config("task=ddi", "preset=tiny")
    paper_config.cache_clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        lines = comparison_caveats(config)
        assert GlobalHydra.instance().is_initialized()
    assert any(line.startswith("training: batch size 16 (paper: 50); precision auto (paper: tf32; auto is bf16 "
                               "autocast on a GPU, fp32 on a CPU); batching bucketed (paper: random") for line in lines)


def test_a_run_that_is_two_variants_fills_both_rows(tmp_path: Path) -> None:
    """β₁ = 0 won CTT (the paper's HoC, Table A1): teacher_ft is teacher_ctt's runs and doktra_no_ctt
    doktra's, trained once (`doktra.also`). Every table still shows both rows, with the same numbers,
    and "Which model" says whose runs they are."""
    run_dir = tmp_path / "s-hoc"
    tracker = SearchTracker(new_store(run_dir), "hoc", "s-hoc", {"task": "hoc"}, run_dir)
    tracking = tracker.trial_tracking("final", {"doktra.student_model": "random:albert:L1-H32"})
    f1 = {"teacher_ctt": [0.80, 0.82, 0.84], "student_ft": [0.60, 0.62, 0.64], "doktra": [0.70, 0.71, 0.75]}
    also = {"teacher_ctt": "teacher_ft", "doktra": "doktra_no_ctt"}
    for variant, values in f1.items():
        for seed, value in enumerate(values, start=1):
            tags = {"ray.trial_id": f"{variant}-{seed}", "doktra.variant": variant, "doktra.seed": seed,
                    "doktra.origin": "seed re-run", **({"doktra.also": also[variant]} if variant in also else {})}
            with trial_run(tracker, tracking, {"seed": seed}, tags) as log:
                log.log_epoch({"test_f1": value, "test_ece": 0.01 * seed, "test_lat": 10.0 * seed}, step=1)
    tracker.finish()
    results = final_results(load_runs(resolve_source(str(run_dir))))
    assert len(results) == 15 and results["variant"].value_counts().to_dict() == {
        v: 3 for v in ("teacher_ctt", "teacher_ft", "student_ft", "doktra", "doktra_no_ctt")}
    copies = results[results["same_as"].notna()]
    assert sorted(zip(copies["variant"], copies["same_as"])) == sorted(
        [("teacher_ft", "teacher_ctt")] * 3 + [("doktra_no_ctt", "doktra")] * 3)
    for alias, target in (("teacher_ft", "teacher_ctt"), ("doktra_no_ctt", "doktra")):
        a, t = (results[results["variant"] == v].sort_values("seed") for v in (alias, target))
        assert a["test_f1"].tolist() == t["test_f1"].tolist() and a["test_f1"].mean() == t["test_f1"].mean()
    t2 = table2(results)
    cells = dict(zip(t2["Model"], t2["HoC"]))
    assert cells["teacher-ft (beta1 = 0)"] == cells["teacher-ft (CTT, tuned beta1)"] == "82.00 ± 2.00"
    which = dict(zip(t2["Model"], t2["Which model"]))
    assert which["teacher-ft (beta1 = 0)"] == ("seed re-runs (n=3); = teacher_ctt's runs (β₁ = 0 won CTT: trained once); "
                                               "the teacher DoKTra−CTT distilled from")
    assert which["teacher-ft (CTT, tuned beta1)"] == "seed re-runs (n=3); the teacher DoKTra distilled from"
    t5 = table5(results).iloc[0]
    assert t5["DoKTra−CTT F1"] == t5["DoKTra F1"] == "72.00 ± 2.65"
    assert t5["DoKTra−CTT L_AT"] == t5["DoKTra L_AT"] == "20.00 ± 10.00"
    assert t5["teacher ECE (beta1 = 0)"] == t5["teacher ECE (CTT)"] == "2.00 ± 1.00"
    rows = {r["Model"]: r for _, r in table6(results).iterrows()}
    assert rows["+ABD"]["F1 (%)"] == rows["+CTT+ABD (DoKTra)"]["F1 (%)"] == "72.00 ± 2.65"
    assert rows["+ABD"]["Improvement"] == rows["+CTT+ABD (DoKTra)"]["Improvement"] == "+10.00"


def test_which_model_says_when_every_doktra_seed_read_the_first_seeds_models() -> None:
    """final.protocol=shared_models: the teacher row is over its seeds, but DoKTra's seeds all distilled
    from its first seed (`doktra.teacher` names another seed's model)."""
    from analysis.tables import which_model

    def rows(shared: bool) -> pd.DataFrame:
        return pd.DataFrame(
            [{"variant": "teacher_ctt", "seed": str(s), "fold": None, "origin": "seed re-run", "teacher": None}
             for s in (1, 2)]
            + [{"variant": "doktra", "seed": str(s), "fold": None, "origin": "seed re-run",
                "teacher": f"teacher_ctt-seed{1 if shared else s}"} for s in (1, 2)])

    assert which_model(rows(True), "teacher_ctt") == (
        "seed re-runs (n=2); its first seed is the teacher every DoKTra seed distilled from")
    assert which_model(rows(False), "teacher_ctt") == "seed re-runs (n=2); the teacher DoKTra distilled from"
