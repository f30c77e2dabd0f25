"""What the processes of tests/unit/test_shared_files.py run (spawned: a module of its own, so that a
child imports only what it uses)."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from doktra_tune import shared_files

TEXTS = [f"<< compound {i} >> inhibits [[ gene {i % 5} ]] in cell line {i % 3}" for i in range(24)]


def rendezvous(folder: Path, name: str, parties: int = 2, timeout_s: float = 120.0) -> None:
    """Wait until `parties` processes reached `name` (a file each under `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.{os.getpid()}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(folder.glob(f"{name}.*"))) < parties and time.monotonic() < deadline:
        time.sleep(0.01)


def setup_child(barrier: str, no_flock: bool, meet_before_publish: bool, no_exchange: bool = False) -> dict:
    """Set up a spawned child: `flock` that raises ENOLCK (Lustre `noflock`), a rendezvous before
    every publish (both writers have computed the entry: a real race), no RENAME_EXCHANGE; then
    wait for the other child. Returns what the child's publishes answer, by target name."""
    import fcntl

    published: dict[str, list[bool]] = {}
    if no_flock:
        def flock(*_args: object) -> None:
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

        fcntl.flock = flock
    if no_exchange:
        shared_files._RENAMEAT2 = None
    real_publish = shared_files.publish_dir

    def publish_dir(tmp: Path, target: Path, is_complete: Callable[[Path], bool]) -> bool:
        if meet_before_publish:
            rendezvous(Path(barrier), target.name)
        won = real_publish(tmp, target, is_complete)
        published.setdefault(target.name, []).append(won)
        return won

    shared_files.publish_dir = publish_dir
    rendezvous(Path(barrier), "start")
    return published


def examples() -> list[Any]:
    from doktra_tune.data import Example
    from doktra_tune.tasks import get_task

    labels = get_task("chemprot").labels
    return [Example(text, (labels[i % len(labels)],)) for i, text in enumerate(TEXTS)]


def teacher_child(work: str, ckpt: str, no_flock: bool, meet: bool, out: str) -> None:
    import numpy as np
    import torch

    from doktra_tune import teacher_cache

    torch.set_num_threads(1)
    published = setup_child(str(Path(work) / "barrier"), no_flock, meet)
    outs = teacher_cache.teacher_outputs(ckpt, "chemprot", "dev", examples(), max_len=32,
                                         cache_dir=Path(work) / "cache", device=torch.device("cpu"), amp_dtype=None)
    np.save(Path(out).with_suffix(".npy"), outs.cls)
    Path(out).write_text(json.dumps({"computed": outs.computed, "ran_teacher": teacher_cache.compute_count(),
                                     "published": published, "path": str(outs.path)}))


def encoding_child(work: str, ckpt: str, out: str) -> None:
    from transformers import AutoTokenizer

    from doktra_tune.encoding import encode_split

    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    published = setup_child(str(Path(work) / "barrier"), no_flock=True, meet_before_publish=True)
    enc = encode_split(examples(), "chemprot", tokenizer, max_len=16, cache_dir=Path(work) / "cache",
                       cache_key="chemprot-dev")
    Path(out).write_text(json.dumps({"ids": enc.input_ids, "from_cache": enc.from_cache,
                                     "published": published, "path": str(enc.cache_path)}))


def copy_child(work: str, source: str, target: str, no_exchange: bool, rounds: int, out: str) -> None:
    from doktra_tune.models import copy_checkpoint

    setup_child(str(Path(work) / "barrier"), no_flock=False, meet_before_publish=False, no_exchange=no_exchange)
    for _ in range(rounds):
        copy_checkpoint(source, Path(target))
    Path(out).write_text(json.dumps({"ok": True}))


def claim_child(outbox_dir: str, held: str, go: str, out: str) -> None:
    """Replay every outbox file; the first send holds until `go` exists (or forever: killed there)."""
    from doktra_tune.tracking import Outbox

    sent: list[int] = []

    def send(key: Any, op: str, args: dict) -> None:
        Path(held).touch()
        while not Path(go).exists():
            time.sleep(0.02)
        sent.append(args["step"])

    Outbox(Path(outbox_dir)).replay(send)
    Path(out).write_text(json.dumps(sent))
