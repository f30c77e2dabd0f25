"""Seeded stratified splits: subsampling a split (`limit`), holding out a share per label
combination, and carving dev and test from a corpus that ships no splits (§4.7)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from doktra_tune.data.examples import Example
from doktra_tune.errors import ConfigError

SPLIT_SEED = 0  # seed of every split carved here; independent of the subsampling seed
HOLDOUT_FRACTION = 0.1  # §4.7: 10 % test; the same share again for dev


def stratified_subsample(examples: Sequence[Example], limit: int, seed: int) -> list[Example]:
    """`limit` examples, each label combination keeping its share (largest remainder), seeded.

    The result keeps the input order, so it is deterministic for a given (examples, limit, seed).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"subsample limit must be a positive integer, got {limit!r}; fix the *_limit override")
    if limit >= len(examples):
        return list(examples)
    groups = _group_by_labels(examples)
    n = len(examples)
    quotas = {key: limit * len(idx) / n for key, idx in groups.items()}
    counts = {key: math.floor(q) for key, q in quotas.items()}
    left = limit - sum(counts.values())
    # largest fractional part first; ties: the larger group, then first appearance
    order = sorted(groups, key=lambda k: (-(quotas[k] - counts[k]), -len(groups[k])))
    for key in order[:left]:
        counts[key] += 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for key, idx in groups.items():
        perm = rng.permutation(len(idx))[: counts[key]]
        chosen.extend(idx[i] for i in perm)
    return [examples[i] for i in sorted(chosen)]


def stratified_holdout(
    examples: Sequence[Example], fraction_of: dict[tuple[str, ...], int] | float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split into (rest, held_out): per label combination, hold out round(fraction * n) (or the
    given count) examples chosen by a seeded permutation. Both parts keep the input order."""
    groups = _group_by_labels(examples)
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for key, idx in groups.items():
        if isinstance(fraction_of, dict):
            k = min(fraction_of.get(key, 0), len(idx))
        else:
            k = math.floor(fraction_of * len(idx) + 0.5)
        held.update(idx[i] for i in rng.permutation(len(idx))[:k])
    rest = [ex for i, ex in enumerate(examples) if i not in held]
    out = [ex for i, ex in enumerate(examples) if i in held]
    return rest, out


def _group_by_labels(examples: Sequence[Example]) -> dict[tuple[str, ...], list[int]]:
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(tuple(sorted(ex.labels)), []).append(i)
    return groups


def holdout_splits(examples: Sequence[Example], split: str) -> list[Example]:
    """§4.7: stratified 10 % test, then a stratified dev of the same size per class; 80/10/10."""
    rest, test = stratified_holdout(examples, HOLDOUT_FRACTION, SPLIT_SEED)
    if split == "test":
        return test
    sizes: dict[tuple[str, ...], int] = {}
    for ex in test:
        key = tuple(sorted(ex.labels))
        sizes[key] = sizes.get(key, 0) + 1
    train, dev = stratified_holdout(rest, sizes, SPLIT_SEED + 1)
    return dev if split == "dev" else train
