"""The outbox: MLflow writes that could not be sent, kept on disk in order until they can.

A write is one JSON line `{"run": <RunKey>, "op": <name>, "args": {...}}` in a file of the writing
process (`<dir>/<host>-<pid>-<id>.jsonl`); an artifact's file is copied beside it (`<dir>/files/`),
since the trial that wrote it deletes its scratch directory. Replaying claims a file by renaming it
(`.sending`), sends its lines in order and deletes it; a replay that fails half-way leaves the rest
for the next one. Sending twice is harmless: runs are found by their key tags, params and tags are
idempotent, and MLflow drops a metric identical to one it has (same key, value, step, timestamp).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

OUTBOX_DIR = "tracking_outbox"


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


class Outbox:
    """Unsent writes of this process under `directory`, and the replay of every process's."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._file = self.directory / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"

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
        if not self.directory.is_dir():
            return []
        if own_only:
            return [self._file] if self._file.is_file() else []
        return sorted(self.directory.glob("*.jsonl"))

    def replay(self, send: Callable[[RunKey, str, dict[str, Any]], None], own_only: bool = False) -> int:
        """Send every pending write (this process's only, or all); returns how many were sent.
        Raises what `send` raises (the server went away again): unsent lines stay."""
        sent = 0
        for path in self.pending(own_only):
            claimed = path.with_suffix(f".sending-{os.getpid()}")
            try:
                path.rename(claimed)
            except OSError:
                continue  # another process claimed it
            lines = claimed.read_text().splitlines()
            for index, line in enumerate(lines):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write
                try:
                    send(RunKey.from_dict(entry["run"]), entry["op"], entry["args"])
                except BaseException:
                    rest = "\n".join(lines[index:]) + "\n"
                    path.write_text(rest) if not path.exists() else path.open("a").write(rest)
                    claimed.unlink(missing_ok=True)
                    raise
                sent += 1
                if entry["op"] == "log_artifact":
                    shutil.rmtree(Path(entry["args"]["local_path"]).parent, ignore_errors=True)
            claimed.unlink(missing_ok=True)
        return sent

    def entries(self) -> Iterator[dict[str, Any]]:
        for path in self.pending():
            for line in path.read_text().splitlines():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue
