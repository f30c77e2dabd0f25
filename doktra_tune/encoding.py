"""Tokenized splits, training batches (random or length-bucketed) and dynamic padding.

`encode_split` tokenizes a split once per (data fingerprint, tokenizer, max_len): the token ids are
stored as an HF `datasets` Arrow dataset under `<cache_dir>/tokenized/<key>/` (written under a
unique temporary name and renamed, so concurrent trials never read half a file; when two trials,
on one host or two, write the same key at once, the first rename wins and the other keeps the ids it
computed, which are the same) and loaded from there afterwards.
Texts are single sentences: `tokenizer(text, truncation=True, max_length=max_len)`, special tokens
included, no padding (padding happens per batch in `collate`).

`make_batches`: which examples share a step (`StageConfig.batching`: random | bucketed), as
`doktra_tune.batching` says; `collate` pads each batch to its longest sequence.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from doktra_tune import batching, shared_files
from doktra_tune.batching import batch_indices
from doktra_tune.data import Example, label_matrix
from doktra_tune.tasks import TaskSpec, get_task

ENCODING_VERSION = 1  # bump when the tokenization recipe changes


@dataclass
class EncodedSplit:
    input_ids: list[list[int]]  # truncated to max_len (specials included), NOT padded
    labels: np.ndarray  # as label_matrix
    doc_ids: list[str | None]
    cache_path: Path | None = None  # where the token ids live on disk (None: not cached)
    from_cache: bool = False  # True when this call read the cache instead of tokenizing

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.input_ids], dtype=np.int64)


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] padded to the longest in the batch (or pad_to)
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # long [B] or float [B, L]
    indices: torch.Tensor  # long [B]: example indices into the split (teacher-cache lookup)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            self.indices.to(device),
        )

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def data_fingerprint(examples: Sequence[Example]) -> str:
    """sha256 of the texts (order included): the data part of the tokenization cache key."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(ex.text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Name, class, vocabulary and casing of a tokenizer (what decides its ids)."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256(json.dumps(sorted(vocab.items())).encode("utf-8"))
    parts = [
        type(tokenizer).__name__,
        str(getattr(tokenizer, "name_or_path", "")),
        str(len(vocab)),
        digest.hexdigest(),
        str(getattr(tokenizer, "do_lower_case", getattr(tokenizer, "init_kwargs", {}).get("do_lower_case"))),
    ]
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()


def encode_split(
    examples: Sequence[Example],
    task: TaskSpec | str,
    tokenizer: Any,
    *,
    max_len: int,
    cache_dir: str | Path,
    cache_key: str,
) -> EncodedSplit:
    """Token ids of every example (cached on disk by data, tokenizer and max_len), labels, doc ids.

    `cache_key` is a readable prefix (e.g. "chemprot-train"); the full key adds hashes of the
    texts, the tokenizer and max_len, so a changed file or tokenizer never reads stale ids.
    """
    from datasets import Dataset, load_from_disk
    from datasets.utils import logging as ds_logging

    spec = get_task(task)
    examples = list(examples)
    key_hash = hashlib.sha256(
        "|".join(
            [str(ENCODING_VERSION), data_fingerprint(examples), tokenizer_fingerprint(tokenizer), str(max_len)]
        ).encode("utf-8")
    ).hexdigest()[:20]
    safe_prefix = "".join(c if c.isalnum() or c in "-_." else "_" for c in cache_key) or "split"
    base = Path(cache_dir).expanduser() / "tokenized"
    target = base / f"{safe_prefix}-{key_hash}"
    labels = label_matrix(spec, examples)
    doc_ids = [ex.doc_id for ex in examples]

    unusable = False  # an entry there that does not fit these examples: replaced below
    if _is_encoded(target):
        ds = load_from_disk(str(target))
        input_ids = [list(ids) for ids in ds["input_ids"]]
        if len(input_ids) == len(examples):
            return EncodedSplit(input_ids, labels, doc_ids, target, from_cache=True)
        unusable = True

    texts = [ex.text for ex in examples]
    encoded = tokenizer(texts, truncation=True, max_length=max_len)
    input_ids = [list(map(int, ids)) for ids in encoded["input_ids"]]
    base.mkdir(parents=True, exist_ok=True)
    tmp = shared_files.temp_sibling(target, "tmp")
    bars_were_on = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        Dataset.from_dict({"input_ids": input_ids}).save_to_disk(str(tmp))
        if unusable:
            shared_files.replace_dir(tmp, target)
        else:  # False: another process published the same key first; its ids equal these
            shared_files.publish_dir(tmp, target, _is_encoded)
    finally:
        if bars_were_on:
            ds_logging.enable_progress_bar()
        shutil.rmtree(tmp, ignore_errors=True)
    return EncodedSplit(input_ids, labels, doc_ids, target, from_cache=False)


def _is_encoded(path: Path) -> bool:
    """Whether ``path`` holds a whole saved token-id dataset."""
    return (path / "dataset_info.json").is_file()


def make_batches(
    encoded: EncodedSplit,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    batching: str = "random",
) -> list[list[int]]:
    """Example indices per batch of `encoded` (`batching.batch_indices`: random | bucketed)."""
    return batch_indices(encoded.lengths, batch_size, shuffle=shuffle, seed=seed, batching=batching)


def collate(
    encoded: EncodedSplit, indices: list[int], pad_token_id: int, pad_to: int | None = None
) -> Batch:
    """Right-pad the batch's ids to its longest sequence (or to exactly `pad_to`)."""
    seqs = [encoded.input_ids[i] for i in indices]
    longest = max((len(s) for s in seqs), default=0)
    width = longest if pad_to is None else pad_to
    if longest > width:
        raise ValueError(f"pad_to={pad_to} is shorter than the longest sequence ({longest})")
    ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    label_rows = encoded.labels[indices]
    labels = torch.as_tensor(label_rows, dtype=torch.float32 if label_rows.ndim == 2 else torch.long)
    return Batch(ids, mask, labels, torch.as_tensor(indices, dtype=torch.long))


def padding_tokens(encoded: EncodedSplit, batches: list[list[int]]) -> int:
    """Pad positions dynamic padding adds over `batches` (used to measure bucketing)."""
    return batching.padding_tokens(encoded.lengths, batches)
