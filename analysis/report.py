"""Every table and plot of one or more searches, read back from MLflow (`write_report`); the
`python -m analysis` command and the search driver's outcome step both use it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import plots
from analysis.caveats import comparison_caveats
from analysis.render import to_markdown
from analysis.results import final_results
from analysis.runs import (
    SearchSource,
    load_json_artifact,
    load_runs,
    search_configs,
    search_curve_rows,
    stage_winner_info,
    tag,
    trial_runs,
)
from analysis.tables import write_all_tables
from doktra_tune.errors import DoktraError
from search_spaces import STAGES as SEARCH_STAGES  # ctt, student, abd: the one list of the three searches


def _first_run(final: pd.DataFrame, task: str, variant: str) -> str | None:
    mask = (tag(final, "doktra.task") == task) & (tag(final, "doktra.variant") == variant)
    chosen = final[mask.fillna(False).astype(bool)]
    if chosen.empty:
        return None
    chosen = chosen.assign(_seed=pd.to_numeric(tag(chosen, "doktra.seed"), errors="coerce"))
    return str(chosen.sort_values("_seed", kind="stable")["run_id"].iloc[0])


def _artifact(uri: str, run_id: str | None, stem: str) -> dict | None:
    if run_id is None:
        return None
    for split in ("test", "dev"):
        value = load_json_artifact(uri, run_id, f"{stem}_{split}.json")
        if value is not None:
            return value
    return None


def write_plots(source: SearchSource, runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Reliability (teacher CTT vs beta1 = 0), confusion (DoKTra student), each search stage's
    curve and the ABD gamma x beta2 grid, for every task with the runs to draw them."""
    uri = source.tracking_uri
    written: list[Path] = []
    trials = trial_runs(runs)
    final = trial_runs(runs, "final")
    for task in sorted(tag(trials, "doktra.task").dropna().unique()):
        task_trials = trials[(tag(trials, "doktra.task") == task).fillna(False).astype(bool)]
        ctt = _artifact(uri, _first_run(final, task, "teacher_ctt"), "reliability")
        ft = _artifact(uri, _first_run(final, task, "teacher_ft"), "reliability")
        if ctt and ft:
            written.append(plots.plot_reliability_compare(
                ctt, ft, ["teacher CTT", "teacher beta1=0"], out_dir / f"{task}_reliability_teachers.png",
                title=f"{task}: teacher reliability with vs without CTT"))
        for name, bins in (("teacher_ctt", ctt), ("teacher_ft", ft)):
            if bins:
                written.append(plots.plot_reliability(
                    bins, out_dir / f"{task}_reliability_{name}.png", title=f"{task}: {name}"))
        confusion = _artifact(uri, _first_run(final, task, "doktra"), "confusion")
        if confusion:
            written.append(plots.plot_confusion(
                confusion["matrix"], confusion["labels"], out_dir / f"{task}_confusion_doktra.png",
                title=f"{task}: student-DoKTra"))
        for stage in SEARCH_STAGES:
            stage_trials = task_trials[(tag(task_trials, "doktra.stage") == stage).fillna(False).astype(bool)]
            if stage_trials.empty:
                continue
            rows = search_curve_rows(uri, stage_trials)
            written.append(plots.plot_search_curve(
                rows, out_dir / f"{task}_search_{stage}.png", title=f"{task}: {stage} search"))
            if stage == "abd" and {"params.gamma", "params.beta"} <= set(stage_trials.columns):
                grid = stage_trials[["run_id", "params.gamma", "params.beta"]].merge(
                    rows[["run_id", "dev_f1", "status"]], on="run_id")
                grid = grid[~grid["status"].isin(["errored"])].rename(
                    columns={"params.gamma": "gamma", "params.beta": "beta"})
                if grid["dev_f1"].notna().any():
                    written.append(plots.plot_grid_heatmap(
                        grid, x="gamma", y="beta", value="dev_f1",
                        path=out_dir / f"{task}_abd_grid.png", title=f"{task}: ABD dev F1"))
    return written


def caveat_text(runs: pd.DataFrame) -> str:
    """What differs from the paper's setting, per task, as one Markdown paragraph ("" if nothing)."""
    configs = search_configs(runs)
    lines = [f"{task}: {line}" if len(configs) > 1 else line
             for task, config in sorted(configs.items()) for line in comparison_caveats(config)]
    if not lines:
        return ""
    return "**Not the paper's setting — compare directions, not values:** " + " ".join(lines)


@dataclass
class Report:
    """What `write_report` wrote: tables by name, figure paths, the caveat paragraph."""

    out_dir: Path
    tables: dict[str, pd.DataFrame]
    figures: list[Path]
    caveats: str
    n_final_runs: int

    @property
    def main_table(self) -> pd.DataFrame | None:
        """Table 2 (Table 7 when the searches are financial only)."""
        return self.tables.get("table2", self.tables.get("table7"))

    def summary(self) -> str:
        """Table 2 in Markdown with its caveats, or why there is none yet."""
        if self.main_table is None:
            return f"no final seed runs yet ({self.n_final_runs}); Table 2 needs the final stage's runs"
        return to_markdown(self.main_table) + (f"\n{self.caveats}\n" if self.caveats else "")


def write_report(sources: list[SearchSource], out_dir: Path | None = None) -> Report:
    """Tables over all `sources` together (one search per task gives Table 2's columns and Avg.) under
    `<out_dir>/tables/`, plots per search under `<out_dir>/plots/`."""
    loaded: list[tuple[SearchSource, pd.DataFrame]] = []
    for source in sources:
        runs = load_runs(source)
        if runs.empty:
            raise DoktraError(
                f"no MLflow runs for {source.search_id or source.out_dir} in {source.tracking_uri}; run a search "
                "first (python -m doktra_tune.search ...) or check the search id / --tracking-uri"
            )
        loaded.append((source, runs))
    out_dir = (out_dir or loaded[0][0].out_dir).resolve()
    all_runs = pd.concat([runs for _, runs in loaded], ignore_index=True)
    caveats = caveat_text(all_runs)
    ctt_winners = {task: info for source, runs in loaded for task in search_configs(runs)
                   if (info := stage_winner_info(source.tracking_uri, runs, task, "ctt")) is not None}
    tables = write_all_tables(all_runs, out_dir / "tables", caveats=caveats, ctt_winners=ctt_winners)
    figures: list[Path] = []
    for source, runs in loaded:
        plot_dir = out_dir / "plots" if len(loaded) == 1 else out_dir / "plots" / source.out_dir.name
        figures += write_plots(source, runs, plot_dir)
    return Report(out_dir, tables, figures, caveats, len(final_results(all_runs)))


