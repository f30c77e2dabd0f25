"""Ray Tune trainable that scores an existing checkpoint: the final runs of `final.protocol=winners`
report the search's own teacher and student (the models DoKTra starts from) on dev and test."""

from __future__ import annotations

from trainables.common import run_evaluation


def evaluate_trainable(config: dict, base: dict, tracking: dict | None = None) -> None:
    """One evaluation: `base` (a StageConfig dict: data, eval settings) with `config["run"]["model"]`."""
    run_evaluation(config, base, tracking)
