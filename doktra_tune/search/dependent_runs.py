"""A Tune searcher that hands out explicit run specs, each as soon as the models it needs exist.

The final runs are a small DAG: a seed's distillation needs that seed's teacher and student. A
Tuner over all of them with this searcher starts a distillation the moment its two inputs have
been published (`final/models/<name>`), while other seeds' teachers still train: no wave barrier,
no core idling at its end. A spec whose input failed is never started (`blocked`).

"Published" is Tune's word, not a `stat` on the driver: a run whose trial completed without error
has published its model (it copies it before its trainable returns), so a model written on another
node is never taken for missing because the driver's network file system cached an earlier look-up.
Models an earlier Tuner of the stage published (no spec of this Tuner makes them) are those its
finished trials name (`published`), else looked for on disk, once, when the searcher is made. The trial that reads a model waits a bounded time for it
to appear on its node (`trainables.inputs.wait_for_models`).

What it reads of a `RunSpec`: `publish` — the model name the run writes under the models
directory when it ends well; `needs` — the model names it reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from doktra_tune.run_spec import RUN_FIELD, RunSpec


class DependentRuns(Searcher):
    """Suggests `{"run": spec.to_json()}` for each spec once every model in its `needs` is published."""

    def __init__(self, specs: list[RunSpec], models_dir: Path, published: set[str] | frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.specs = list(specs)
        self.models_dir = Path(models_dir)
        self._waiting = list(range(len(self.specs)))
        self._running: dict[str, int] = {}  # trial id -> spec index
        produced = {spec.publish for spec in self.specs}
        earlier = {name for spec in self.specs for name in spec.needs if name not in produced}
        # published: by an earlier Tuner of the stage (its trial completed, or on disk now), or by a trial of this one
        self._published: set[str] = {name for name in earlier
                                     if name in published or (self.models_dir / name / "config.json").is_file()}
        # model names that will never exist: their run failed, or no spec makes them and they are not there
        self._failed: set[str] = earlier - self._published

    @property
    def blocked(self) -> list[RunSpec]:
        """Specs that cannot run: an input's run failed (or its model is gone)."""
        return [self.specs[i] for i in self._waiting if set(self.specs[i].needs) & self._failed]

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for index in list(self._waiting):
            needs = self.specs[index].needs
            if set(needs) & self._failed:
                continue
            if all(name in self._published for name in needs):
                self._waiting.remove(index)
                self._running[trial_id] = index
                return {RUN_FIELD: self.specs[index].to_json()}
        if not self._running and all(set(self.specs[i].needs) & self._failed for i in self._waiting):
            return Searcher.FINISHED  # every spec started, or blocked by a failed input
        return None  # the next one waits for an input still training

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        index = self._running.pop(trial_id, None)
        if index is None:
            return
        name = self.specs[index].publish
        if name:
            (self._failed if error else self._published).add(name)

    # Nothing to save: a resumed final stage builds a new searcher for the runs still missing.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass
