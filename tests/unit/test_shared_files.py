"""Shared files that tolerate a second writer: the teacher and tokenizer caches (a lost race is a
cache hit, with or without `flock`), checkpoint publishing (a reader finds a whole copy, two
publishers both succeed), outbox claims of a dead process replayed and a live one's left alone.
Real files and real processes (spawned), no mocks of the file system."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from doktra_tune import shared_files
from doktra_tune.models import copy_checkpoint, load_classifier, save_checkpoint
from doktra_tune.tasks import get_task
from doktra_tune.tracking import Outbox, RunKey, TrackingClient
from doktra_tune.tracking import outbox as outbox_module
from tests.helpers import shared_files_children as children

SPAWN = multiprocessing.get_context("spawn")


# ------------------------------------------------------------------------------------ helpers
def _run_pair(target, args_of: list[tuple]) -> list[dict]:
    """Run `target(*args, out)` in two spawned processes at once; their JSON results."""
    procs = []
    for index, args in enumerate(args_of):
        out = Path(args[0]) / f"result-{index}.json"
        proc = SPAWN.Process(target=target, args=(*args, str(out)))
        proc.start()
        procs.append((proc, out))
    try:
        for proc, _out in procs:
            proc.join(240)
            assert proc.exitcode == 0, f"child {proc.pid} exited {proc.exitcode}"
        return [json.loads(out.read_text()) for _proc, out in procs]
    finally:
        for proc, _out in procs:  # the children this test started, if one hung
            if proc.is_alive():
                proc.kill()
                proc.join(10)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


# ------------------------------------------------------------------------------------ caches
@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> Path:
    task = get_task("chemprot")
    model, tok = load_classifier("random:bert:L2-H64", task, seed=0)
    return save_checkpoint(model, tok, tmp_path_factory.mktemp("teacher") / "epoch_1",
                           {"task": "chemprot", "labels": list(task.labels), "epoch": 1, "stage": "ctt"})


@pytest.mark.parametrize("no_flock", [False, True], ids=["flock", "no-flock"])
def test_two_writers_of_one_teacher_cache_entry_get_the_same_arrays(tmp_path, teacher_ckpt, no_flock) -> None:
    # with flock the second writer waits and reads; without (ENOLCK) both compute, meet before
    # publishing, one rename wins and the other drops its copy and reads the winner's
    results = _run_pair(children.teacher_child, [(str(tmp_path), str(teacher_ckpt), no_flock, no_flock)] * 2)
    assert sorted(r["computed"] for r in results) == [False, True]  # one computed-and-published entry
    base = tmp_path / "cache" / "teacher_cls"
    (entry,) = [p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert {r["path"] for r in results} == {str(entry)}
    on_disk = np.load(entry / "cls.npy")
    assert on_disk.shape == (len(children.TEXTS), 64)
    for index in range(2):  # both processes hold the published arrays, bit for bit
        assert np.array_equal(np.load(tmp_path / f"result-{index}.npy"), on_disk)
    if no_flock:
        assert [r["ran_teacher"] for r in results] == [1, 1]  # no lock: both ran the teacher
        for target in (entry.name, next((tmp_path / "cache" / "tokenized").iterdir()).name):
            assert sorted(won for r in results for won in r["published"][target]) == [False, True]  # a real race
    else:
        assert sorted(r["ran_teacher"] for r in results) == [0, 1]  # the lock made the second one wait
    assert _hidden(base) == [] and _hidden(tmp_path / "cache" / "tokenized") == []  # no copy left behind


def test_two_writers_of_one_tokenizer_cache_entry_both_succeed(tmp_path, teacher_ckpt) -> None:
    from transformers import AutoTokenizer

    from doktra_tune.encoding import encode_split

    results = _run_pair(children.encoding_child, [(str(tmp_path), str(teacher_ckpt))] * 2)
    assert results[0]["ids"] == results[1]["ids"] and len(results[0]["ids"]) == len(children.TEXTS)
    assert results[0]["path"] == results[1]["path"]
    name = Path(results[0]["path"]).name
    assert sorted(won for r in results for won in r["published"][name]) == [False, True]  # one lost the race
    base = tmp_path / "cache" / "tokenized"
    assert [p.name for p in base.iterdir()] == [name]  # one entry, no copy left behind
    again = encode_split(children.examples(), "chemprot", AutoTokenizer.from_pretrained(teacher_ckpt), max_len=16,
                         cache_dir=tmp_path / "cache", cache_key="chemprot-dev")
    assert again.from_cache and again.input_ids == results[0]["ids"]


# ------------------------------------------------------------------------------------ checkpoints
def _make_copy(root: Path, tag: str, files: int) -> Path:
    """A checkpoint-like directory: `files` files plus MARKER naming `tag` and how many there are."""
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"part_{i:04d}.bin").write_bytes(tag.encode() * 64)
    (root / "MARKER").write_text(f"{tag} {files + 1}")
    return root


class WholeCopyWatcher(threading.Thread):
    """Looks at `target` in a loop: each listing of one directory that was `target` both before and
    after it was listed must be a whole copy (all the files its MARKER counts)."""

    def __init__(self, target: Path) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.stop = threading.Event()
        self.checks = self.missing = 0
        self.torn: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                before = os.stat(self.target).st_ino
            except FileNotFoundError:
                self.missing += 1
                continue
            try:
                names = os.listdir(self.target)
                tag, count = (self.target / "MARKER").read_text().split()
            except FileNotFoundError:
                names, tag, count = [], "?", "-1"
            try:
                after = os.stat(self.target).st_ino
            except FileNotFoundError:
                self.missing += 1
                continue
            if before != after:
                continue  # swapped while it was listed: that listing was of the old copy
            self.checks += 1
            if len(names) != int(count):
                self.torn.append(f"{tag}: {len(names)} of {count} files")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_copy_checkpoint_over_a_target_leaves_a_whole_copy_at_every_look(tmp_path, monkeypatch, exchange) -> None:
    if not exchange:
        monkeypatch.setattr(shared_files, "_RENAMEAT2", None)  # NFS, Lustre: no RENAME_EXCHANGE
    elif shared_files._RENAMEAT2 is None or shared_files._exchange(tmp_path, tmp_path / "absent") is None:
        pytest.skip("this system cannot swap two names in one step (renameat2 RENAME_EXCHANGE)")
    sources = [_make_copy(tmp_path / "a", "A", 200), _make_copy(tmp_path / "b", "B", 120)]
    target = tmp_path / "stage" / "winner"
    copy_checkpoint(sources[1], target)
    watcher = WholeCopyWatcher(target)
    watcher.start()
    try:
        for round_ in range(20):
            copy_checkpoint(sources[round_ % 2], target)
    finally:
        watcher.stop.set()
        watcher.join(10)
    assert watcher.checks > 20 and watcher.torn == []
    if exchange:
        assert watcher.missing == 0  # one-step swap: there was always a `target`
    assert (target / "MARKER").read_text() == "B 121" and len(os.listdir(target)) == 121
    assert os.listdir(target.parent) == ["winner"]  # no temporary or old copy left behind


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_two_concurrent_copy_checkpoints_to_one_target_both_succeed(tmp_path, exchange) -> None:
    sources = [_make_copy(tmp_path / "a", "A", 120), _make_copy(tmp_path / "b", "B", 80)]
    target = tmp_path / "stage" / "winner"
    _make_copy(target, "OLD", 10)
    jobs = [(str(tmp_path), str(src), str(target), not exchange, 8) for src in sources]  # 8 copies each
    results = _run_pair(children.copy_child, jobs)
    assert results == [{"ok": True}, {"ok": True}]
    tag, count = (target / "MARKER").read_text().split()
    assert tag in ("A", "B") and len(os.listdir(target)) == int(count)  # one copy won, whole
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in sources[tag == "B"].iterdir())
    assert os.listdir(target.parent) == ["winner"]


# ------------------------------------------------------------------------------------ outbox claims
def _key(trial: str = "t0") -> RunKey:
    return RunKey("0", {"doktra.trial": trial}, {"doktra.stage": "ctt"}, name=trial)


def _write(outbox: Outbox, steps: range) -> None:
    for step in steps:
        outbox.append(_key(), "log_metrics", {"metrics": {"dev_f1": step / 10}, "step": step, "timestamp": 1000 + step})


def _steps(record: list[tuple[str, dict]]) -> list[int]:
    return [args["step"] for op, args in record if op == "log_metrics"]


def _start_claimer(tmp_path: Path) -> tuple[multiprocessing.Process, Path, Path, Path]:
    held, go, out = tmp_path / "held", tmp_path / "go", tmp_path / "claimer.json"
    proc = SPAWN.Process(target=children.claim_child, args=(str(tmp_path / "outbox"), str(held), str(go), str(out)))
    proc.start()
    deadline = time.monotonic() + 120
    while not held.exists():
        assert proc.is_alive() and time.monotonic() < deadline, "the claimer did not claim the outbox file"
        time.sleep(0.02)
    return proc, go, out, held


def test_an_outbox_file_claimed_by_a_killed_process_is_sent_by_the_next_flush(tmp_path) -> None:
    store = tmp_path / "mlflow"
    store.mkdir()
    uri = f"sqlite:///{store}/mlflow.db"
    experiment = TrackingClient(uri).mlflow.create_experiment("claims")
    key = RunKey(experiment, {"doktra.trial": "t0"}, {"doktra.stage": "ctt"}, name="t0")
    writer = Outbox(tmp_path / "outbox")
    writer.append(key, "open", {"reopen": True})
    for step in (1, 2):
        writer.append(key, "log_metrics", {"metrics": {"dev_f1": step / 10}, "step": step, "timestamp": 1000 + step})
    proc, _go, _out, _held = _start_claimer(tmp_path)
    proc.kill()  # SIGKILL while it holds the claim, nothing sent
    proc.join(10)
    (claimed,) = [p.name for p in (tmp_path / "outbox").iterdir() if p.name.endswith(".sending")]
    assert f"~{proc.pid}~" in claimed and shared_files.host_name() in claimed  # who claimed it, recorded
    # written after the claim:
    writer.append(key, "log_metrics", {"metrics": {"dev_f1": 0.3}, "step": 3, "timestamp": 1003})
    writer.append(key, "terminate", {"status": "FINISHED", "only_if_running": False})

    client = TrackingClient(uri, Outbox(tmp_path / "outbox"))
    assert client.flush(own_only=False) == 5
    assert Outbox(tmp_path / "outbox").pending() == []
    (run,) = client.mlflow.search_runs([experiment])
    history = client.mlflow.get_metric_history(run.info.run_id, "dev_f1")
    assert [(m.step, m.value) for m in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]  # in order, each once
    assert run.info.status == "FINISHED"


def test_a_live_claim_is_left_to_its_claimer(tmp_path) -> None:
    writer = Outbox(tmp_path / "outbox")
    _write(writer, range(1, 4))
    proc, go, out, _held = _start_claimer(tmp_path)
    try:
        _write(writer, range(4, 6))  # newer lines of the same writer wait behind the claimed ones
        record: list[tuple[str, dict]] = []
        assert Outbox(tmp_path / "outbox").replay(lambda k, op, args: record.append((op, args))) == 0
        assert record == [] and len(Outbox(tmp_path / "outbox").pending()) == 2
        go.touch()
        proc.join(60)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
    assert proc.exitcode == 0 and json.loads(out.read_text()) == [1, 2, 3]  # the claimer sent its claim
    assert Outbox(tmp_path / "outbox").replay(lambda k, op, args: record.append((op, args))) == 2
    assert _steps(record) == [4, 5] and Outbox(tmp_path / "outbox").pending() == []


def _claim_as(path: Path, host: str, pid: int, started_ms: int, claimed_ms: int, order: int = 1) -> Path:
    stem = path.name[: -len(".jsonl")]
    claimed = path.with_name(f"{stem}~{order}~{host}~{pid}~{started_ms}~{claimed_ms}.sending")
    path.rename(claimed)
    return claimed


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    ("claimer", "replayed"),
    [
        ("another host, seconds ago", False),
        ("another host, silent for longer than the bound", True),
        ("this host, a live process", False),
        ("this host, a pid now used by another process", True),
        ("this host, a pid that is gone", True),
        ("an earlier version, silent for longer than the bound", True),
    ],
)
def test_who_claimed_decides_whether_a_claim_is_replayed(tmp_path, claimer, replayed) -> None:
    import psutil

    writer = Outbox(tmp_path / "outbox")
    _write(writer, range(1, 3))
    (path,) = writer.pending()
    now = int(time.time() * 1000)
    old = now - int(outbox_module.STALE_CLAIM_S * 1000) - 60_000
    parent = psutil.Process(os.getppid())
    this_host = shared_files.host_name()
    if claimer == "another host, seconds ago":
        claimed = _claim_as(path, "gpu-node-7", 4242, 1, now - 5000)
    elif claimer == "another host, silent for longer than the bound":
        claimed = _claim_as(path, "gpu-node-7", 4242, 1, old)
        os.utime(claimed, (old / 1000, old / 1000))
    elif claimer == "this host, a live process":
        claimed = _claim_as(path, this_host, parent.pid, round(parent.create_time() * 1000), old)
    elif claimer == "this host, a pid now used by another process":
        claimed = _claim_as(path, this_host, parent.pid, round(parent.create_time() * 1000) - 3_600_000, now)
    elif claimer == "this host, a pid that is gone":
        claimed = _claim_as(path, this_host, _dead_pid(), now - 10_000, now)
    else:
        claimed = path.with_name(path.name[: -len(".jsonl")] + ".sending-4242")
        path.rename(claimed)
        os.utime(claimed, (old / 1000, old / 1000))
    record: list[tuple[str, dict]] = []
    sent = Outbox(tmp_path / "outbox").replay(lambda k, op, args: record.append((op, args)))
    if replayed:
        assert sent == 2 and _steps(record) == [1, 2] and not claimed.exists()
        assert Outbox(tmp_path / "outbox").pending() == []
    else:
        assert sent == 0 and record == [] and claimed.exists()
        assert Outbox(tmp_path / "outbox").pending() == [claimed]


def test_a_replay_that_fails_half_way_sends_the_rest_first_next_time(tmp_path) -> None:
    writer = Outbox(tmp_path / "outbox")
    _write(writer, range(1, 4))
    record: list[tuple[str, dict]] = []

    def flaky(key: RunKey, op: str, args: dict) -> None:
        if args["step"] == 2:
            raise ConnectionError("the server went away again")
        record.append((op, args))

    with pytest.raises(ConnectionError):
        Outbox(tmp_path / "outbox").replay(flaky)
    _write(writer, range(4, 6))  # the writer carried on meanwhile
    assert len(writer.pending()) == 2 and len(list(writer.entries())) == 4
    Outbox(tmp_path / "outbox").replay(lambda k, op, args: record.append((op, args)))
    assert _steps(record) == [1, 2, 3, 4, 5] and writer.pending() == []
