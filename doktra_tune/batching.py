"""Which examples share a training step (`StageConfig.batching`, README: Protocol), from their token
lengths alone: numpy only, so the dry run's estimate (`plan.estimate`) counts the very batches a
stage trains on.

* `random` (the authors' `RandomSampler` over the training set): a seeded permutation cut into
  batches; each batch is padded to its own longest sequence (`encoding.collate`). The authors pad
  every batch to max_len: the same numbers at more cost, the attention mask hiding the padding.
* `bucketed`: the permutation is cut into mega-batches of `MEGA_BATCHES` batches, each sorted by
  length and cut into batches, then the batch order is shuffled: batches hold similar lengths, so
  padding wastes few tokens, but which examples share a step (the SGD noise) is not the authors'.
`shuffle=False` (evaluation) keeps the split order in contiguous batches.
"""

from __future__ import annotations

import numpy as np

from doktra_tune.config import BATCHINGS

MEGA_BATCHES = 50  # batches per length-sorted mega-batch (bucketed)


def batch_indices(lengths: np.ndarray, batch_size: int, *, shuffle: bool, seed: int,
                  batching: str = "random") -> list[list[int]]:
    """Example indices per batch (the last batch may be smaller); deterministic for a seed."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batching not in BATCHINGS:
        raise ValueError(f"batching={batching!r}: use one of {', '.join(BATCHINGS)}")
    n = len(lengths)
    if not shuffle:
        return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if batching == "random":
        return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    mega = batch_size * MEGA_BATCHES
    batches: list[list[int]] = []
    for start in range(0, n, mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    batch_order = rng.permutation(len(batches))
    return [batches[i] for i in batch_order]


def batch_widths(lengths: np.ndarray, batches: list[list[int]]) -> list[tuple[int, int]]:
    """(examples, padded width) of every batch: each padded to its longest sequence."""
    return [(len(b), int(lengths[b].max())) for b in batches if b]


def padding_tokens(lengths: np.ndarray, batches: list[list[int]]) -> int:
    """Pad positions padding each batch to its longest adds over `batches`."""
    return int(sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches if b))
