"""Warnings at most once per interval per kind of event, each saying how many of that kind were
held back since the last one logged.

Something that fails for every request at once (an upstream down, a flood of malformed
requests, a connection limit reached, Redis refusing renewals) would bury the log under one
line per failure. ``RateLimitedLog.warning`` logs the first of a kind, then at most one line per
interval for that kind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Rate-limited warnings on ``log``, one interval per kind (a short word such as
    ``unreachable``). ``held_note`` is appended to a line logged after some were held back,
    formatted with how many."""

    __slots__ = ("_log", "_interval", "_clock", "_held_note", "_last", "_held")

    def __init__(self, log: logging.Logger, *, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 held_note: str = " (%d more like it not logged since the last one)") -> None:
        self._log, self._interval, self._clock, self._held_note = log, interval_s, clock, held_note
        self._last: dict[str, float] = {}   # kind -> when its last line was written
        self._held: dict[str, int] = {}     # kind -> lines held back since then

    @property
    def log(self) -> logging.Logger:
        return self._log

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
            self._log.warning(message + self._held_note, *args, held)
        else:
            self._log.warning(message, *args)
        return True

    def warning(self, message: str, *args: object) -> bool:
        """``note`` for a log of one kind of event."""
        return self.note("", message, *args)
