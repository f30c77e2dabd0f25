"""analysis.plots: every figure is written as a non-empty PNG from the documented inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from doktra_tune.metrics import reliability_bins

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def _bins(seed: int):
    rng = np.random.default_rng(seed)
    confidences = rng.uniform(0.3, 1.0, 200)
    correct = rng.uniform(size=200) < confidences
    return reliability_bins(confidences, correct, n_bins=10)


def test_reliability_from_dict_object_and_labelled_mapping(tmp_path: Path) -> None:
    bins = _bins(0)
    as_dict = bins.to_dict()
    assert as_dict["count"][0] == 0 and as_dict["accuracy"][0] is None  # empty bins are skipped
    assert _is_png(plots.plot_reliability(as_dict, tmp_path / "a.png", title="teacher"))
    assert _is_png(plots.plot_reliability(bins, tmp_path / "b.png"))
    assert _is_png(plots.plot_reliability({"chemprot dev": bins}, tmp_path / "c" / "c.png"))


def test_reliability_compare(tmp_path: Path) -> None:
    path = plots.plot_reliability_compare(
        _bins(0).to_dict(), _bins(1).to_dict(), ["CTT", "beta1=0"], tmp_path / "cmp.png")
    assert _is_png(path)


def test_confusion_single_and_multi_label(tmp_path: Path) -> None:
    assert _is_png(plots.plot_confusion([[5, 1, 0], [2, 7, 1], [0, 0, 9]], ["a", "b", "c"],
                                        tmp_path / "single.png"))
    stacked = np.array([[[10, 2], [1, 3]], [[8, 0], [4, 4]]])  # [L, 2, 2] for HoC
    assert _is_png(plots.plot_confusion(stacked, ["h1", "h2"], tmp_path / "multi.png"))


def test_search_curve_and_grid(tmp_path: Path) -> None:
    rows = pd.DataFrame({"epochs": [3, 1, 3, 2], "dev_f1": [0.6, 0.3, 0.7, float("nan")],
                         "status": ["completed", "pruned", "completed", "errored"]})
    assert _is_png(plots.plot_search_curve(rows, tmp_path / "curve.png"))
    grid = pd.DataFrame({"gamma": [0.6, 0.6, 0.9, 0.9, 0.9], "beta": [0, 0.3, 0, 0.3, 0.3],
                         "dev_f1": [0.61, 0.62, 0.63, 0.60, 0.65]})
    assert _is_png(plots.plot_grid_heatmap(grid, x="gamma", y="beta", value="dev_f1",
                                           path=tmp_path / "grid.png"))
