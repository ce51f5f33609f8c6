"""The `emosae` logger. Library code talks through `logger` (never `print`), so an
importer can silence or redirect it with the standard `logging` module. Under torchrun
only rank 0 logs, unless `EMOSAE_LOG_ALL_RANKS=1`; progress bars are separate (tqdm).

The command line (`emosae ...`) calls `configure()` to print INFO messages on stderr;
a library user sees warnings only, until they configure logging themselves.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("emosae")
logger.addHandler(logging.NullHandler())
ALL_RANKS_ENV = "EMOSAE_LOG_ALL_RANKS"


class _RankZero(logging.Filter):
    """Drop records on torchrun ranks other than 0 (unless all ranks are asked for)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get(ALL_RANKS_ENV) == "1":
            return True
        return os.environ.get("RANK", "0") == "0" or record.levelno >= logging.ERROR


logger.addFilter(_RankZero())


class _Stderr(logging.StreamHandler):
    """A handler on whatever `sys.stderr` is when a record is emitted (not when the
    handler was made), so redirections and test captures see every message."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(level: int = logging.INFO) -> None:
    """Print emosae's messages on stderr as `emosae: message` (the CLI does this once)."""
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        h = _Stderr()
        h.setFormatter(logging.Formatter("emosae: %(message)s"))
        logger.addHandler(h)
    logger.setLevel(level)
