"""Where the lines a search prints go: every module logs to `logging.getLogger(__name__)`, under the
`doktra_tune` logger; `console_logging()` gives that logger one console handler that writes each line
as it is to stdout (the CLI calls it; `run_search` does where nothing handles the lines yet). Tests read
the lines with pytest's `caplog`."""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "doktra_tune"


class ConsoleHandler(logging.StreamHandler):
    """Each record's message alone, to the `sys.stdout` of the moment (a redirected stdout — a notebook,
    `contextlib.redirect_stdout` — gets the lines), flushed."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):  # noqa: ANN201 - whatever sys.stdout is
        return sys.stdout

    @stream.setter
    def stream(self, value: object) -> None:  # StreamHandler sets one; the console never keeps it
        pass


def console_logging() -> None:
    """INFO and up of `doktra_tune.*` to stdout through one ConsoleHandler (added once)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    if not any(isinstance(handler, ConsoleHandler) for handler in logger.handlers):
        logger.addHandler(ConsoleHandler())


def lines_are_handled() -> bool:
    """Whether `doktra_tune`'s INFO lines reach a handler already (ours, the user's, pytest's)."""
    logger = logging.getLogger(LOGGER_NAME)
    return logger.isEnabledFor(logging.INFO) and logger.hasHandlers()
