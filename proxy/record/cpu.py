"""How busy the host's CPUs are, as the sink sees it: the share of CPU time since the last look
that was neither idle nor the sink's own (``/proc/stat``, every core of the host or container's
view; unknown elsewhere)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

__all__ = ["HostCpu"]


class HostCpu:
    """``busy_share()``: the share of the host's CPU time since the previous call that others
    used (not idle, not this process's own); None when it cannot be told (no ``/proc/stat``, or
    no time passed)."""

    TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, path: str | Path = "/proc/stat", own: Callable[[], float] = time.process_time) -> None:
        self.path = Path(path)
        self.own = own
        self._last = self._sample()

    def _sample(self) -> tuple[int, int, float] | None:
        """(total ticks, idle ticks, this process's CPU seconds), or None."""
        try:
            with open(self.path, "rb") as f:
                first = f.readline().split()
        except OSError:
            return None
        if not first or first[0] != b"cpu" or len(first) < 5:
            return None
        # user nice system idle iowait irq softirq steal (guest time is inside user already)
        ticks = [int(x) for x in first[1:9]]
        return sum(ticks), ticks[3] + (ticks[4] if len(ticks) > 4 else 0), self.own()

    def busy_share(self) -> float | None:
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[0] <= last[0]:
            return None
        total = now[0] - last[0]
        free = (now[1] - last[1]) + (now[2] - last[2]) * self.TICKS_PER_S
        return min(1.0, max(0.0, 1.0 - free / total))
