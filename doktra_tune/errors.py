"""User-facing errors: one line that names the problem and the fix.

Every error a user can cause (bad override, bad data, unreachable service) is raised as a
`DoktraError` subclass whose message is a single line of the form "<problem>; <fix>". The CLI
entry points catch `DoktraError`, print the message and exit with status 2 — no traceback from
deep inside a library.
"""

from __future__ import annotations


class DoktraError(Exception):
    """Base class: `str(err)` is a complete one-line message for the user."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class ConfigError(DoktraError):
    """An override, preset, grid value, model id or service address is unusable."""


class DataError(DoktraError):
    """A data file is missing, empty or malformed, or holds a label outside the task's set."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first line of `str(err)` (at most `limit` characters), or the error's type name when it says nothing."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the stage stops so the search can mark the trial errored."""
