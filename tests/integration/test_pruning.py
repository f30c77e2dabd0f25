"""The Optuna pruning bridge with real Ray Tune trials (trivial function trainables).

Every trainable reports a deterministic dev F1 curve, so which trial is pruned is known by hand.
One `ray.init(num_cpus=2)` for the whole module.
"""

from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray")

from optuna.trial import TrialState  # noqa: E402
from ray import tune  # noqa: E402

from doktra_tune.cluster.ray_session import RAY_SETTINGS  # noqa: E402
from doktra_tune.errors import ConfigError  # noqa: E402
from doktra_tune.metrics import search_score  # noqa: E402
from doktra_tune.search.pruning import (  # noqa: E402
    OptunaPrunerScheduler,
    PriorTrial,
    PrunableOptunaSearch,
    RecordingASHAScheduler,
    SynchronousHalvingScheduler,
    pruned_trial_ids,
)
from doktra_tune.search.search_algorithms import build_search  # noqa: E402
from doktra_tune.search_space import SearchSpace  # noqa: E402

pytestmark = pytest.mark.slow

EPOCHS = 6
# dev F1 at epoch 1 per beta; every curve then rises by 0.01 per epoch.
BASE_F1 = {0.0: 0.80, 0.3: 0.82, 0.5: 0.85, 0.7: 0.30}


def curve_trainable(config: dict) -> None:
    """dev_f1 = BASE_F1[beta] + 0.01 * (epoch - 1), one report per epoch."""
    for epoch in range(1, config["epochs"] + 1):
        tune.report({"epoch": epoch, "dev_f1": BASE_F1[config["beta"]] + 0.01 * (epoch - 1)})


def lr_trainable(config: dict) -> None:
    """Larger lr -> higher F1 (the lr grid of the student stage); `epochs` comes from `fixed`."""
    for epoch in range(1, config["epochs"] + 1):
        tune.report({"epoch": epoch, "dev_f1": config["lr"] * 1e4 + 0.001 * epoch})


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    saved = dict(os.environ)
    RAY_SETTINGS.apply_env()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    os.environ.clear()  # later tests (and the subprocesses they start) see the original environment
    os.environ.update(saved)


def run(trainable, space: SearchSpace, tmp_path, *, max_concurrent: int = 1, **search_kwargs):
    searcher, scheduler, num_samples = build_search(space, **search_kwargs)
    tuner = tune.Tuner(
        trainable,
        param_space=dict(space.fixed),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="t", storage_path=str(tmp_path), verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    results = tuner.fit()
    by_id = {r.metrics["trial_id"]: r for r in results}
    return searcher, scheduler, num_samples, by_id


def beta_space() -> SearchSpace:
    return SearchSpace(stage="ctt", params={"beta": [0.0, 0.3, 0.5, 0.7]}, fixed={"epochs": EPOCHS})


def test_median_pruner_prunes_the_bad_trial_and_tells_optuna(tmp_path):
    searcher, scheduler, num_samples, by_id = run(
        curve_trainable, beta_space(), tmp_path,
        mode="grid", num_samples=None, pruner="median", max_t=EPOCHS, seed=0,
    )
    assert isinstance(searcher, PrunableOptunaSearch)
    assert isinstance(scheduler, OptunaPrunerScheduler)
    assert num_samples == 4
    # Grid order = trial order; trials 0, 1 are the median's 2 startup trials; the bad trial
    # (beta 0.7, F1 0.30 < median 0.81 at epoch 1) is stopped after its first epoch.
    betas = {tid: r.config["beta"] for tid, r in by_id.items()}
    pruned = pruned_trial_ids(scheduler)
    assert {betas[t] for t in pruned} == {0.7}
    (bad,) = pruned
    assert by_id[bad].metrics["training_iteration"] == 1
    assert by_id[bad].error is None
    for tid, result in by_id.items():
        if tid != bad:
            assert result.metrics["training_iteration"] == EPOCHS
            assert result.metrics["dev_f1"] == pytest.approx(BASE_F1[betas[tid]] + 0.05)

    trials = searcher.study.trials
    states = {t.params["beta"]: t.state for t in trials}
    assert states == {
        0.0: TrialState.COMPLETE, 0.3: TrialState.COMPLETE,
        0.5: TrialState.COMPLETE, 0.7: TrialState.PRUNED,
    }
    by_beta = {t.params["beta"]: t for t in trials}
    assert by_beta[0.7].intermediate_values == {1: pytest.approx(0.30)}
    assert by_beta[0.5].value == pytest.approx(0.90)
    assert by_beta[0.5].intermediate_values == {
        e: pytest.approx(0.85 + 0.01 * (e - 1)) for e in range(1, EPOCHS + 1)
    }
    assert searcher.study.best_params == {"beta": 0.5}


def test_resumed_grid_runs_only_the_missing_points_and_prunes_against_the_finished_ones(tmp_path):
    """After an interruption (betas 0.0 and 0.3 finished), the resumed search gets the two missing
    points and the finished trials' curves: no startup trials are needed, so the bad point (0.7)
    is pruned at its first epoch even though it is the first new trial."""
    finished = [
        PriorTrial(params={"beta": b}, curve={e: BASE_F1[b] + 0.01 * (e - 1) for e in range(1, EPOCHS + 1)},
                   state="completed")
        for b in (0.0, 0.3)
    ]
    searcher, scheduler, num_samples, by_id = run(
        curve_trainable, beta_space(), tmp_path,
        mode="grid", num_samples=None, pruner="median", max_t=EPOCHS, seed=0,
        points=[{"beta": 0.7}, {"beta": 0.5}], prior_trials=finished,
    )
    assert num_samples == 2
    betas = {tid: r.config["beta"] for tid, r in by_id.items()}
    assert sorted(betas.values()) == [0.5, 0.7]
    assert {betas[t] for t in pruned_trial_ids(scheduler)} == {0.7}
    states = {t.params["beta"]: t.state for t in searcher.study.trials}
    assert states == {0.0: TrialState.COMPLETE, 0.3: TrialState.COMPLETE,
                      0.5: TrialState.COMPLETE, 0.7: TrialState.PRUNED}
    assert searcher.study.best_params == {"beta": 0.5}


def test_pruned_set_survives_tuner_restore(tmp_path):
    space = beta_space()
    searcher, scheduler, num_samples = build_search(
        space, mode="grid", num_samples=None, pruner="median", max_t=EPOCHS, seed=0,
    )
    tuner = tune.Tuner(
        curve_trainable, param_space=dict(space.fixed),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=num_samples, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="r", storage_path=str(tmp_path), verbose=0),
    )
    tuner.fit()
    pruned = pruned_trial_ids(scheduler)
    assert len(pruned) == 1
    restored = tune.Tuner.restore(str(tmp_path / "r"), trainable=curve_trainable)
    results = restored.fit()
    assert len(results) == 4
    assert pruned_trial_ids(restored) == pruned


def test_grid_visits_exactly_the_grid_with_concurrent_trials(tmp_path):
    space = SearchSpace(
        stage="abd",
        params={"beta": [0.0, 0.3, 0.5, 0.7], "lr": [6e-6, 1e-5]},
        fixed={"epochs": 2},
    )
    searcher, scheduler, num_samples, by_id = run(
        lr_trainable, space, tmp_path, max_concurrent=2,
        mode="grid", num_samples=None, pruner="none", max_t=2, seed=3,
    )
    assert num_samples == 8
    visited = sorted((r.config["beta"], r.config["lr"]) for r in by_id.values())
    assert visited == sorted((b, lr) for b in [0.0, 0.3, 0.5, 0.7] for lr in [6e-6, 1e-5])
    assert all(r.config["epochs"] == 2 for r in by_id.values())  # `fixed` reaches every trial
    assert pruned_trial_ids(scheduler) == set()
    assert [t.state for t in searcher.study.trials] == [TrialState.COMPLETE] * 8


def test_tpe_respects_num_samples(tmp_path):
    space = SearchSpace(
        stage="abd",
        params={"lr": [6e-6, 8e-6, 1e-5], "gamma": [0.6, 0.7, 0.8, 0.9]},
        fixed={"epochs": 1},
    )
    searcher, _, num_samples, by_id = run(
        lr_trainable, space, tmp_path, max_concurrent=2,
        mode="tpe", num_samples=5, pruner="none", max_t=1, seed=0,
    )
    assert num_samples == 5
    assert len(by_id) == 5
    assert len(searcher.study.trials) == 5
    for r in by_id.values():
        assert r.config["lr"] in (6e-6, 8e-6, 1e-5)
        assert r.config["gamma"] in (0.6, 0.7, 0.8, 0.9)


def test_asha_stops_the_bad_trial_and_records_it(tmp_path):
    searcher, scheduler, _, by_id = run(
        curve_trainable, beta_space(), tmp_path,
        mode="grid", num_samples=None, pruner="asha", max_t=EPOCHS, seed=0,
        grace_period=1,
    )
    assert isinstance(scheduler, RecordingASHAScheduler)
    betas = {tid: r.config["beta"] for tid, r in by_id.items()}
    pruned = pruned_trial_ids(scheduler)
    # rung at t=1 (reduction 3): the bad trial's 0.30 is below the top third of {0.80, 0.82, 0.85}
    assert 0.7 in {betas[t] for t in pruned}
    assert 0.5 not in {betas[t] for t in pruned}
    states = {t.params["beta"]: t.state for t in searcher.study.trials}
    assert states[0.7] == TrialState.PRUNED
    assert states[0.0] == TrialState.COMPLETE
    for tid in pruned:
        assert by_id[tid].metrics["training_iteration"] < EPOCHS


def resumable_trainable(config: dict) -> None:
    """dev_f1 = x / 10 + 0.001 * epoch, a checkpoint per epoch; resumes after the checkpoint's epoch."""
    import json
    import tempfile
    from pathlib import Path

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = json.loads((Path(d) / "epoch.json").read_text())["epoch"]
    for epoch in range(start + 1, config["epochs"] + 1):
        d = tempfile.mkdtemp()
        (Path(d) / "epoch.json").write_text(json.dumps({"epoch": epoch}))
        tune.report({"epoch": epoch, "resumed_after": start, "dev_f1": config["x"] / 10 + 0.001 * epoch},
                    checkpoint=tune.Checkpoint.from_directory(d))


def run_synchronous_halving(trainable, xs: list[int], epochs: int, tmp_path, *, grace_period: int,
                            reduction_factor: int, stage: str = "student"):
    """`run` over the grid x in `xs` with the synchronous_halving pruner (no concurrency cap)."""
    space = SearchSpace(stage=stage, params={"x": xs}, fixed={"epochs": epochs})
    return run(
        trainable, space, tmp_path, max_concurrent=None,
        mode="grid", num_samples=None, pruner="synchronous_halving", max_t=epochs, seed=0,
        grace_period=grace_period, reduction_factor=reduction_factor,
    )


def test_synchronous_halving_pauses_at_rungs_and_resumes_the_best(tmp_path):
    """9 trials x 9 epochs, grace 1, factor 3: rungs at 1, 3, 9. The grid runs the worst point
    first (as a low-to-high lr grid does); no trial goes on for having started first."""
    searcher, scheduler, n, by_id = run_synchronous_halving(
        resumable_trainable, list(range(9)), 9, tmp_path, grace_period=1, reduction_factor=3,
    )
    assert isinstance(scheduler, SynchronousHalvingScheduler) and n == 9
    epochs = {r.config["x"]: r.metrics["epoch"] for r in by_id.values()}
    assert epochs == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 3, 7: 3, 8: 9}
    assert sum(epochs.values()) == 9 + 3 * 2 + 6  # 21 of the grid's 81 epochs
    for r in by_id.values():  # Tune's iteration count goes on across the pause
        assert r.metrics["training_iteration"] == r.metrics["epoch"]
    best = next(r for r in by_id.values() if r.config["x"] == 8)
    assert best.metrics["resumed_after"] == 3  # paused at rung 1 and at rung 3, resumed each time
    assert best.metrics["dev_f1"] == pytest.approx(0.809)
    pruned = pruned_trial_ids(scheduler)
    assert {by_id[t].config["x"] for t in pruned} == set(range(8))
    states = {t.params["x"]: t.state for t in searcher.study.trials}
    assert states == {**{x: TrialState.PRUNED for x in range(8)}, 8: TrialState.COMPLETE}


def failing_trainable(config: dict) -> None:
    """beta 0.3 raises at epoch 2 (as a NaN loss does); the others follow their curve."""
    for epoch in range(1, config["epochs"] + 1):
        if config["beta"] == 0.3 and epoch == 2:
            raise RuntimeError("non-finite train_loss at epoch 2")
        tune.report({"epoch": epoch, "dev_f1": BASE_F1[config["beta"]] + 0.01 * (epoch - 1)})


def test_errored_trial_is_failed_not_pruned(tmp_path):
    space = SearchSpace(stage="ctt", params={"beta": [0.0, 0.3, 0.5]}, fixed={"epochs": 3})
    searcher, scheduler, _, by_id = run(
        failing_trainable, space, tmp_path,
        mode="grid", num_samples=None, pruner="median", max_t=3, seed=0, n_startup_trials=1,
    )
    states = {t.params["beta"]: t.state for t in searcher.study.trials}
    assert states == {0.0: TrialState.COMPLETE, 0.3: TrialState.FAIL, 0.5: TrialState.COMPLETE}
    assert pruned_trial_ids(scheduler) == set()
    errored = [tid for tid, r in by_id.items() if r.error is not None]
    assert [by_id[t].config["beta"] for t in errored] == [0.3]


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("median", "MedianPruner"),
        ("successive_halving", "SuccessiveHalvingPruner"),
        ("hyperband", "HyperbandPruner"),
        ("asha", "NopPruner"),
        ("synchronous_halving", "NopPruner"),
        ("none", "NopPruner"),
    ],
)
def test_each_pruner_reaches_the_study(name, cls):
    searcher, scheduler, n = build_search(
        beta_space(), mode="tpe", num_samples=3, pruner=name, max_t=EPOCHS, seed=1, grace_period=2,
    )
    assert type(searcher.study.pruner).__name__ == cls
    assert n == 3
    expected_scheduler = {
        "asha": "RecordingASHAScheduler", "none": "FIFOScheduler",
        "synchronous_halving": "SynchronousHalvingScheduler",
    }.get(
        name, "OptunaPrunerScheduler"
    )
    assert type(scheduler).__name__ == expected_scheduler
    if name == "median":
        assert searcher.study.pruner._n_warmup_steps == 1  # grace_period 2: may prune from step 2


def test_build_search_rejects_bad_arguments():
    space = beta_space()
    with pytest.raises(ConfigError, match="unknown pruner 'asha2'; use one of"):
        build_search(space, mode="grid", num_samples=None, pruner="asha2", max_t=3, seed=0)
    with pytest.raises(ConfigError, match="unknown search mode 'random'"):
        build_search(space, mode="random", num_samples=4, pruner="none", max_t=3, seed=0)
    with pytest.raises(ConfigError, match="mode=tpe needs a trial budget"):
        build_search(space, mode="tpe", num_samples=None, pruner="none", max_t=3, seed=0)
    # grid mode runs the whole grid whatever num_samples says
    assert build_search(space, mode="grid", num_samples=3, pruner="none", max_t=3, seed=0)[2] == 4
    with pytest.raises(ConfigError, match=r"grace_period=5 must be an integer in \[1, max_t=3\]"):
        build_search(space, mode="grid", num_samples=None, pruner="median", max_t=3, seed=0,
                     grace_period=5)
    err = pytest.raises(ConfigError, build_search, space, mode="x", num_samples=1, pruner="none",
                        max_t=1, seed=0)
    assert "\n" not in str(err.value)


def test_search_score_breaks_f1_ties_by_dev_loss_only():
    tied_low_loss = search_score({"dev_f1": 0.455, "dev_loss": 1.20})
    tied_high_loss = search_score({"dev_f1": 0.455, "dev_loss": 1.30})
    assert tied_low_loss > tied_high_loss
    # the smallest F1 step on a 200-sentence dev set still dominates any loss difference
    assert search_score({"dev_f1": 0.460, "dev_loss": 50.0}) > search_score({"dev_f1": 0.455, "dev_loss": 0.0})
    assert search_score({"dev_f1": 0.5}) == 0.5
    assert search_score({"dev_loss": 1.0}) is None and search_score({"dev_f1": float("nan")}) is None


def nan_trainable(config: dict) -> None:
    """resumable_trainable, except that x = 2 reports a NaN dev F1."""
    if config["x"] != 2:
        return resumable_trainable(config)
    for epoch in range(1, config["epochs"] + 1):
        tune.report({"epoch": epoch, "dev_f1": float("nan")})


def test_synchronous_halving_ranks_a_nan_score_last(tmp_path):
    _, scheduler, _, by_id = run_synchronous_halving(
        nan_trainable, [0, 1, 2], 3, tmp_path, grace_period=1, reduction_factor=3,
    )
    epochs = {r.config["x"]: r.metrics["epoch"] for r in by_id.values()}
    assert epochs == {0: 1, 1: 3, 2: 1}
    assert {by_id[t].config["x"] for t in pruned_trial_ids(scheduler)} == {0, 2}


def test_synchronous_halving_with_grace_at_max_t_runs_every_trial_to_the_end(tmp_path):
    """grace_period = max_t (as ABD's pruning rule can make it): no rung before the end, no pruning."""
    searcher, scheduler, _, by_id = run_synchronous_halving(
        resumable_trainable, [0, 1, 2], 2, tmp_path, grace_period=2, reduction_factor=3, stage="abd",
    )
    assert sorted(r.metrics["epoch"] for r in by_id.values()) == [2, 2, 2]
    assert all(r.error is None for r in by_id.values())
    assert pruned_trial_ids(scheduler) == set()
    assert {t.state for t in searcher.study.trials} == {TrialState.COMPLETE}
