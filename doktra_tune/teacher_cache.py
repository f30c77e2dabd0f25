"""On-disk cache of the frozen teacher's outputs ([CLS] vectors and logits) per split.

During activation boundary distillation (Sec. 3.3, Algorithm 1 lines 4-10) the teacher is frozen
and in eval mode (the authors call ``teacher_model.eval()`` and run it under ``no_grad``), so its
classification embedding T_[CLS](x) of every example is a pure function of

    (teacher checkpoint content, task, split, the examples' teacher token ids, max_len, precision: fp32 | tf32 | bf16).

It is computed once, stored under ``<cache_dir>/teacher_cls/<key>/`` as ``cls.npy`` [N, H_T] and
``logits.npy`` [N, L] (float32, row i = example i of the split), and reused by every ABD trial and
epoch. An entry is written in full under a unique temporary name and published by one rename, so a
reader never sees half of it. Writers of one key take a file lock, so parallel trials wait for one
another instead of computing it twice; where the file system has no `flock` (Lustre `noflock`) or
its locks are host-local, each writer computes the entry, the first rename wins, and the others
drop their copy and read the winner's (a lost race is a cache hit, never an error).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from doktra_tune import shared_files
from doktra_tune.data import Example
from doktra_tune.device import Runtime, autocast, matmul_precision
from doktra_tune.encoding import EncodedSplit, collate, encode_split
from doktra_tune.errors import ConfigError
from doktra_tune.models import forward_cls_logits, load_checkpoint, read_meta
from doktra_tune.tasks import TaskSpec, check_checkpoint_task, get_task

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SUBDIR = "teacher_cls"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
ENTRY_FILES = ("cls.npy", "logits.npy", "meta.json")
_identity_memo: dict[tuple[str, int, int], str] = {}
_compute_count = 0


def compute_count() -> int:
    """How many times this process ran the teacher over a split (cache misses); for tests/benchmarks."""
    return _compute_count


@dataclass
class TeacherOutputs:
    """The teacher's outputs for one split, row i = example i."""

    cls: np.ndarray  # float32 [N, H_teacher]: hidden_states[-1][:, 0]
    logits: np.ndarray  # float32 [N, L]
    key: str
    path: Path
    computed: bool  # True when this call ran the teacher and its result is the published entry


def checkpoint_identity(checkpoint_dir: str | Path) -> str:
    """sha256 over the checkpoint's config.json and weight files (content, not location).

    Memoised per (path, size, mtime) within the process, so repeated lookups cost a stat.
    """
    root = Path(checkpoint_dir).expanduser().resolve()
    files = sorted(
        p for p in root.iterdir() if p.is_file() and (p.name == "config.json" or p.suffix in _WEIGHT_SUFFIXES)
    )
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in files):
        raise ConfigError(f"teacher checkpoint {str(root)!r} has no weight files; point teacher_checkpoint at a stage's epoch_<k> directory")
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
        file_hash = _identity_memo.get(memo_key)
        if file_hash is None:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
            file_hash = h.hexdigest()
            _identity_memo[memo_key] = file_hash
        digest.update(path.name.encode("utf-8") + b"\x00" + file_hash.encode("ascii"))
    return digest.hexdigest()


def ids_fingerprint(encoded: EncodedSplit) -> str:
    """sha256 of the split's teacher token ids (order included)."""
    digest = hashlib.sha256()
    for ids in encoded.input_ids:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        digest.update(b"\xff")
    return digest.hexdigest()


def cache_key(identity: str, task: str, split: str, fingerprint: str, max_len: int, precision: str) -> str:
    payload = json.dumps(
        {
            "version": CACHE_VERSION,
            "teacher": identity,
            "task": task,
            "split": split,
            "data": fingerprint,
            "max_len": int(max_len),
            "precision": precision,
        },
        sort_keys=True,
    )
    return f"{task}-{split}-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


@torch.no_grad()
def run_teacher(
    model: torch.nn.Module,
    encoded: EncodedSplit,
    pad_token_id: int,
    *,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> tuple[np.ndarray, np.ndarray]:
    """([CLS] [N, H], logits [N, L]) of a frozen model over a split, eval mode, no_grad."""
    model.eval()
    n = len(encoded)
    hidden = int(model.config.hidden_size)
    cls_out = np.zeros((n, hidden), dtype=np.float32)
    logits_out = np.zeros((n, int(model.config.num_labels)), dtype=np.float32)
    # Length-sorted batches make dynamic padding tight; rows are scattered back by index.
    order = np.argsort(encoded.lengths, kind="stable")
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size].tolist()
        batch = collate(encoded, idx, pad_token_id)
        with autocast(device, amp_dtype):
            cls, logits = forward_cls_logits(model, batch)
        cls_out[idx] = cls.float().cpu().numpy()
        logits_out[idx] = logits.float().cpu().numpy()
    return cls_out, logits_out


def is_entry(path: Path) -> bool:
    """Whether ``path`` holds a whole cache entry."""
    return all((path / name).is_file() for name in ENTRY_FILES)


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(path / "cls.npy"), np.load(path / "logits.npy")


def _write_entry(target: Path, cls: np.ndarray, logits: np.ndarray, info: dict[str, Any]) -> bool:
    """Publish one cache entry: written in full under a unique name beside ``target``, then renamed
    onto it. False when another writer published ``target`` first (this copy is dropped)."""
    tmp = shared_files.temp_sibling(target, "tmp")
    tmp.mkdir()
    try:
        np.save(tmp / "cls.npy", cls)
        np.save(tmp / "logits.npy", logits)
        with open(tmp / "meta.json", "w", encoding="utf-8") as fh:
            json.dump(info, fh, indent=2)
        return shared_files.publish_dir(tmp, target, is_entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was published


def teacher_outputs(
    teacher_checkpoint: str | Path,
    task: TaskSpec | str,
    split: str,
    examples: Sequence[Example],
    *,
    max_len: int,
    cache_dir: str | Path,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    batch_size: int = 128,
    teacher: tuple[torch.nn.Module, Any] | None = None,
    tf32: bool = False,
) -> TeacherOutputs:
    """The teacher's [CLS] vectors and logits for ``examples`` (one split), from cache or computed once.

    ``teacher``: an already loaded (model, tokenizer) of ``teacher_checkpoint`` to reuse on a miss;
    ``tf32``: fp32 matmuls in TF32 (``precision=tf32`` on CUDA; part of the key).
    """
    spec = get_task(task)
    ckpt = Path(teacher_checkpoint).expanduser()
    meta = read_meta(ckpt)
    check_checkpoint_task(meta, spec, ckpt, role="teacher checkpoint")
    from transformers import AutoTokenizer

    tokenizer = teacher[1] if teacher is not None else AutoTokenizer.from_pretrained(ckpt)
    encoded = encode_split(
        examples, spec, tokenizer, max_len=max_len, cache_dir=cache_dir, cache_key=f"teacher-{spec.name}-{split}"
    )
    precision = Runtime(device, amp_dtype, tf32).precision_name
    key = cache_key(checkpoint_identity(ckpt), spec.name, split, ids_fingerprint(encoded), max_len, precision)
    base = Path(cache_dir).expanduser() / SUBDIR
    target = base / key
    if is_entry(target):
        cls, logits = _load(target)
        return TeacherOutputs(cls, logits, key, target, computed=False)

    base.mkdir(parents=True, exist_ok=True)
    with shared_files.lock(base / f"{key}.lock"):  # parallel trials with the same key wait here (where locks work)
        if is_entry(target):  # another process finished it while we waited
            cls, logits = _load(target)
            return TeacherOutputs(cls, logits, key, target, computed=False)
        model = teacher[0] if teacher is not None else load_checkpoint(ckpt)[0].to(device)
        cls, logits, published = _compute_entry(
            model, encoded, tokenizer.pad_token_id, target, batch_size=batch_size, device=device,
            amp_dtype=amp_dtype, tf32=tf32, meta={"teacher_checkpoint": str(ckpt.resolve()), "task": spec.name, "split": split,
                                       "n": len(encoded), "max_len": max_len, "precision": precision})
        if not published:  # another writer published the entry first: every trial reads the same arrays
            cls, logits = _load(target)
        return TeacherOutputs(cls, logits, key, target, computed=published)


def _compute_entry(
    model: torch.nn.Module, encoded: Any, pad_token_id: int, target: Path, *, batch_size: int,
    device: torch.device, amp_dtype: torch.dtype | None, meta: dict[str, Any], tf32: bool = False,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Run the teacher over `encoded` and publish the cache entry `target` (with `meta`):
    (cls, logits, whether this copy was published rather than another writer's)."""
    global _compute_count
    start = time.perf_counter()
    with matmul_precision(tf32):
        cls, logits = run_teacher(model, encoded, pad_token_id, batch_size=batch_size, device=device, amp_dtype=amp_dtype)
    _compute_count += 1
    published = _write_entry(target, cls, logits, meta)
    log.info("teacher [CLS] cache: %s %s, %d examples in %.1fs -> %s%s", meta["task"], meta["split"], meta["n"],
             time.perf_counter() - start, target, "" if published else " (published first by another process; reused)")
    return cls, logits, published
