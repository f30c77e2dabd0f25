"""doktra_tune.stages on real ChemProt / HoC subsets with tiny random encoders (seconds per test).

The tiny end-to-end pipeline CTT -> student FT -> ABD (Algorithm 1) is built once per module and
shared by the tests that inspect it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from doktra_tune import teacher_cache
from doktra_tune.config import DataConfig, DistillConfig, EpochReport, StageConfig
from doktra_tune.errors import ConfigError, NonFiniteLossError
from doktra_tune.stages import (
    distill,
    evaluate_checkpoint,
    train_student,
    train_teacher,
)
from doktra_tune.stages.step_losses import switch_epoch

TEACHER = "random:bert:L2-H64"
STUDENT = "random:albert:L2-H48"


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_threads():
    """The stages run with torch_threads=1 (tiny models; robust on a busy 2-core box); restore after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stages")


@pytest.fixture(scope="module")
def chemprot(data_root, workdir) -> DataConfig:
    return DataConfig(
        task="chemprot",
        data_dir=str(data_root / "chemprot_scibert"),
        max_len=64,
        train_limit=64,
        dev_limit=48,
        cache_dir=str(workdir / "cache"),
    )


def _stage(data: DataConfig, model: str, out: Path, **kw) -> StageConfig:
    base = dict(lr=1e-3, epochs=2, batch_size=16, eval_batch_size=64, torch_threads=1, keep_checkpoints="last")
    base.update(kw)
    return StageConfig(data=data, model=model, output_dir=str(out), **base)


@pytest.fixture(scope="module")
def pipeline(chemprot, workdir):
    """CTT teacher (beta1 = 0.3), fine-tuned student, then 5 distillation epochs with gamma = 0.6."""
    teacher = train_teacher(_stage(chemprot, TEACHER, workdir / "ctt", beta=0.3))
    student = train_student(_stage(chemprot, STUDENT, workdir / "student"))
    count_before = teacher_cache.compute_count()
    reports: list[EpochReport] = []
    abd_cfg = DistillConfig(
        data=chemprot,
        model=str(student.last_checkpoint),
        teacher_checkpoint=str(teacher.last_checkpoint),
        output_dir=str(workdir / "abd"),
        lr=1e-3,
        epochs=5,
        gamma=0.6,
        beta=0.3,
        batch_size=16,
        torch_threads=1,
        keep_checkpoints="best_and_last",
    )
    abd = distill(abd_cfg, on_epoch=reports.append)
    return {
        "teacher": teacher,
        "student": student,
        "abd": abd,
        "abd_cfg": abd_cfg,
        "reports": reports,
        "computed": teacher_cache.compute_count() - count_before,
    }


def test_epoch_reports_carry_the_contract_metrics(pipeline):
    for result in (pipeline["teacher"], pipeline["student"]):
        assert len(result.history) == 2
        for m in result.history:
            for key in ("epoch", "train_loss", "epoch_seconds", "dev_f1", "dev_ece", "dev_loss", "dev_accuracy"):
                assert math.isfinite(m[key]), key
            assert 0.0 <= m["dev_f1"] <= 1.0 and 0.0 <= m["dev_ece"] <= 1.0
            assert "phase" not in m and "dev_lat" not in m
    abd = pipeline["abd"]
    assert [m["epoch"] for m in abd.history] == [1, 2, 3, 4, 5]
    assert all("dev_lat" in m and "phase" in m for m in abd.history)
    assert [r.epoch for r in pipeline["reports"]] == [1, 2, 3, 4, 5]


def test_switch_rule_matches_authors_code(pipeline):
    # epoch_switch = int(epochs * gamma) = int(5 * 0.6) = 3: epochs 0, 1, 2 (0-based) are Eq. 5.
    assert switch_epoch(5, 0.6) == 3 and switch_epoch(10, 0.9) == 9 and switch_epoch(3, 0.0) == 0
    assert [m["phase"] for m in pipeline["abd"].history] == [0.0, 0.0, 0.0, 1.0, 1.0]
    # train_lat (Eq. 4 on training batches) exists only while distilling
    assert ["train_lat" in m for m in pipeline["abd"].history] == [True, True, True, False, False]


def test_abd_reduces_activation_disagreement(pipeline, chemprot, tmp_path):
    """Eq. 5 training pulls the student's [CLS] signs onto the teacher's: L_AT (Eq. 4) falls."""
    abd = pipeline["abd"].history
    before = evaluate_checkpoint(
        pipeline["student"].last_checkpoint,
        chemprot,
        "dev",
        teacher_checkpoint=pipeline["teacher"].last_checkpoint,
    ).metrics["lat"]
    dev_lat = [m["dev_lat"] for m in abd[:3]]
    train_lat = [m["train_lat"] for m in abd[:3]]
    assert before > 5.0  # a fine-tuned student disagrees with the teacher on many of 48 units
    assert dev_lat[0] < before and dev_lat[-1] < 0.5 * before
    assert all(b <= a for a, b in zip(dev_lat, dev_lat[1:]))
    assert train_lat[-1] < train_lat[0]
    # the Eq. 5 loss itself falls while distilling
    losses = [m["train_loss"] for m in abd[:3]]
    assert losses[2] < losses[0]
    # every epoch carries the pre-ABD baseline: the starting student against the teacher projected by
    # the run's own map (seed 42; `before` above used a checkpoint's default, seed 0)
    start = Path(tmp_path) / "student_as_started"
    shutil.copytree(pipeline["student"].last_checkpoint, start)
    meta = json.loads((start / "doktra_meta.json").read_text())
    (start / "doktra_meta.json").write_text(json.dumps({**meta, "projection": {"mode": "fixed_random", "seed": 42}}))
    baseline = evaluate_checkpoint(start, chemprot, "dev", teacher_checkpoint=pipeline["teacher"].last_checkpoint)
    assert [m["dev_lat_start"] for m in abd] == pytest.approx([baseline.metrics["lat"]] * 5, abs=1e-9)
    # the refinement epochs (4, 5) carry dev L_AT at the switch (epoch 3), what refinement starts from
    assert ["dev_lat_switch" in m for m in abd] == [False, False, False, True, True]
    assert abd[3]["dev_lat_switch"] == abd[4]["dev_lat_switch"] == abd[2]["dev_lat"]


def test_evaluate_checkpoint_reproduces_the_last_epoch(pipeline, chemprot):
    abd = pipeline["abd"]
    last = abd.history[-1]
    result = evaluate_checkpoint(
        abd.last_checkpoint, chemprot, "dev", teacher_checkpoint=pipeline["teacher"].last_checkpoint
    )
    assert result.metrics["f1"] == pytest.approx(last["dev_f1"], abs=1e-9)
    assert result.metrics["ece"] == pytest.approx(last["dev_ece"], abs=1e-6)
    assert result.metrics["loss"] == pytest.approx(last["dev_loss"], rel=1e-5)
    assert result.metrics["lat"] == pytest.approx(last["dev_lat"], abs=1e-6)
    n = 48
    assert result.probs.shape == (n, 6) and np.allclose(result.probs.sum(axis=1), 1.0)
    assert result.labels.shape == (n,) and len(result.doc_ids) == n
    assert result.confusion.shape == (6, 6) and result.confusion.sum() == n
    assert result.reliability.n == n and sum(result.reliability.count) == n
    assert result.metrics["accuracy"] == pytest.approx(np.trace(result.confusion) / n)
    assert result.confusion_dict()["labels"] == ["CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false"]


def test_test_split_once_at_the_end_and_evaluations_kept(chemprot, tmp_path):
    """eval_every_epoch=False (the final runs): test is scored after the last epoch only, and the
    stage hands back that evaluation (what the trainables log) equal to re-evaluating the checkpoint."""
    cfg = _stage(chemprot.__class__(**{**chemprot.__dict__, "test_limit": 40}), STUDENT, tmp_path / "s",
                 epochs=2, eval_splits=("dev", "test"), eval_every_epoch=False, keep_checkpoints="last")
    result = train_student(cfg)
    assert "test_f1" not in result.history[0] and "dev_f1" in result.history[0]
    last = result.history[-1]
    assert {"test_f1", "test_ece", "dev_f1"} <= set(last)
    assert set(result.last_evaluations) == {"dev", "test"}
    ev = result.last_evaluations["test"]
    assert ev.metrics["f1"] == last["test_f1"] and ev.reliability.n == 40 and ev.confusion.sum() == 40
    again = evaluate_checkpoint(result.last_checkpoint, cfg.data, "test")
    assert again.metrics["f1"] == pytest.approx(ev.metrics["f1"], abs=1e-9)
    assert np.allclose(again.probs, ev.probs, atol=1e-6)
    assert set(result.best_evaluations) <= {"dev", "test"} and "dev" in result.best_evaluations


def test_teacher_cache_is_computed_once_and_reused(pipeline, workdir):
    assert pipeline["computed"] == 2  # train + dev, first distillation
    files = sorted((workdir / "cache" / "teacher_cls").glob("*/cls.npy"))
    assert len(files) == 2
    mtimes = [f.stat().st_mtime_ns for f in files]
    count = teacher_cache.compute_count()
    cfg = pipeline["abd_cfg"]
    again = DistillConfig.from_dict({**cfg.to_dict(), "output_dir": str(workdir / "abd_again"), "epochs": 1, "keep_checkpoints": "none"})
    distill(again)
    assert teacher_cache.compute_count() == count  # cache hit: the teacher did not run
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    cached = np.load(files[0])
    assert cached.dtype == np.float32 and cached.shape[1] == 64  # teacher H, before projection


def test_keep_best_and_last(pipeline):
    abd = pipeline["abd"]
    dirs = sorted(p.name for p in Path(abd.last_checkpoint).parent.iterdir() if p.name.startswith("epoch_"))
    assert dirs == sorted({f"epoch_{abd.best_epoch}", "epoch_5"})
    f1s = [m["dev_f1"] for m in abd.history]
    assert abd.best_epoch == int(np.argmax(f1s)) + 1  # first maximum: ties go to the earlier epoch
    assert Path(abd.best_checkpoint).name == f"epoch_{abd.best_epoch}"


@pytest.mark.parametrize(
    "mode, expected",
    [("last", {"epoch_3"}), ("none", set()), ("best", "best"), ("best_and_last", "best_and_last")],
)
def test_keep_checkpoints(chemprot, tmp_path, mode, expected):
    seen: list[bool] = []

    def on_epoch(report: EpochReport) -> None:
        assert report.checkpoint_dir is not None
        seen.append((report.checkpoint_dir / "doktra_meta.json").is_file())

    result = train_student(_stage(chemprot, STUDENT, tmp_path, epochs=3, keep_checkpoints=mode), on_epoch=on_epoch)
    assert seen == [True, True, True]  # every epoch's checkpoint is on disk during the callback
    if expected == "best":
        expected = {f"epoch_{result.best_epoch}"}
    elif expected == "best_and_last":
        expected = {f"epoch_{result.best_epoch}", "epoch_3"}
    assert {p.name for p in tmp_path.iterdir() if p.name.startswith("epoch_")} == expected
    assert (result.last_checkpoint is not None) == ("epoch_3" in expected)
    assert (result.best_checkpoint is not None) == (f"epoch_{result.best_epoch}" in expected)


def test_same_seed_same_run_different_seed_different_run(chemprot, tmp_path):
    runs = [
        train_student(_stage(chemprot, STUDENT, tmp_path / f"run{i}", seed=seed, keep_checkpoints="none"))
        for i, seed in enumerate((5, 5, 6))
    ]
    keys = ("train_loss", "dev_f1", "dev_loss", "dev_ece")
    first, second, other = ([[m[k] for k in keys] for m in r.history] for r in runs)
    assert first == second  # bit-identical on CPU
    assert [row[0] for row in first] != [row[0] for row in other]


def test_non_finite_loss_raises(chemprot, tmp_path):
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train_teacher(_stage(chemprot, TEACHER, tmp_path, lr=1e30, keep_checkpoints="none"))


def test_bad_model_spec_and_missing_teacher_are_config_errors(chemprot, tmp_path, pipeline):
    with pytest.raises(ConfigError, match="random:gpt:L2-H64"):
        train_teacher(_stage(chemprot, "random:gpt:L2-H64", tmp_path))
    with pytest.raises(ConfigError, match="teacher_checkpoint"):
        distill(DistillConfig(data=chemprot, model=STUDENT, output_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="not a doktra checkpoint"):
        distill(DistillConfig(data=chemprot, model=STUDENT, output_dir=str(tmp_path), teacher_checkpoint=str(tmp_path)))
    with pytest.raises(ConfigError, match="gamma"):
        distill(
            DistillConfig(
                data=chemprot, model=STUDENT, output_dir=str(tmp_path),
                teacher_checkpoint=str(pipeline["teacher"].last_checkpoint), gamma=1.5,
            )
        )


def test_kld_variant_and_learned_projection(chemprot, tmp_path, pipeline):
    common = dict(
        data=chemprot, model=str(pipeline["student"].last_checkpoint),
        teacher_checkpoint=str(pipeline["teacher"].last_checkpoint),
        lr=1e-3, epochs=2, gamma=0.5, batch_size=16, torch_threads=1,
    )
    kld = distill(DistillConfig(output_dir=str(tmp_path / "kld"), distill_loss="kld", **common))
    assert [m["phase"] for m in kld.history] == [0.0, 1.0]
    assert kld.history[0]["train_loss"] >= 0.0 and "train_lat" not in kld.history[0]
    learned = distill(DistillConfig(output_dir=str(tmp_path / "learned"), projection="learned", keep_checkpoints="last", **common))
    assert (Path(learned.last_checkpoint) / "teacher_projection.pt").is_file()
    again = evaluate_checkpoint(
        learned.last_checkpoint, chemprot, "dev", teacher_checkpoint=pipeline["teacher"].last_checkpoint
    )
    assert again.metrics["lat"] == pytest.approx(learned.history[-1]["dev_lat"], abs=1e-6)


def test_projection_is_identity_for_equal_widths_and_seeded_by_the_run(chemprot, tmp_path, pipeline):
    """§4.2 / the authors' code: no teacher map when the widths are equal (auto), the random map
    otherwise, seeded by the run's seed; what was used is recorded in the checkpoint."""
    student_64 = train_student(_stage(chemprot, "random:bert:L1-H64", tmp_path / "s64", epochs=1))
    common = dict(data=chemprot, teacher_checkpoint=str(pipeline["teacher"].last_checkpoint), lr=1e-3, epochs=1,
                  gamma=1.0, batch_size=16, torch_threads=1, keep_checkpoints="last")
    same = distill(DistillConfig(model=str(student_64.last_checkpoint), output_dir=str(tmp_path / "same"), **common))
    meta = json.loads((Path(same.last_checkpoint) / "doktra_meta.json").read_text())
    assert meta["projection"] == {"mode": "identity", "seed": 42}
    # teacher H64 vs student H48: the frozen random map, seeded by the run's seed 7
    other = distill(DistillConfig(model=str(pipeline["student"].last_checkpoint), output_dir=str(tmp_path / "other"),
                                  seed=7, **common))
    meta = json.loads((Path(other.last_checkpoint) / "doktra_meta.json").read_text())
    assert meta["projection"] == {"mode": "fixed_random", "seed": 7}
    again = evaluate_checkpoint(same.last_checkpoint, chemprot, "dev", teacher_checkpoint=pipeline["teacher"].last_checkpoint)
    assert again.metrics["lat"] == pytest.approx(same.history[-1]["dev_lat"], abs=1e-6)


def test_multi_label_hoc_student(data_root, tmp_path):
    data = DataConfig(
        task="hoc", data_dir=str(data_root / "hoc_raw"), data_format="hoc_raw", max_len=48,
        train_limit=64, dev_limit=40, cache_dir=str(tmp_path / "cache"),
    )
    result = train_student(_stage(data, "random:bert:L1-H64", tmp_path / "hoc", epochs=1, eval_splits=("dev", "test"), keep_checkpoints="last"))
    m = result.history[0]
    assert 0.0 <= m["dev_f1"] <= 1.0 and math.isfinite(m["dev_loss"]) and "test_f1" in m
    ev = evaluate_checkpoint(result.last_checkpoint, data, "dev")
    assert ev.probs.shape == (40, 10) and ev.labels.shape == (40, 10)
    assert ev.confusion.shape == (10, 2, 2)
    assert ev.reliability.n == 400  # one decision per (sentence, label)


def _teacher_outputs_in_process(args: tuple[str, dict, str]) -> tuple[bool, float]:
    """Run in a separate (spawned) process: fetch the teacher outputs of the dev split."""
    import torch as _torch

    from doktra_tune.stages.splits import load_examples
    from doktra_tune.teacher_cache import teacher_outputs

    _torch.set_num_threads(1)
    checkpoint, data_dict, key_split = args
    data = DataConfig(**data_dict)
    outs = teacher_outputs(
        checkpoint, data.task, key_split, load_examples(data, key_split),
        max_len=data.max_len, cache_dir=data.cache_dir, device=_torch.device("cpu"), amp_dtype=None,
    )
    return outs.computed, float(outs.cls.sum())


@pytest.mark.slow
def test_parallel_trials_compute_the_teacher_cache_once(pipeline, chemprot, tmp_path):
    import dataclasses
    import multiprocessing

    data = dataclasses.replace(chemprot, cache_dir=str(tmp_path / "fresh_cache"))
    job = (str(pipeline["teacher"].last_checkpoint), dataclasses.asdict(data), "dev")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_teacher_outputs_in_process, [job, job])
    assert sorted(computed for computed, _ in results) == [False, True]  # one computed, one waited and read
    assert results[0][1] == results[1][1]
    assert len(list((tmp_path / "fresh_cache" / "teacher_cls").glob("*/cls.npy"))) == 1


def test_bf16_precision_trains_on_cpu(chemprot, tmp_path):
    """precision=bf16 (the cpu preset's teacher): autocast forward, fp32 master weights and loss."""
    result = train_student(_stage(chemprot, STUDENT, tmp_path / "bf16", epochs=1, precision="bf16"))
    m = result.history[0]
    assert math.isfinite(m["train_loss"]) and 0.0 <= m["dev_f1"] <= 1.0 and 0.0 <= m["dev_ece"] <= 1.0


def _copying_epoch(epoch: int, dest: Path):
    """on_epoch callback that keeps a copy of epoch `epoch`'s checkpoint at `dest`."""
    import shutil

    def on_epoch(rep: EpochReport) -> None:
        if rep.epoch == epoch:
            shutil.copytree(rep.checkpoint_dir, dest)

    return on_epoch


RESUME_KEYS = ("epoch", "train_loss", "lr", "dev_f1", "dev_loss", "dev_ece")


def test_resume_from_a_paused_epoch_equals_the_uninterrupted_run(chemprot, tmp_path):
    """What synchronous halving relies on: stop after epoch 1, go on later, same numbers."""
    kw = dict(epochs=3, keep_checkpoints="last", save_training_state=True)
    straight = train_student(_stage(chemprot, STUDENT, tmp_path / "straight", **kw),
                             on_epoch=_copying_epoch(1, tmp_path / "paused"))
    assert (tmp_path / "paused" / "training_state.pt").is_file()
    reports: list[EpochReport] = []
    resumed = train_student(
        _stage(chemprot, STUDENT, tmp_path / "resumed", resume_from=str(tmp_path / "paused"), **kw),
        on_epoch=reports.append,
    )
    assert [r.epoch for r in reports] == [2, 3]  # only the epochs left run and are reported
    rows = lambda r: [[m[k] for k in RESUME_KEYS] for m in r.history]  # noqa: E731
    assert rows(resumed) == rows(straight)  # bit-identical on CPU, the restored epoch 1 included
    assert resumed.best_epoch == straight.best_epoch


def test_resumed_abd_with_learned_projection_equals_the_uninterrupted_run(chemprot, tmp_path, pipeline):
    common = dict(
        data=chemprot, model=str(pipeline["student"].last_checkpoint),
        teacher_checkpoint=str(pipeline["teacher"].last_checkpoint), lr=1e-3, epochs=3, gamma=0.5,
        beta=0.3, batch_size=16, torch_threads=1, projection="learned", keep_checkpoints="last",
        save_training_state=True,
    )
    straight = distill(DistillConfig(output_dir=str(tmp_path / "a"), **common),
                       on_epoch=_copying_epoch(1, tmp_path / "paused"))
    resumed = distill(DistillConfig(output_dir=str(tmp_path / "b"), resume_from=str(tmp_path / "paused"), **common))
    keys = RESUME_KEYS + ("phase", "dev_lat")
    assert [[m[k] for k in keys] for m in resumed.history] == [[m[k] for k in keys] for m in straight.history]


def test_resume_from_needs_training_state_and_the_same_settings(chemprot, tmp_path, pipeline):
    with pytest.raises(ConfigError, match="training_state.pt"):
        train_student(_stage(chemprot, STUDENT, tmp_path / "x", resume_from=str(pipeline["student"].last_checkpoint)))
    train_student(_stage(chemprot, STUDENT, tmp_path / "a", epochs=2, save_training_state=True),
                  on_epoch=_copying_epoch(1, tmp_path / "paused"))
    with pytest.raises(ConfigError, match=r"different configuration \(lr\)"):
        train_student(_stage(chemprot, STUDENT, tmp_path / "b", epochs=2, lr=5e-4, save_training_state=True,
                             resume_from=str(tmp_path / "paused")))


def _scores(history: list[dict]) -> list[dict]:
    """Per-epoch metrics without the timings (which never repeat)."""
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in history]


def test_a_shared_activation_boundary_prefix_gives_every_grid_point_to_the_last_digit(chemprot, tmp_path, pipeline):
    """Issue 10's contract: before int(gamma * e2) a trial trains on Eq. 5 alone, where beta2 plays no
    part and gamma only decides when the phase ends. One trunk (the AB phase up to the latest switch,
    saving the training state at each switch) and branches resumed from it give the same per-epoch
    dev metrics and test metrics as every grid point run on its own."""
    import shutil

    common = dict(data=chemprot, model=str(pipeline["student"].last_checkpoint),
                  teacher_checkpoint=str(pipeline["teacher"].last_checkpoint), lr=1e-3, epochs=4, batch_size=16,
                  torch_threads=1, eval_splits=("dev", "test"), eval_every_epoch=False, keep_checkpoints="last")
    grid = [(beta, gamma) for gamma in (0.5, 0.75) for beta in (0.0, 0.3)]
    alone = {point: distill(DistillConfig(output_dir=str(tmp_path / f"alone-{point}"), beta=point[0], gamma=point[1],
                                          **common)) for point in grid}
    switches = sorted({switch_epoch(4, gamma) for _, gamma in grid})  # [2, 3]
    stash = tmp_path / "trunk-published"

    def publish(report: EpochReport) -> None:
        if report.epoch in switches:
            shutil.copytree(report.checkpoint_dir, stash / f"epoch_{report.epoch}")

    trunk = distill(DistillConfig(output_dir=str(tmp_path / "trunk"), beta=0.0, gamma=0.75, save_training_state=True,
                                  stop_after_epoch=max(switches), **common), on_epoch=publish)
    assert len(trunk.history) == 3 and all(row["phase"] == 0.0 for row in trunk.history)
    for beta, gamma in grid:
        start = stash / f"epoch_{switch_epoch(4, gamma)}"
        branch = distill(DistillConfig(output_dir=str(tmp_path / f"branch-{beta}-{gamma}"), beta=beta, gamma=gamma,
                                       resume_from=str(start), **common))
        assert _scores(branch.history) == _scores(alone[(beta, gamma)].history), (beta, gamma)
        assert branch.history[-1]["test_f1"] == alone[(beta, gamma)].history[-1]["test_f1"]
    # a checkpoint after the switch of either run cannot be shared: beta2 or gamma already acted
    with pytest.raises(ConfigError, match=r"different configuration \(beta, gamma\)"):
        distill(DistillConfig(output_dir=str(tmp_path / "late"), beta=0.3, gamma=0.5, resume_from=str(stash / "epoch_3"),
                              **common))


def test_teacher_cache_keys_tf32_apart_and_a_tf32_teacher_on_cpu_reads_fp32s(pipeline, chemprot, tmp_path):
    """The cache key holds the precision the teacher computes in (fp32 | tf32 | bf16): a TF32 pass (CUDA)
    is its own entry; on a CPU a teacher trained with precision=tf32 computes in fp32 and reads fp32's."""
    import dataclasses

    import torch as _torch

    from doktra_tune.device import resolve_runtime
    from doktra_tune.stages.splits import load_examples
    from doktra_tune.stages.teacher import teacher_runtime
    from doktra_tune.teacher_cache import teacher_outputs

    data = dataclasses.replace(chemprot, cache_dir=str(tmp_path / "cache"))
    checkpoint = pipeline["teacher"].last_checkpoint
    examples = load_examples(data, "dev")
    common = dict(max_len=data.max_len, cache_dir=data.cache_dir, device=_torch.device("cpu"), amp_dtype=None)
    fp32 = teacher_outputs(checkpoint, data.task, "dev", examples, **common)
    tf32 = teacher_outputs(checkpoint, data.task, "dev", examples, tf32=True, **common)
    assert fp32.computed and tf32.computed and fp32.key != tf32.key
    assert _torch.equal(_torch.from_numpy(fp32.cls), _torch.from_numpy(tf32.cls))  # no TF32 on a CPU: same numbers
    meta_path = Path(checkpoint) / "doktra_meta.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["precision"] = "tf32"
    tf32_teacher = tmp_path / "tf32_teacher"
    import shutil

    shutil.copytree(checkpoint, tf32_teacher)
    (tf32_teacher / "doktra_meta.json").write_text(json.dumps(meta))
    rt = teacher_runtime(tf32_teacher, resolve_runtime("cpu", "fp32"))
    assert rt.amp_dtype is None and rt.tf32 is False
