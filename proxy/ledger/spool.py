"""The fail-open spool: usage that could not reach Redis, kept in a local file until it can.

With ``fail_mode: open`` a request is served even when Redis is down; its usage event is
appended here as one JSON line (flushed and fsynced) and settled into Redis later by
``replay``. Settling is idempotent per request id within the idempotency window
(``idempotency.py``), and a replay that stops halfway (a crash, or Redis failing again)
resumes after the last event it dealt with: an event is replayed again only when it was in
flight when the replay stopped, so it is recorded once however long the stop lasts.

Files, next to each other:

    <path>             events being appended
    <path>.replaying   events a replay took over; left in place when that replay failed, and
                       replayed first next time
    <path>.rejected    lines that cannot be settled (torn by a crash, or invalid), kept for a person
    <path>.progress    "<inode of <path>.replaying> <lines of it dealt with>", written every
                       ``PROGRESS_EVERY`` lines and whenever a replay stops

An event older than the idempotency window (less ``LATE_MARGIN_S``) may have lost its
done-marker: a settle whose reply was lost as Redis failed could have recorded it and the
outage lasted longer than the window. Such an event is first looked for in its project's event
stream (``events.in_stream``, around its time) and not recorded again when it is there; when
the stream was already trimmed past it (``stream_maxlen``), it cannot be told apart and is
recorded.

A replay first renames ``<path>`` to ``<path>.replaying`` under the same lock appends take,
so an event appended during a replay lands in a fresh ``<path>`` and is never lost or truncated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path
from typing import Callable

from proxy.domain import SettleOutcome, UsageEvent
from proxy.ledger.events import in_stream
from proxy.ledger.ledger import Ledger

__all__ = ["Spool"]

log = logging.getLogger("farebox")

PROGRESS_EVERY = 16     # lines replayed between two writes of the progress file
LATE_MARGIN_S = 60      # an event this close to the idempotency window's end is checked in the stream too


class Spool:
    """Usage events waiting for Redis, one JSON object per line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.replaying_path = self.path.with_name(self.path.name + ".replaying")
        self.rejected_path = self.path.with_name(self.path.name + ".rejected")
        self.progress_path = self.path.with_name(self.path.name + ".progress")
        self._file_lock = threading.Lock()      # appends (from worker threads) vs taking the file over
        self._replay_lock = asyncio.Lock()      # one replay at a time

    async def append(self, event: UsageEvent) -> None:
        """Add one event, durably (flush + fsync), off the event loop."""
        line = json.dumps(event.to_dict(), separators=(",", ":")) + "\n"
        await asyncio.to_thread(self._append_line, self.path, line)

    def _append_line(self, path: Path, line: str) -> None:
        data = line.encode("utf-8")
        with self._file_lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a+b") as f:
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        data = b"\n" + data  # a crash tore the last line: don't glue this one to it
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

    async def pending(self) -> bool:
        """True while events wait to be replayed."""
        for p in (self.replaying_path, self.path):
            try:
                if p.stat().st_size > 0:
                    return True
            except FileNotFoundError:
                continue
        return False

    async def events(self) -> list[UsageEvent]:
        """The events waiting to be replayed, oldest first (unreadable lines left out)."""
        return await asyncio.to_thread(self._read_events)

    def _read_events(self) -> list[UsageEvent]:
        events = []
        with self._file_lock:
            texts = [p.read_text(encoding="utf-8") for p in (self.replaying_path, self.path) if p.exists()]
        for text in texts:
            for line in text.splitlines():
                try:
                    events.append(UsageEvent.from_dict(json.loads(line)))
                except (ValueError, TypeError, KeyError):
                    continue
        return events

    def _take_over(self) -> bool:
        """Move the appended events aside for replay; False when there are none."""
        with self._file_lock:
            if self.replaying_path.exists():
                return True
            if not self.path.exists():
                return False
            os.replace(self.path, self.replaying_path)
            return True

    async def replay(self, ledger: Ledger, *, on_settled: Callable[[SettleOutcome], None] | None = None) -> int:
        """Settle every spooled event into ``ledger``; returns how many were newly recorded.
        ``on_settled`` sees each outcome (the alert thresholds a replayed event crossed).

        Events an earlier, interrupted replay already recorded settle as duplicates: they change
        nothing and are not counted. ``LedgerUnavailable`` when Redis fails again: the events
        stay spooled for the next call.
        """
        async with self._replay_lock:
            recorded = 0
            # At most two rounds: what a failed replay left, then what was appended since.
            for _ in range(2):
                if not await asyncio.to_thread(self._take_over):
                    break
                recorded += await self._replay_file(ledger, on_settled)
            return recorded

    async def _replay_file(self, ledger: Ledger, on_settled: Callable[[SettleOutcome], None] | None) -> int:
        text, inode = await asyncio.to_thread(self._read_replaying)
        done = await asyncio.to_thread(self._read_progress, inode)
        recorded = 0
        lines = text.splitlines()
        position = done
        try:
            for position in range(done, len(lines)):
                if position - done >= PROGRESS_EVERY:
                    await asyncio.to_thread(self._write_progress, inode, position)
                    done = position
                recorded += await self._replay_line(ledger, lines[position], on_settled)
            position = len(lines)
        finally:
            if position > done:  # stopped (Redis failed again, cancelled): resume after what is dealt with
                await asyncio.to_thread(self._write_progress, inode, position)
        await asyncio.to_thread(self._finish)
        return recorded

    async def _replay_line(self, ledger: Ledger, line: str, on_settled: Callable[[SettleOutcome], None] | None) -> int:
        """Settle one spooled line; 1 when it was newly recorded. An unreadable or invalid line
        goes to the rejected file."""
        if not line.strip():
            return 0
        try:
            event = UsageEvent.from_dict(json.loads(line))
        except (ValueError, TypeError, KeyError) as exc:
            log.error("spooled usage line cannot be read (%s); kept in %s", exc, self.rejected_path)
            await asyncio.to_thread(self._append_line, self.rejected_path, line + "\n")
            return 0
        if ledger.clock() - event.ts >= ledger.idempotency_window_s - LATE_MARGIN_S:
            # Its done-marker may be gone: a settle whose reply was lost when Redis failed may
            # have recorded it. Its event in the stream says so.
            seen = await in_stream(ledger, event)
            if seen:
                log.warning("spooled usage event %s was already recorded (found in the event stream); not "
                            "recorded again", event.request_id)
                return 0
            if seen is None:
                log.warning("spooled usage event %s is older than the idempotency window and its project's stream "
                            "is too busy around its time to check: recorded (it may have been recorded before)",
                            event.request_id)
        try:
            outcome = await ledger.settle(event)
        except ValueError as exc:
            log.error("spooled usage event %s is invalid (%s); kept in %s", event.request_id, exc, self.rejected_path)
            await asyncio.to_thread(self._append_line, self.rejected_path, line + "\n")
            return 0
        if on_settled is not None:
            on_settled(outcome)
        return int(outcome.recorded)

    def _read_replaying(self) -> tuple[str, int]:
        with open(self.replaying_path, encoding="utf-8") as f:
            return f.read(), os.fstat(f.fileno()).st_ino

    def _read_progress(self, inode: int) -> int:
        """Lines of the replaying file (``inode``) an earlier replay dealt with; 0 when none did
        (no progress file, or one of another file)."""
        try:
            written_inode, count = self.progress_path.read_text(encoding="ascii").split()
            return int(count) if int(written_inode) == inode else 0
        except (OSError, ValueError):
            return 0

    def _write_progress(self, inode: int, count: int) -> None:
        partial = self.progress_path.with_name(self.progress_path.name + ".new")
        partial.write_text(f"{inode} {count}\n", encoding="ascii")
        os.replace(partial, self.progress_path)

    def _finish(self) -> None:
        """The replaying file is all recorded: remove it, then its progress."""
        self.replaying_path.unlink()
        self.progress_path.unlink(missing_ok=True)
