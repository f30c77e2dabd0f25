"""A trial that reads another run's model waits a bounded time for it to appear on its own node.

The driver starts such a trial once Tune said the run that publishes the model completed
(`doktra_tune.search.dependent_runs`); on a network file system the copy can still take a moment to
be visible on another node (attribute and look-up caches). The wait lists the parent directory on
every try, which makes NFS clients revalidate it, and ends with one line naming the path and host.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Iterable

from doktra_tune.errors import ConfigError

MODEL_WAIT_S = 120.0  # how long a trial waits for an input model another run published


def _visible(path: Path) -> bool:
    try:
        os.listdir(path.parent)  # a fresh directory read: NFS revalidates the cached look-ups
    except OSError:
        return False
    return (path / "config.json").is_file()


def wait_for_models(paths: Iterable[Path], timeout_s: float = MODEL_WAIT_S, poll_s: float = 0.5) -> None:
    """Return once every model directory in `paths` holds its `config.json`; ConfigError after `timeout_s`."""
    waiting = [Path(p) for p in paths]
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = [p for p in waiting if not _visible(p)]
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"model {waiting[0]} is not visible on host {socket.gethostname()} {timeout_s:.0f} s after the run that "
                "publishes it completed; put runs_root on storage every node mounts at the same path"
            )
        time.sleep(poll_s)
