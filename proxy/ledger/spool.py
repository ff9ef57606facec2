"""The spool: usage events kept in a local file while Redis cannot take them.

One JSON object per line, appended and fsynced before the request's answer is complete, so
no usage that happened is lost. ``replay`` settles every spooled event into Redis (settling is
idempotent per request id, so a crash mid-replay only repeats work) and then empties the file.
File I/O runs in a thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from proxy.ledger.ledger import UsageEvent

if TYPE_CHECKING:
    from proxy.ledger.ledger import Ledger

__all__ = ["Spool"]


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = asyncio.Lock()

    def _append_sync(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    async def append(self, event: UsageEvent) -> None:
        line = orjson.dumps(event.to_dict()) + b"\n"
        async with self._lock:
            await asyncio.to_thread(self._append_sync, line)

    async def pending(self) -> bool:
        return await asyncio.to_thread(lambda: self.path.exists() and self.path.stat().st_size > 0)

    def _read_sync(self) -> list[UsageEvent]:
        if not self.path.exists():
            return []
        events = []
        for raw in self.path.read_bytes().splitlines():
            if raw.strip():
                try:
                    events.append(UsageEvent.from_dict(orjson.loads(raw)))
                except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
                    continue  # a line torn by a crash mid-write; the rest still replays
        return events

    async def events(self) -> list[UsageEvent]:
        return await asyncio.to_thread(self._read_sync)

    async def replay(self, ledger: "Ledger") -> int:
        """Settle every spooled event into Redis; returns how many were newly recorded."""
        async with self._lock:
            events = await asyncio.to_thread(self._read_sync)
            recorded = 0
            for event in events:
                outcome = await ledger.settle(event)  # LedgerUnavailable propagates: the file stays
                recorded += outcome.recorded
            await asyncio.to_thread(self.path.unlink, missing_ok=True)
            return recorded
