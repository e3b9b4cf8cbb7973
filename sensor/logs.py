"""Logging setup: structlog, human console lines on a TTY, JSON lines otherwise (journald reads them).

Also ``SkipCounter``: bad input is never lost silently. Every stage counts skips per reason and logs the
first occurrence of each reason once, so a corrupt capture produces one warning per kind of damage, not
one per packet.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter

if "rich" in sys.modules or getattr(sys.stderr, "isatty", lambda: False)():
    import structlog
else:  # structlog imports rich (~40 ms of every start) only for tracebacks on a terminal: not needed here
    sys.modules["rich"] = None  # type: ignore[assignment]  # makes ``import rich`` fail inside structlog
    import structlog
    del sys.modules["rich"]


def setup(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog for the process. ``fmt``: auto | console | json."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*_args) -> structlog.PrintLogger:
    # Resolve sys.stderr at log time, not at setup: a stream swapped after setup (pytest capture, a daemon
    # redirecting output) must not leave loggers writing to a closed file.
    return structlog.PrintLogger(sys.stderr)


def get_logger(name: str):
    return structlog.get_logger(name)


class SkipCounter:
    """Counts skipped items per reason and logs each reason the first time it occurs."""

    def __init__(self, logger_name: str, what: str) -> None:
        self.counts: Counter[str] = Counter()
        self._log = get_logger(logger_name)
        self._what = what

    def add(self, reason: str, n: int = 1, **context) -> None:
        if n <= 0:
            return
        if reason not in self.counts:
            self._log.warning(f"skipping {self._what}", reason=reason, **context)
        self.counts[reason] += n
