"""The paper preset computes as the authors did: TF32, random batches, BLUE's HoC, FTS's β₂ = 0.1
reachable; the CPU presets keep their named deviations (bucketed batches, fp32), each in the caveats."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from doktra_tune.batching import MEGA_BATCHES, batch_indices, padding_tokens
from doktra_tune.config import DataConfig, StageConfig
from doktra_tune.errors import ConfigError
from doktra_tune.plan.search_plan import build_plan
from doktra_tune.search import compose_config


def _plan(*overrides: str):
    return build_plan(compose_config(list(overrides)))


def test_cfg_job_shows_tf32_random_batches_blue_hoc_and_fts_beta2_grid() -> None:
    """The issue's check, through the real CLI: `--cfg job` of the paper preset."""

    def job(task: str) -> str:
        done = subprocess.run([sys.executable, "-m", "doktra_tune.search", f"task={task}", "--cfg", "job", "--resolve"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    chemprot = job("chemprot")
    assert "  precision: tf32\n" in chemprot and "  batching: random\n" in chemprot
    hoc = job("hoc")
    assert "  data_copy: paper\n" in hoc and "  data_subdir: hoc\n" in hoc and "  data_format: blue_tsv\n" in hoc
    fts = job("fts")
    abd = fts.split("\n  abd:\n")[1].split("\n    precision:")[0]
    assert "      beta:\n      - 0.0\n      - 0.1\n      - 0.3\n      - 0.5\n      - 0.7\n" in abd  # stages.abd.grid.beta


def test_paper_preset_plans() -> None:
    hoc = _plan("task=hoc")
    assert hoc.data.data_format == "blue_tsv" and hoc.data.data_dir.endswith("/hoc")
    assert {s.precision for s in hoc.config.stages.values()} == {"tf32"} and hoc.config.train.batching == "random"
    raw = _plan("task=hoc", "preset=cpu")
    assert raw.data.data_format == "hoc_raw" and raw.data.data_dir.endswith("/hoc_raw")
    assert _plan("task=hoc", "task.data_copy=raw").data.data_format == "hoc_raw"
    assert sorted(_plan("task=fts").spaces["abd"].params["beta"]) == [0.0, 0.1, 0.3, 0.5, 0.7]  # Table A5: 0.1
    assert sorted(_plan("task=fpb").spaces["abd"].params["beta"]) == [0.0, 0.3, 0.5, 0.7]  # §4.2's grid
    assert sorted(_plan("task=fts", "stages.abd.grid.beta=[0.0,0.5]").spaces["abd"].params["beta"]) == [0.0, 0.5]
    for preset in ("cpu", "proxy", "tiny"):
        assert _plan("task=chemprot", f"preset={preset}").config.train.batching == "bucketed", preset


def test_batching_is_a_checked_option() -> None:
    with pytest.raises(ConfigError, match="train.batching='sorted' is unknown; use one of random, bucketed"):
        _plan("task=chemprot", "train.batching=sorted")
    with pytest.raises(ConfigError, match="train.precision='fp16' is unknown; use one of auto, fp32, tf32, bf16"):
        _plan("task=chemprot", "train.precision=fp16")
    data = DataConfig(task="chemprot", data_dir="/data")
    assert StageConfig(data=data, model="minilm", output_dir="/o").batching == "random"  # the authors' sampler
    # a config saved before train.batching existed was bucketed (bucket_by_length=True) or random
    saved = StageConfig(data=data, model="minilm", output_dir="/o").to_dict()
    del saved["batching"]
    assert StageConfig.from_dict({**saved, "bucket_by_length": True}).batching == "bucketed"
    assert StageConfig.from_dict({**saved, "bucket_by_length": False}).batching == "random"


def test_random_batches_are_a_permutation_and_bucketed_ones_sort_within_mega_batches() -> None:
    lengths = np.random.default_rng(0).integers(5, 100, size=1000)
    random_ = batch_indices(lengths, 16, shuffle=True, seed=3, batching="random")
    assert random_ == [np.random.default_rng(3).permutation(1000)[i:i + 16].tolist() for i in range(0, 1000, 16)]
    bucketed = batch_indices(lengths, 16, shuffle=True, seed=3, batching="bucketed")
    assert sorted(i for b in bucketed for i in b) == list(range(1000)) and len(bucketed) == len(random_)
    assert padding_tokens(lengths, bucketed) * 10 < padding_tokens(lengths, random_)
    assert MEGA_BATCHES == 50
    with pytest.raises(ValueError, match="batching='sorted': use one of random, bucketed"):
        batch_indices(lengths, 16, shuffle=True, seed=0, batching="sorted")


def test_caveats_name_bucketed_batches_and_the_precision() -> None:
    from analysis.caveats import comparison_caveats
    from doktra_tune.plan.search_plan import resolved_dict

    def caveats(*overrides: str) -> list[str]:
        return comparison_caveats(resolved_dict(compose_config(list(overrides))))

    assert caveats("task=chemprot") == []
    (training,) = [line for line in caveats("task=chemprot", "train.batching=bucketed", "train.precision=fp32")
                   if line.startswith("training:")]
    assert training == ("training: precision fp32 (paper: tf32); batching bucketed (paper: random, the authors' "
                        "RandomSampler; bucketed batches hold sentences of similar length: other batch-mates, other "
                        "SGD noise).")
    assert caveats("task=hoc") == []  # BLUE's HoC, as the paper
    (data,) = [line for line in caveats("task=hoc", "task.data_copy=raw") if line.startswith("data:")]
    assert "not BLUE's pre-processed HoC files the paper uses (task.data_copy=paper" in data
