"""What a farebox target's PostgreSQL sink does during a run (targets with ``postgres_url`` set):
its lag, read from ``/readyz`` four times a second, the time it needs to catch up once the load
stops, and the CPU its process (``python -m proxy.record.child``) took, apart from the serving
process's."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

import psutil

__all__ = ["SinkWatch", "sink_processes"]

INTERVAL_S = 0.25
CATCH_UP_LIMIT_S = 60.0


def sink_processes(processes: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in processes:
        try:
            if "proxy.record.child" in p.cmdline():
                out.append(p)
        except psutil.Error:
            pass
    return out


def _sink_status(base_url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=5) as answer:
            return json.loads(answer.read()).get("sink")
    except (OSError, ValueError):
        return None


class SinkWatch:
    """Samples the sink's lag in a thread while the run lasts; ``finish`` waits for it to catch up."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.on = _sink_status(self.base_url) is not None
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sink-watch", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            status = _sink_status(self.base_url)
            if status and status.get("lag_events") is not None:
                self.samples.append((int(status["lag_events"]), float(status["lag_seconds"])))

    def __enter__(self) -> "SinkWatch":
        if self.on:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.on:
            self._stop.set()
            self._thread.join()

    def finish(self) -> dict[str, Any]:
        """The lag seen during the run and how long the sink took to catch up after it (its next
        reports showing no lag; a report comes twice a second, taken up to a second earlier)."""
        if not self.on:
            return {}
        started = time.monotonic()
        caught_up = None
        while time.monotonic() - started < CATCH_UP_LIMIT_S:
            status = _sink_status(self.base_url)
            if status and status.get("lag_events") == 0:
                caught_up = time.monotonic() - started
                break
            time.sleep(INTERVAL_S)
        return {"sink_lag_max_events": max((n for n, _ in self.samples), default=None),
                "sink_lag_max_s": max((s for _, s in self.samples), default=None),
                "sink_catch_up_s": None if caught_up is None else round(caught_up, 2)}
