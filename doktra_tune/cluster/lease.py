"""One search per run directory: a lease file, `<run_dir>/lease.json`, held while the search runs.

The lease is created exclusively (`O_CREAT | O_EXCL`) and names its owner: host, pid, the process's
create time, start time, search id and a random token. A daemon thread refreshes its heartbeat every
`heartbeat_s` (a uniquely named temporary file, then `os.replace`), as long as the file is still
this owner's. No `flock`: exclusive create and rename only, so it works on NFS and Lustre mounts.

A second copy of the search finds the lease and stops with one line, unless the lease is stale:
* on this machine (same host name, boot and pid namespace): its process is gone (or the pid now
  belongs to another program: the create time differs). Pid liveness decides here, so a suspended
  driver (Ctrl-Z) still owns its run directory.
* elsewhere: no heartbeat for `stale_after_s`, by the heartbeat the owner wrote (its clock) and by the
  file's modification time (the file system's clock): fresh if either is within `stale_after_s` of
  this machine's clock, so one skewed clock neither keeps a dead lease alive forever nor ends a live one.
A file that cannot be read as a lease (half written, damaged) is judged by its modification time.

A stale lease is taken over race-free between contenders: the one that creates the takeover lock
(`lease.json.takeover`, exclusively, for a moment) removes the lease if it is still the one it judged;
then every contender creates the lease exclusively again: one succeeds, the others see a live owner.
A takeover lock left by a contender that died holding it is stale by the same rules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

import psutil

from doktra_tune.errors import ConfigError

log = logging.getLogger(__name__)

LEASE_FILE = "lease.json"
TAKEOVER_FILE = "lease.json.takeover"  # held for a moment by the one contender taking a stale lease over
HEARTBEAT_S = 10.0  # how often the owner refreshes the lease
STALE_AFTER_S = 60.0  # a lease elsewhere without a heartbeat for this long is stale
_CREATE_TIME_TOLERANCE_S = 1.0  # psutil's create time moves a little when the wall clock is stepped
_MALFORMED_RETRY_S = 1.0  # a half-written lease is read again for this long before it is judged


def _utc_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def _human(iso: str) -> str:
    """'2026-12-06 19:04:12 UTC' for an ISO time (the text itself when it is not one)."""
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError):
        return str(iso)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def machine_identity() -> tuple[str, str, str]:
    """(host name, boot id, pid namespace) of this process: a pid means the same process only where
    all three match (containers can share a host name and not their pids)."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return socket.gethostname(), _read_text("/proc/sys/kernel/random/boot_id"), pid_ns


@dataclass(frozen=True)
class LeaseOwner:
    """What `lease.json` says about the search that holds it."""

    search_id: str
    host: str
    pid: int
    create_time: float  # psutil's create time of `pid`
    started: str  # ISO 8601, UTC
    heartbeat: str  # ISO 8601, UTC: the owner's clock at its last refresh
    token: str  # random: tells two holders with one host and pid apart
    boot_id: str = ""
    pid_ns: str = ""

    @classmethod
    def parse(cls, raw: bytes) -> LeaseOwner | None:
        """The owner `raw` names, or None when it is not a complete lease."""
        try:
            data = json.loads(raw)
            owner = cls(search_id=str(data["search_id"]), host=str(data["host"]), pid=int(data["pid"]),
                        create_time=float(data["create_time"]), started=str(data["started"]),
                        heartbeat=str(data["heartbeat"]), token=str(data["token"]),
                        boot_id=str(data.get("boot_id", "")), pid_ns=str(data.get("pid_ns", "")))
            datetime.fromisoformat(owner.heartbeat)
            return owner
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=1) + "\n").encode()

    def on_this_machine(self) -> bool:
        """Its pid is a pid here (same host name, boot and pid namespace)."""
        host, boot_id, pid_ns = machine_identity()
        return self.host == host and self.boot_id == boot_id and self.pid_ns == pid_ns

    def process_alive(self) -> bool:
        """Its process still runs here (same pid, same create time, not a zombie)."""
        try:
            process = psutil.Process(self.pid)
            return (abs(process.create_time() - self.create_time) <= _CREATE_TIME_TOLERANCE_S
                    and process.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    def heartbeat_s(self) -> float | None:
        try:
            return datetime.fromisoformat(self.heartbeat).timestamp()
        except ValueError:
            return None


@dataclass(frozen=True)
class _Seen:
    """One look at the lease file: its bytes, its inode and modification time, the owner they name."""

    raw: bytes
    inode: int
    mtime: float
    owner: LeaseOwner | None


def _fresh(stamp: float | None, now: float, window_s: float) -> bool:
    """`stamp` lies within `window_s` of `now`, either way (a clock ahead by less counts as fresh)."""
    return stamp is not None and abs(now - stamp) <= window_s


class RunDirLease:
    """`with RunDirLease(run_dir, search_id):` holds `<run_dir>/lease.json` for the block.

    Entering creates the run directory (and its missing parents) and takes the lease: a live owner is
    a `ConfigError`, a stale one is taken over (`previous` is then its owner, and one `[lease]` line is
    logged). Leaving stops the heartbeat and removes the lease if it is still this one's, then the
    directories entering created if they are still empty. `lost` is True once another process took
    the lease over (the heartbeat then stops, and says so)."""

    def __init__(self, run_dir: Path, search_id: str, *, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LEASE_FILE
        self.search_id = search_id
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.owner: LeaseOwner | None = None  # this process's lease while held
        self.previous: LeaseOwner | None = None  # the stale owner taken over, if any
        self.lost = False
        self._made_dirs: list[Path] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking and giving back -------------------------------------------------------------------

    def __enter__(self) -> RunDirLease:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def acquire(self, timeout_s: float = 10.0) -> None:
        """Take the lease (see the class); the heartbeat starts."""
        self._make_run_dir()
        try:
            deadline = time.monotonic() + timeout_s
            taken_over: tuple[_Seen, str] | None = None
            while True:
                if self._create():
                    if taken_over is not None:
                        self.previous = taken_over[0].owner
                        log.info(self._takeover_line(*taken_over))
                    self._start_heartbeat()
                    return
                seen = self._look(self.path)
                if seen is None:  # removed since the create: try again
                    continue
                reason = self._stale_reason(seen)
                if reason is None:
                    raise ConfigError(self._live_message(seen))
                if self._remove_stale(seen):
                    taken_over = (seen, reason)
                elif time.monotonic() > deadline:
                    raise ConfigError(
                        f"the lease {self.path} kept changing hands for {timeout_s:.0f} s while this search tried "
                        "to take it over; wait for the other copies of this search, or give this one another "
                        "`search_id=`"
                    )
                else:
                    time.sleep(0.05)  # another contender is taking it over: look again
        except BaseException:
            if self.owner is None:
                self._remove_made_dirs()
            raise

    def release(self) -> None:
        """Stop the heartbeat; remove the lease if it is still this one's, then the empty directories
        `acquire` created."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.heartbeat_s))
            self._thread = None
        with contextlib.suppress(OSError):  # unreadable now: left to go stale
            if self.owner is not None and self._still_ours():
                self.path.unlink()
        self.owner = None
        self._remove_made_dirs()

    # -- the file ---------------------------------------------------------------------------------

    def _make_run_dir(self) -> None:
        missing, path = [], self.run_dir
        while not path.exists() and path != path.parent:
            missing.append(path)
            path = path.parent
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"run directory {self.run_dir} cannot be created ({err.strerror or err}); "
                              "set runs_root=<a writable folder>") from err
        self._made_dirs = missing  # deepest first

    def _remove_made_dirs(self) -> None:
        for path in self._made_dirs:  # only while empty: the search wrote nothing there
            try:
                path.rmdir()
            except OSError:
                break
        self._made_dirs = []

    def _new_owner(self) -> LeaseOwner:
        host, boot_id, pid_ns = machine_identity()
        now = _utc_iso(time.time())
        return LeaseOwner(search_id=self.search_id, host=host, pid=os.getpid(),
                          create_time=psutil.Process().create_time(), started=now, heartbeat=now,
                          token=uuid.uuid4().hex, boot_id=boot_id, pid_ns=pid_ns)

    def _create(self) -> bool:
        """Create the lease exclusively with a new owner: True if this process now holds it."""
        owner = self._new_owner()
        if not self._create_file(self.path, owner.to_bytes()):
            return False
        self.owner = owner
        return True

    def _create_file(self, path: Path, raw: bytes) -> bool:
        """`O_EXCL`-create `path` holding `raw`; False when it exists."""
        for _ in range(3):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            except FileNotFoundError:  # the run directory vanished (an empty one removed): make it again
                self.run_dir.mkdir(parents=True, exist_ok=True)
                continue
            except OSError as err:
                raise ConfigError(f"the lease {path} cannot be created ({err.strerror or err}); "
                                  "set runs_root=<a writable folder>") from err
            try:
                os.write(fd, raw)
                os.fsync(fd)
            except OSError as err:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise ConfigError(f"the lease {path} cannot be written ({err.strerror or err}); "
                                  "set runs_root=<a writable folder>") from err
            os.close(fd)
            return True
        return False

    @staticmethod
    def _look(path: Path, retry_s: float = _MALFORMED_RETRY_S) -> _Seen | None:
        """Read the lease file `path`; None when there is none. A half-written one is read again for
        up to `retry_s`."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                stat = os.stat(path)
                raw = path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError:
                raw, stat = b"", None
            owner = LeaseOwner.parse(raw)
            if owner is not None or time.monotonic() >= deadline:
                if stat is None:
                    return _Seen(raw, -1, time.time(), owner)  # unreadable: judged as just written
                return _Seen(raw, stat.st_ino, stat.st_mtime, owner)
            time.sleep(0.1)

    def _stale_reason(self, seen: _Seen) -> str | None:
        """Why the lease `seen` is stale, or None when its owner counts as alive."""
        owner, now = seen.owner, time.time()
        if owner is not None and owner.on_this_machine():
            return None if owner.process_alive() else "its process is no longer running"
        heartbeat = owner.heartbeat_s() if owner is not None else None
        if _fresh(heartbeat, now, self.stale_after_s) or _fresh(seen.mtime, now, self.stale_after_s):
            return None
        age = now - max(t for t in (heartbeat, seen.mtime) if t is not None)
        return f"no heartbeat for {age:.0f} s" if owner is not None else f"unreadable, unchanged for {age:.0f} s"

    def _remove_stale(self, seen: _Seen) -> bool:
        """Remove the stale lease `seen`, holding the takeover lock (`lease.json.takeover`, created
        exclusively: one contender at a time) and only if the lease is still exactly `seen`. True when
        removed: the lease path is then free for an exclusive create, which one contender wins."""
        lock = self.run_dir / TAKEOVER_FILE
        if not self._create_file(lock, self._new_owner().to_bytes()):
            held = self._look(lock, retry_s=0.0)
            if held is not None and self._stale_reason(held) is not None:  # its taker died in the act
                self._move_aside(lock, held)
            return False
        try:
            current = self._look(self.path, retry_s=0.0)
            if current is None or (current.raw, current.inode) != (seen.raw, seen.inode):
                return False  # taken over (or removed) since the look: look again
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as err:
            raise ConfigError(f"the stale lease {self.path} cannot be removed ({err.strerror or err}); "
                              "remove it by hand if no search runs there") from err
        finally:
            lock.unlink(missing_ok=True)

    def _move_aside(self, path: Path, seen: _Seen) -> None:
        """Remove `path` if it is still exactly `seen`: renamed to a name of its own first (one remover
        finds it), put back (same inode, no overwrite) when what moved was another."""
        aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        try:
            same = aside.read_bytes() == seen.raw and os.stat(aside).st_ino == seen.inode
        except OSError:
            same = False
        if not same:
            with contextlib.suppress(OSError):
                os.link(aside, path)
        aside.unlink(missing_ok=True)

    def _still_ours(self) -> bool:
        """The lease file names this owner (a missing file does not); OSError when it cannot be read."""
        try:
            current = LeaseOwner.parse(self.path.read_bytes())
        except FileNotFoundError:
            return False
        return (current is not None and self.owner is not None and current.token == self.owner.token
                and current.pid == self.owner.pid and current.host == self.owner.host)

    # -- the heartbeat ----------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="doktra-lease-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.refresh():
                    return
            except OSError as err:  # storage away for a moment: try again at the next beat
                log.warning("could not refresh the lease %s (%s)", self.path, err.strerror or err)

    def refresh(self) -> bool:
        """Write a new heartbeat if the lease is still this one's; False (and one line saying so)
        once another process took it over."""
        assert self.owner is not None
        if not self._still_ours():
            self.lost = True
            log.warning(f"[lease] {self.path} is no longer this search's (another copy took it over); "
                      "the heartbeat stopped")
            return False
        owner = LeaseOwner(**{**asdict(self.owner), "heartbeat": _utc_iso(time.time())})
        tmp = self.path.with_name(f".{LEASE_FILE}.{owner.token}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_bytes(owner.to_bytes())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self.owner = owner
        return True

    def _live_message(self, seen: _Seen) -> str:
        owner = seen.owner
        if owner is None:
            age = max(0.0, time.time() - seen.mtime)
            return (f"the lease {self.path} cannot be read and changed {age:.0f} s ago (another copy of this "
                    f"search may be starting); wait {self.stale_after_s:.0f} s and rerun, or give this one "
                    "another `search_id=`")
        return (f"search `{owner.search_id}` is already running on `{owner.host}` (pid {owner.pid}, since "
                f"{_human(owner.started)}); wait for it, or give this one another `search_id=`")

    def _takeover_line(self, seen: _Seen, reason: str) -> str:
        owner = seen.owner
        if owner is None:
            return f"[lease] took over the stale lease {self.path} ({reason})"
        return (f"[lease] took over a stale lease from pid {owner.pid} on `{owner.host}` (search "
                f"`{owner.search_id}` since {_human(owner.started)}: {reason})")


def read_owner(run_dir: Path) -> LeaseOwner | None:
    """The owner `<run_dir>/lease.json` names, if it names one."""
    try:
        return LeaseOwner.parse((Path(run_dir) / LEASE_FILE).read_bytes())
    except OSError:
        return None

