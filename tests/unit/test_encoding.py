"""Tokenization cache, length bucketing and padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from doktra_tune.data import Example, load_split
from doktra_tune.encoding import (
    EncodedSplit,
    collate,
    encode_split,
    make_batches,
    padding_tokens,
)


class CountingTokenizer:
    """Wraps a real tokenizer and counts how often it tokenizes (to observe cache hits)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0
        self.name_or_path = inner.name_or_path

    def get_vocab(self):
        return self.inner.get_vocab()

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def _examples(n=6):
    texts = ["a b c d e f g h", "short", "a much longer sentence with many words in it here", "x y", "one two three", "z"]
    return [Example(texts[i % len(texts)] + f" {i}", (("negative", "neutral", "positive")[i % 3],)) for i in range(n)]


def test_encode_split_truncates_and_caches(tmp_path, minilm_tokenizer):
    tok = CountingTokenizer(minilm_tokenizer)
    examples = _examples()
    enc = encode_split(examples, "fpb", tok, max_len=8, cache_dir=tmp_path, cache_key="fpb/train")
    assert tok.calls == 1 and not enc.from_cache and len(enc) == 6
    assert enc.cache_path.parent == tmp_path / "tokenized" and enc.cache_path.name.startswith("fpb_train-")
    expected = minilm_tokenizer([ex.text for ex in examples], truncation=True, max_length=8)["input_ids"]
    assert enc.input_ids == expected
    assert max(len(ids) for ids in enc.input_ids) == 8
    assert enc.input_ids[1][0] == minilm_tokenizer.cls_token_id and enc.input_ids[1][-1] == minilm_tokenizer.sep_token_id
    assert enc.labels.tolist() == [0, 1, 2, 0, 1, 2]

    again = encode_split(examples, "fpb", tok, max_len=8, cache_dir=tmp_path, cache_key="fpb/train")
    assert tok.calls == 1 and again.from_cache and again.input_ids == enc.input_ids
    assert again.cache_path == enc.cache_path

    # a different max_len or different texts is a different key
    encode_split(examples, "fpb", tok, max_len=16, cache_dir=tmp_path, cache_key="fpb/train")
    encode_split(examples[:5], "fpb", tok, max_len=8, cache_dir=tmp_path, cache_key="fpb/train")
    assert tok.calls == 3
    assert len(list((tmp_path / "tokenized").iterdir())) == 3


def test_encode_multi_label_keeps_doc_ids(tmp_path, minilm_tokenizer, fixtures_dir):
    examples = load_split("hoc", "train", fixtures_dir / "blue_hoc")
    enc = encode_split(examples, "hoc", minilm_tokenizer, max_len=32, cache_dir=tmp_path, cache_key="hoc")
    assert enc.doc_ids == ["1001", "1001", "1002", "1002"]
    assert enc.labels.shape == (4, 10)
    batch = collate(enc, [1, 2], minilm_tokenizer.pad_token_id)
    assert batch.labels.dtype == torch.float32 and batch.labels.sum().item() == 2.0


def _toy(lengths):
    ids = [[101] + [7] * (n - 2) + [102] for n in lengths]
    return EncodedSplit(ids, np.arange(len(lengths)) % 2, [None] * len(lengths))


def test_collate_dynamic_and_fixed_padding():
    enc = _toy([3, 5, 4])
    batch = collate(enc, [0, 1], pad_token_id=0)
    assert batch.input_ids.tolist() == [[101, 7, 102, 0, 0], [101, 7, 7, 7, 102]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch.labels.dtype == torch.long and batch.labels.tolist() == [0, 1]
    assert batch.indices.tolist() == [0, 1]
    fixed = collate(enc, [2], pad_token_id=0, pad_to=6)
    assert fixed.input_ids.shape == (1, 6) and fixed.attention_mask.sum().item() == 4
    with pytest.raises(ValueError):
        collate(enc, [1], pad_token_id=0, pad_to=4)


def test_make_batches_cover_every_index_once_and_are_seeded():
    enc = _toy([3 + (i * 7) % 20 for i in range(103)])
    for batching in ("bucketed", "random"):
        batches = make_batches(enc, 10, shuffle=True, seed=1, batching=batching)
        assert sorted(i for b in batches for i in b) == list(range(103))
        assert len(batches) == 11 and sorted(len(b) for b in batches)[0] == 3
        assert batches == make_batches(enc, 10, shuffle=True, seed=1, batching=batching)
        assert batches != make_batches(enc, 10, shuffle=True, seed=2, batching=batching)
    assert make_batches(enc, 50, shuffle=False, seed=0) == [
        list(range(0, 50)), list(range(50, 100)), [100, 101, 102]
    ]


def test_bucketing_reduces_padding_on_real_chemprot(tmp_path, data_root, minilm_tokenizer):
    examples = load_split("chemprot", "train", data_root / "chemprot_scibert")
    enc = encode_split(examples, "chemprot", minilm_tokenizer, max_len=128, cache_dir=tmp_path, cache_key="chemprot-train")
    assert len(enc) == 4169
    bucketed = padding_tokens(enc, make_batches(enc, 32, shuffle=True, seed=0, batching="bucketed"))
    plain = padding_tokens(enc, make_batches(enc, 32, shuffle=True, seed=0, batching="random"))
    real_tokens = int(enc.lengths.sum())
    # measured: ~4.7k pad tokens bucketed vs ~233k plain for ~277k real tokens
    assert bucketed * 10 < plain
    assert bucketed < 0.05 * real_tokens
