"""PNG figures (matplotlib, Agg backend): reliability diagrams (App. A.1 ECE bins), confusion
matrices, a stage's search curve and the ABD gamma x beta2 grid (Table A2's two refinement knobs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _values(items: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in items], dtype=float)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_reliability(ax, bins: Mapping[str, Any], label: str | None, color: str, offset: float,
                      width_share: float) -> None:
    edges = _values(bins["edges"])
    accuracy = _values(bins["accuracy"])
    counts = np.asarray(bins["count"], dtype=float)
    widths = np.diff(edges)
    lefts = edges[:-1] + offset * widths
    shown = counts > 0
    ax.bar(lefts[shown], accuracy[shown], width=widths[shown] * width_share, align="edge",
           color=color, alpha=0.75, edgecolor="black", linewidth=0.5, label=label)


def _reliability_axes(ax, title: str) -> None:
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)


def _ece_label(bins: Mapping[str, Any]) -> str:
    ece = bins.get("ece")
    return f"ECE {100 * float(ece):.2f}%" if ece is not None else "accuracy"


def _as_dict(bins: Any) -> Mapping[str, Any]:
    return bins.to_dict() if hasattr(bins, "to_dict") else bins


def _series(bins: Any) -> list[tuple[str | None, Mapping[str, Any]]]:
    """One bins mapping / ReliabilityBins, or {label: bins} for several models."""
    bins = _as_dict(bins)
    if "edges" in bins:
        return [(None, bins)]
    return [(str(label), _as_dict(b)) for label, b in bins.items()]


_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")


def plot_reliability(bins: Any, path: str | Path, title: str = "Reliability") -> Path:
    """Reliability diagram from `ReliabilityBins.to_dict()` (edges, accuracy, confidence, count;
    empty bins are skipped) — or a ReliabilityBins, or {label: bins} to overlay several models —
    with each bin's mean confidence as dots."""
    series = _series(bins)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    share = 1.0 / len(series)
    for k, (label, b) in enumerate(series):
        text = f"{label} ({_ece_label(b)})" if label else _ece_label(b)
        _draw_reliability(ax, b, text, _COLORS[k % len(_COLORS)], k * share, share)
        edges = _values(b["edges"])
        confidence = _values(b["confidence"])
        shown = np.asarray(b["count"], dtype=float) > 0
        centers = edges[:-1] + np.diff(edges) * (k + 0.5) * share
        ax.scatter(centers[shown], confidence[shown], color="tab:red", s=12, zorder=3,
                   label="mean confidence" if k == 0 else None)
    _reliability_axes(ax, title)
    return _save(fig, path)


def plot_reliability_compare(
    bins_a: Mapping[str, Any],
    bins_b: Mapping[str, Any],
    labels: Sequence[str],
    path: str | Path,
    title: str = "Teacher reliability: with vs without CTT",
) -> Path:
    """Two reliability diagrams side by side in each bin (e.g. CTT teacher vs beta1 = 0)."""
    bins_a, bins_b = _as_dict(bins_a), _as_dict(bins_b)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    _draw_reliability(ax, bins_a, f"{labels[0]} ({_ece_label(bins_a)})", "tab:blue", 0.0, 0.5)
    _draw_reliability(ax, bins_b, f"{labels[1]} ({_ece_label(bins_b)})", "tab:orange", 0.5, 0.5)
    _reliability_axes(ax, title)
    return _save(fig, path)


def plot_confusion(
    matrix: Any, labels: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Counts heatmap, rows = true label, columns = predicted. A multi-label [L, 2, 2] stack
    (sklearn's multilabel_confusion_matrix) is drawn as one row per label: TN, FP, FN, TP."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim == 3:
        m = m.reshape(m.shape[0], 4)
        x_labels: Sequence[str] = ["TN", "FP", "FN", "TP"]
        y_labels: Sequence[str] = labels
        xlabel, ylabel = "", "label"
    else:
        x_labels = y_labels = labels
        xlabel, ylabel = "predicted", "true"
    size = max(4.0, 0.5 * max(m.shape) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(m, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(m.shape[1]), labels=list(x_labels), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(m.shape[0]), labels=list(y_labels), fontsize=8)
    threshold = m.max() / 2 if m.size and m.max() > 0 else 0.5
    for (i, j), value in np.ndenumerate(m):
        ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=7,
                color="white" if value > threshold else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def plot_search_curve(rows_df: pd.DataFrame, path: str | Path, title: str = "Search curve") -> Path:
    """Best eligible dev F1 so far vs cumulative epochs spent (rows in trial start order, as
    `analysis.runs.search_curve_rows` builds them: epochs, dev_f1, status). Every trial is a dot
    at its best dev F1; pruned trials are red crosses, errored ones grey."""
    df = rows_df.copy()
    if "cum_epochs" not in df.columns:
        df["cum_epochs"] = df["epochs"].cumsum()
    if "best_so_far" not in df.columns:
        df["best_so_far"] = (
            df["dev_f1"].where(~df["status"].isin(["pruned", "errored"])).cummax().ffill()
        )
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.step(df["cum_epochs"], 100 * df["best_so_far"], where="post", color="tab:blue",
            label="best dev F1 so far")
    styles = {
        "pruned": dict(marker="x", color="tab:red", label="pruned"),
        "errored": dict(marker="s", color="grey", label="errored"),
    }
    for status, group in df.groupby(df["status"].fillna("unknown"), sort=False):
        style = styles.get(status, dict(marker="o", color="tab:green", label=str(status)))
        ax.scatter(group["cum_epochs"], 100 * group["dev_f1"], zorder=3, s=25, **style)
    ax.set_xlabel("cumulative epochs spent")
    ax.set_ylabel("dev F1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_grid_heatmap(
    df: pd.DataFrame,
    x: str = "gamma",
    y: str = "beta",
    value: str = "dev_f1",
    path: str | Path = "grid.png",
    title: str = "ABD dev F1 over gamma x beta2",
) -> Path:
    """Heatmap of `value` (x100) over the x-by-y grid; cells with several runs (other knobs such
    as lr) show their best value; missing cells stay blank."""
    frame = df[[x, y, value]].apply(pd.to_numeric, errors="coerce")
    table = frame.pivot_table(index=y, columns=x, values=value, aggfunc="max").sort_index()
    table = table.reindex(sorted(table.columns), axis=1)
    fig, ax = plt.subplots(figsize=(1.2 * max(3, table.shape[1]) + 2, 0.8 * max(3, table.shape[0]) + 1.5))
    data = 100 * table.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label=f"{value} (%)")
    ax.set_xticks(range(table.shape[1]), labels=[f"{c:g}" for c in table.columns])
    ax.set_yticks(range(table.shape[0]), labels=[f"{r:g}" for r in table.index])
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel("beta2" if y == "beta" else y)
    ax.set_title(title)
    return _save(fig, path)
