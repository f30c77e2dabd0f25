"""A trial's evaluation files: per split, the metrics, the reliability bins (App. A.1) and the
confusion matrix as JSON, the last two also as PNG (drawn by `analysis.plots`). The trial writes
them to shared storage; the driver logs them as the trial run's artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from analysis.plots import plot_confusion, plot_reliability

if TYPE_CHECKING:
    from doktra_tune.stages.evaluation import EvaluationResult


def write_evaluations(task: str, evaluations: Mapping[str, EvaluationResult], out: Path) -> list[Path]:
    """Write each split's `metrics_`, `reliability_` and `confusion_<split>` files under `out`;
    returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for split, ev in evaluations.items():
        rel_json = out / f"reliability_{split}.json"
        rel_json.write_text(json.dumps(ev.reliability.to_dict(), indent=1))
        conf_json = out / f"confusion_{split}.json"
        conf_json.write_text(json.dumps(ev.confusion_dict(), indent=1))
        metrics_json = out / f"metrics_{split}.json"
        metrics_json.write_text(json.dumps(ev.metrics, indent=1))
        title = f"{task} {split}"
        rel_png = out / f"reliability_{split}.png"
        plot_reliability({title: ev.reliability}, rel_png, title=f"reliability: {title}")
        conf_png = out / f"confusion_{split}.png"
        plot_confusion(ev.confusion, list(ev.label_names), conf_png)
        written += [rel_json, rel_png, conf_json, conf_png, metrics_json]
    return written
