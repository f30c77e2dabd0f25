"""Trial slots on a local Ray (doktra_tune.cluster.ray_session): how many trials the machine runs at
once, and the ConcurrencyLimiter that lets Tune ask for that many placement groups ahead for a
searcher of its own (the final runs' DependentRuns), one slot fewer for the runs beside ABD."""

from __future__ import annotations

from pathlib import Path

from ray.tune.search import ConcurrencyLimiter

from doktra_tune.cluster.ray_session import Resources, SlotsBeside, limit_to_slots, slots
from doktra_tune.search.dependent_runs import DependentRuns


def test_slots_are_the_scarcest_resource_over_the_per_trial_need() -> None:
    assert slots({"cpu": 1.0, "gpu": 0.0}, {"CPU": 2.0}) == 2
    assert slots({"cpu": 2.0, "gpu": 0.0}, {"CPU": 16.0, "GPU": 0.0}) == 8
    assert slots({"cpu": 4.0, "gpu": 1.0}, {"CPU": 16.0, "GPU": 2.0}) == 2  # the GPUs bound it
    assert slots({"cpu": 0.5, "gpu": 0.5}, {"CPU": 3.0, "GPU": 1.0}) == 2
    assert slots({"cpu": 4.0, "gpu": 0.0}, {"CPU": 2.0}) == 1  # at least one
    assert slots({"cpu": 1.0, "gpu": 0.0}, {"CPU": 8.0}, cap=3) == 3  # resources.max_concurrent_trials


def test_the_limiter_is_the_local_slots_less_those_left_and_nothing_on_a_cluster(tmp_path: Path) -> None:
    runs = DependentRuns([], tmp_path)
    local = Resources(per_trial={"cpu": 1.0, "gpu": 0.0}, max_concurrent=None, torch_threads=1, local_slots=4)
    limited = limit_to_slots(runs, local)
    assert isinstance(limited, ConcurrencyLimiter) and limited.max_concurrent == 4 and limited.searcher is runs
    assert limit_to_slots(runs, local, leave=1).max_concurrent == 3
    two = Resources(per_trial={"cpu": 1.0, "gpu": 0.0}, max_concurrent=None, torch_threads=1, local_slots=1)
    assert limit_to_slots(runs, two, leave=1).max_concurrent == 1  # never below one
    cluster = Resources(per_trial={"cpu": 1.0, "gpu": 0.0}, max_concurrent=None, torch_threads=1)
    assert limit_to_slots(runs, cluster) is runs  # Tune's own default: nodes that join get trials


def test_slots_left_beside_another_tuner_come_back_when_it_ends(tmp_path: Path) -> None:
    local = Resources(per_trial={"cpu": 1.0, "gpu": 0.0}, max_concurrent=None, torch_threads=1, local_slots=2)
    beside = SlotsBeside(local, leave=1)
    first, second = beside.limit(DependentRuns([], tmp_path)), beside.limit(DependentRuns([], tmp_path))
    assert first.max_concurrent == second.max_concurrent == 1  # one slot for the ABD search
    beside.release()
    assert first.max_concurrent == second.max_concurrent == 2
    assert beside.limit(DependentRuns([], tmp_path)).max_concurrent == 2  # a Tuner built after the release
    on_cluster = SlotsBeside(Resources(per_trial={"cpu": 1.0}, max_concurrent=None, torch_threads=1), leave=1)
    runs = DependentRuns([], tmp_path)
    assert on_cluster.limit(runs) is runs
    on_cluster.release()
