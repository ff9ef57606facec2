"""Warnings for failed upstream calls, at most one line per second per kind of failure.

An upstream that is down fails every request at once; one line per failure would bury the
log. ``FailureLog.note`` logs the first failure of a kind, then at most one line per interval
for that kind, each saying how many lines of that kind it held back since the last one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["FailureLog"]


class FailureLog:
    """Rate-limited warnings, one budget per kind (a short word such as ``unreachable``)."""

    __slots__ = ("_log", "_interval", "_clock", "_last", "_held")

    def __init__(self, log: logging.Logger, *, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._interval, self._clock = log, interval_s, clock
        self._last: dict[str, float] = {}   # kind -> when its last line was written
        self._held: dict[str, int] = {}     # kind -> lines held back since then

    def note(self, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` as a warning unless a line of ``kind`` went out less than the
        interval ago (then count it as held back); True if it was logged."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            self._log.warning(message + " (%d more like it not logged since the last one)", *args, held)
        else:
            self._log.warning(message, *args)
        return True
