"""Files and directories that several processes, possibly on several hosts, write at once.

The run directory and `cache_dir` may sit on NFS or Lustre and be written by trials on many nodes:

* `temp_sibling`: a name beside a target that no other writer picks (host, pid and a uuid: pids
  repeat across hosts), for a copy that is written in full before it is published;
* `publish_dir`: a cache entry published by one rename; when another writer published the same
  entry first, that entry is kept and this copy is dropped (a lost race is a cache hit);
* `replace_dir`: a directory replaced by a new copy so that a reader finds either the whole old copy
  or the whole new one, never half of either; two writers of one target both succeed, one copy wins;
* `lock`: an exclusive `flock` where the file system has one; without it (Lustre `noflock`, some NFS
  mounts: ENOLCK, EOPNOTSUPP, EINVAL) no lock, and the callers above stay correct without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

NO_LOCK_ERRNOS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS})
_TARGET_TAKEN = frozenset({errno.EEXIST, errno.ENOTEMPTY})
_NO_EXCHANGE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EPERM})
_REPLACE_ATTEMPTS = 50
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_no_lock_said: set[str] = set()


def host_name() -> str:
    """This host's name, as it may appear in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64] or "host"


def temp_sibling(target: Path, kind: str) -> Path:
    """A hidden name beside `target` that no other writer, on this host or another, uses."""
    return target.with_name(f".{target.name}.{kind}-{host_name()}-{os.getpid()}-{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive `flock` on `path` inside the block (yields True); on a file system without
    `flock` hold nothing (yields False): callers publish with `publish_dir` and stay correct."""
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in NO_LOCK_ERRNOS:
                raise
            if str(path.parent) not in _no_lock_said:
                _no_lock_said.add(str(path.parent))
                log.info("no file locks under %s (%s); concurrent writers publish atomically instead",
                         path.parent, os.strerror(err.errno or 0))
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def publish_dir(tmp: Path, target: Path, is_complete: Callable[[Path], bool]) -> bool:
    """Publish the finished directory `tmp` as `target` by one rename. True: `tmp` is `target` now.
    False: another writer's complete `target` was there first; it is kept and `tmp` is removed.
    An incomplete `target` (none of this module's writers leaves one) is replaced."""
    try:
        os.rename(tmp, target)
        return True
    except OSError as err:
        if err.errno not in _TARGET_TAKEN:
            raise
    if is_complete(target):
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    replace_dir(tmp, target)
    return True


def replace_dir(new: Path, target: Path) -> None:
    """Make the directory `new` (beside `target`) be `target`, removing the copy that was there.

    Where the kernel and file system swap two names in one step (Linux `renameat2(RENAME_EXCHANGE)`:
    ext4, xfs, btrfs, tmpfs) a reader finds `target` whole at every instant. Elsewhere (NFS, Lustre)
    the old copy is renamed to a unique `.old` name, the new one renamed into place, then the old one
    removed: a reader finds the whole old copy, the whole new one, or for that instant between the
    two renames no `target`, never half of one. Concurrent writers of one `target` all succeed; the
    last one to rename wins whole."""
    for _ in range(_REPLACE_ATTEMPTS):
        swapped = _exchange(new, target)
        if swapped is True:  # `new` now holds the old copy
            shutil.rmtree(new, ignore_errors=True)
            return
        old: Path | None = None
        if swapped is None:  # no exchange on this file system: move the old copy aside first
            old = temp_sibling(target, "old")
            try:
                os.rename(target, old)
            except FileNotFoundError:
                old = None
        try:
            os.rename(new, target)
        except OSError as err:
            if err.errno not in _TARGET_TAKEN:
                if old is not None:
                    with contextlib.suppress(OSError):
                        os.rename(old, target)
                raise
            if old is not None:  # another writer put its copy in between: take its place in turn
                shutil.rmtree(old, ignore_errors=True)
            continue
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(errno.EBUSY, f"{target} kept changing while it was replaced; try again", str(target))


def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc older than glibc 2.28
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_RENAMEAT2 = _renameat2()


def _exchange(a: Path, b: Path) -> bool | None:
    """Swap the names `a` and `b` in one step. True: swapped; False: `b` does not exist; None: this
    system or file system cannot swap."""
    if _RENAMEAT2 is None:
        return None
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT and a.exists():
        return False
    if err in _NO_EXCHANGE:
        return None
    raise OSError(err, os.strerror(err), str(b))
