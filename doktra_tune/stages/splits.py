"""The data a stage reads: one split's examples, tokenized for the model being trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from doktra_tune.config import DataConfig, StageConfig
from doktra_tune.data import Example, MissingDataError, load_split
from doktra_tune.encoding import EncodedSplit, encode_split
from doktra_tune.hub import host_here
from doktra_tune.tasks import get_task


@dataclass
class SplitData:
    """One split, tokenized for the model being trained."""

    name: str
    examples: list[Example]
    encoded: EncodedSplit


def split_limit(data: DataConfig, split: str) -> int | None:
    """The subsample size of ``split`` (None: the whole split)."""
    return {"train": data.train_limit, "dev": data.dev_limit, "test": data.test_limit}.get(split)


def load_examples(data: DataConfig, split: str) -> list[Example]:
    """The examples of ``split``, subsampled as ``data`` asks; a missing file names the host that
    looked for it (on a cluster: the node whose mount lacks it)."""
    try:
        return load_split(
            data.task,
            split,
            data.data_dir,
            data_format=data.data_format,
            limit=split_limit(data, split),
            seed=data.subsample_seed,
        )
    except MissingDataError as err:
        raise MissingDataError(f"{err} (on {host_here()})", err.path) from err


def load_encoded(data: DataConfig, split: str, tokenizer: Any) -> SplitData:
    """The examples of ``split`` tokenized by ``tokenizer`` (through the encoding cache)."""
    examples = load_examples(data, split)
    encoded = encode_split(
        examples,
        data.task,
        tokenizer,
        max_len=data.max_len,
        cache_dir=data.cache_dir,
        cache_key=f"{get_task(data.task).name}-{split}",
    )
    return SplitData(split, examples, encoded)


def evaluated_splits(cfg: StageConfig) -> list[str]:
    """The splits a stage evaluates: dev (model selection) first, then the rest of ``eval_splits``."""
    return ["dev", *(s for s in cfg.eval_splits if s != "dev")]
