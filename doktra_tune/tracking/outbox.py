"""The outbox: MLflow writes that could not be sent, kept on disk in order until they can.

A write is one JSON line `{"run": <RunKey>, "op": <name>, "args": {...}}` in a file of the writing
process (`<dir>/<host>-<pid>-<id>.jsonl`); an artifact's file is copied beside it (`<dir>/files/`),
since the trial that wrote it deletes its scratch directory. Sending twice is harmless: runs are
found by their key tags, params and tags are idempotent, and MLflow drops a metric identical to one
it has (same key, value, step, timestamp).

Replaying claims a file by renaming it to a name that says who claims it and since when
(`<host>-<pid>-<id>~<order>~<claimer's host>~<pid>~<its start, ms>~<claim, ms>.sending`), sends
its lines in order and deletes it. The claimer touches the file before each line it sends (a sign
of life). A claim whose process is dead is replayed by the next replay: on the claimer's host, when
its pid is gone or now belongs to a process started at another time; from another host, when the
claim has shown no sign of life for `STALE_CLAIM_S`. A live claimer's claim is left alone, and so
is everything its writer wrote after it, so that one writer's lines are sent in the order they were
written. A replay that fails half-way puts the rest back as `<host>-<pid>-<id>~<order>.jsonl`,
ahead of what the writer added since. `order` (ms) is set when a writer's file is first claimed and
kept by every later claim of it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

from doktra_tune.shared_files import host_name, temp_sibling

OUTBOX_DIR = "tracking_outbox"
STALE_CLAIM_S = 600.0  # a claim from another host with no sign of life for this long is replayed
_LIVE = 1 << 62  # the order of a writer's own file: after everything of it claimed earlier
_SAME_START_MS = 5  # two start times this close are one process (psutil rounds to clock ticks)
_UNKNOWN_START = -1  # the process exists, its start time cannot be read


@dataclass(frozen=True)
class RunKey:
    """A run named by what it is, not by an id only the server knows: its experiment, the tags that
    identify it (get-or-create), the tags and name it gets when created, and its parent run's key
    (the parent's id becomes its `mlflow.parentRunId` tag when it is created)."""

    experiment_id: str
    key_tags: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)
    name: str = ""
    parent: RunKey | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunKey:
        parent = data.get("parent")
        return cls(**{**data, "parent": cls.from_dict(parent) if parent else None})

    @property
    def ident(self) -> str:
        return json.dumps([self.experiment_id, sorted(self.key_tags.items())])


@dataclass(frozen=True)
class Claim:
    """Who is sending an outbox file: host, pid and that process's start time (ms; a reused pid is
    another process), and when it claimed the file (ms since the epoch)."""

    host: str
    pid: int
    started_ms: int
    claimed_ms: int

    @classmethod
    def of_this_process(cls) -> Claim:
        return cls(host_name(), os.getpid(), max(_started_ms(os.getpid()) or 0, 0), _now_ms())

    def alive(self, last_sign_ms: int) -> bool:
        """Whether the claimer may still be sending (`last_sign_ms`: the file's last touch)."""
        if self.host == host_name():
            started = _started_ms(self.pid)
            if started is None:
                return False
            return started == _UNKNOWN_START or abs(started - self.started_ms) <= _SAME_START_MS
        return _now_ms() - max(self.claimed_ms, last_sign_ms) < STALE_CLAIM_S * 1000


@dataclass(frozen=True)
class _Waiting:
    """One outbox file: its writer's file name (`stem`), its place among that writer's files, its claim."""

    path: Path
    stem: str
    order: int
    claim: Claim | None

    @classmethod
    def parse(cls, path: Path) -> _Waiting | None:
        name = path.name
        if name.endswith(".jsonl"):
            base = name[: -len(".jsonl")]
            stem, sep, order = base.rpartition("~")
            return cls(path, stem, int(order), None) if sep and order.isdigit() else cls(path, base, _LIVE, None)
        if name.endswith(".sending"):
            parts = name[: -len(".sending")].rsplit("~", 5)
            if len(parts) == 6 and all(p.isdigit() for p in (parts[1], *parts[3:])):
                stem, order, host, pid, started, claimed = parts
                return cls(path, stem, int(order), Claim(host, int(pid), int(started), int(claimed)))
            return None
        stem, sep, pid = name.rpartition(".sending-")  # a claim of an earlier version: host unknown
        if sep and pid.isdigit():
            return cls(path, stem, 0, Claim("", int(pid), 0, 0))
        return None

    def held_by_another(self) -> bool:
        """Whether a live process claims this file (it is left to that process)."""
        if self.claim is None:
            return False
        try:
            last_sign = int(self.path.stat().st_mtime * 1000)
        except FileNotFoundError:
            return True  # just claimed (or sent) by someone
        return self.claim.alive(last_sign)


class Outbox:
    """Unsent writes of this process under `directory`, and the replay of every process's."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._stem = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._file = self.directory / f"{self._stem}.jsonl"

    def append(self, key: RunKey, op: str, args: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if op == "log_artifact":  # keep the file: its writer removes its scratch directory
            stored = self.directory / "files" / uuid.uuid4().hex / Path(args["local_path"]).name
            stored.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(args["local_path"], stored)
            args = {**args, "local_path": str(stored)}
        with self._file.open("a") as out:
            out.write(json.dumps({"run": key.as_dict(), "op": op, "args": args}) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def pending(self, own_only: bool = False) -> list[Path]:
        """The files whose writes wait (claimed ones included), in the order they are sent."""
        return [item.path for item in self._waiting(own_only)]

    def replay(self, send: Callable[[RunKey, str, dict[str, Any]], None], own_only: bool = False) -> int:
        """Send every pending write (this process's only, or all); returns how many were sent.
        Raises what `send` raises (the server went away again): unsent lines stay."""
        sent = 0
        blocked: set[str] = set()  # writers with a file a live process is sending: their later files wait
        waiting = self._waiting(own_only)
        for item in waiting:
            if item.stem in blocked:
                continue
            if item.held_by_another():
                blocked.add(item.stem)
                continue
            claimed = self._claim(item, waiting)
            if claimed is not None:
                sent += self._send_file(claimed, send)
        return sent

    def entries(self) -> Iterator[dict[str, Any]]:
        for path in self.pending():
            for line in _lines(path) or []:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    # ------------------------------------------------------------------ internals
    def _waiting(self, own_only: bool) -> list[_Waiting]:
        if not self.directory.is_dir():
            return []
        items = [item for path in self.directory.iterdir() if (item := _Waiting.parse(path)) is not None]
        if own_only:
            items = [item for item in items if item.stem == self._stem]
        return sorted(items, key=lambda item: (item.stem, item.order, item.path.name))

    def _claim(self, item: _Waiting, waiting: list[_Waiting]) -> _Waiting | None:
        """`item` renamed to this process's claim; None when another process took it first."""
        order = item.order
        if order == _LIVE:  # first claimed now: after every earlier claim of its writer
            earlier = [other.order for other in waiting if other.stem == item.stem and other.order != _LIVE]
            order = max([_now_ms(), *(o + 1 for o in earlier)])
        claim = Claim.of_this_process()
        name = f"{item.stem}~{order}~{claim.host}~{claim.pid}~{claim.started_ms}~{claim.claimed_ms}.sending"
        claimed = item.path.with_name(name)
        try:
            item.path.rename(claimed)
        except FileNotFoundError:
            return None
        return _Waiting(claimed, item.stem, order, claim)

    def _send_file(self, item: _Waiting, send: Callable[[RunKey, str, dict[str, Any]], None]) -> int:
        """Send the lines of the claimed `item` in order, then delete it. A writer that opened the file
        just before it was claimed may still add a line: the file is read again until nothing is new."""
        sent = done = 0
        while True:
            lines = _lines(item.path)
            if lines is None:
                return sent  # replayed by another process as stale: it sends the rest
            if done >= len(lines):
                break
            for index in range(done, len(lines)):
                done = index + 1
                try:
                    entry = json.loads(lines[index])
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write
                stored = Path(entry["args"]["local_path"]) if entry["op"] == "log_artifact" else None
                if stored is not None and not stored.exists():
                    continue  # sent by a claimer that died before it deleted the file
                try:
                    os.utime(item.path)  # a sign of life for replays on other hosts
                except FileNotFoundError:
                    return sent
                try:
                    send(RunKey.from_dict(entry["run"]), entry["op"], entry["args"])
                except BaseException:
                    self._put_back(item, index)
                    raise
                sent += 1
                if stored is not None:
                    shutil.rmtree(stored.parent, ignore_errors=True)
        item.path.unlink(missing_ok=True)
        return sent

    def _put_back(self, item: _Waiting, first_unsent: int) -> None:
        """The lines of a claimed file from `first_unsent` on wait again, in their place among their
        writer's files."""
        lines = _lines(item.path)
        if lines is None:
            return  # replayed by another process as stale: it has them
        rest = lines[first_unsent:]
        back = self.directory / f"{item.stem}~{item.order}.jsonl"
        tmp = temp_sibling(back, "tmp")
        with tmp.open("w") as out:
            out.write("".join(line + "\n" for line in rest))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, back)
        item.path.unlink(missing_ok=True)


def _lines(path: Path) -> list[str] | None:
    """The whole lines of `path` (a last line without its newline is still being written); None if gone."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return text.split("\n")[:-1]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _started_ms(pid: int) -> int | None:
    """When process `pid` of this host started (ms since the epoch); None when there is none (or a zombie)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return round(proc.create_time() * 1000)
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return _UNKNOWN_START if psutil.pid_exists(pid) else None
