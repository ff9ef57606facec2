"""The event streams: reading pages of recorded requests, and trimming them by age.

Each project has its own stream (``fb:{acme}:events``); entry ids are ``<ms>-<seq>``, the
Redis server's time when the request was recorded. Reading several projects merges their
streams in id order (ties, equal ids in two streams, ordered by project), and a page never
splits entries that share an id, so the last id of a page is a cursor that loses nothing:
the next page starts right after it. Such a page may hold a few more entries than asked for.

Retention by length is ``MAXLEN ~`` on every append (``settle.lua``); retention by age is
``trim_older_than``, which the application runs periodically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.ledger.errors import redis_errors, text

if TYPE_CHECKING:
    from proxy.domain import UsageEvent
    from proxy.ledger.ledger import Ledger

__all__ = ["StreamEntry", "parse_stream_id", "format_stream_id", "after", "read_events", "trim_older_than",
           "in_stream", "MAX_SEQ"]

MAX_SEQ = 2**64 - 1
_STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
# Entries fetched per stream and round trip when several streams are merged.
_MIN_BATCH = 100

StreamId = tuple[int, int]


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One recorded request as the stream holds it: its id, project and string fields."""

    id: StreamId
    project: str
    fields: dict[str, str]

    @property
    def id_text(self) -> str:
        return format_stream_id(self.id)


def parse_stream_id(text: str) -> StreamId | None:
    """``(ms, seq)`` of a full stream id such as ``1732386600000-0``; None when it is not one."""
    match = _STREAM_ID.fullmatch(text)
    if match is None:
        return None
    ms, seq = int(match[1]), int(match[2])
    return (ms, seq) if ms <= MAX_SEQ and seq <= MAX_SEQ else None


def format_stream_id(entry_id: StreamId) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def after(entry_id: StreamId) -> StreamId:
    """The first id after ``entry_id`` (for a start that excludes it)."""
    ms, seq = entry_id
    return (ms, seq + 1) if seq < MAX_SEQ else (ms + 1, 0)


async def read_events(ledger: Ledger, projects: list[str], start: StreamId, limit: int) -> list[StreamEntry]:
    """Up to ``limit`` entries (more only to finish a group sharing the last id) of the streams
    of ``projects`` from ``start`` (inclusive), merged in id order."""
    await ledger.settled()  # what this process recorded so far is part of the answer
    if limit <= 0 or not projects:
        return []
    batch = limit if len(projects) == 1 else min(limit, max(_MIN_BATCH, -(-limit // len(projects))))
    k = ledger.keys
    position = dict.fromkeys(projects, start)  # inclusive start of each open stream's next read
    pending: list[StreamEntry] = []
    fetch = list(projects)
    while True:
        with redis_errors():
            pipe = ledger.redis.pipeline(transaction=False)
            for project in fetch:
                pipe.xrange(k.events(project), min=format_stream_id(position[project]), max="+", count=batch)
            replies = await pipe.execute()
        for project, entries in zip(fetch, replies):
            for raw_id, fields in entries:
                entry_id = parse_stream_id(text(raw_id))
                assert entry_id is not None
                pending.append(StreamEntry(entry_id, project, {text(f): text(v) for f, v in fields.items()}))
            if len(entries) < batch:
                del position[project]  # read to its end
            else:
                position[project] = after(parse_stream_id(text(entries[-1][0])))  # type: ignore[arg-type]
        # Every open stream has been read up to ``horizon``: entries before it are final.
        horizon = min(position.values()) if position else None
        ready = [e for e in pending if horizon is None or e.id < horizon]
        if horizon is None or len(ready) >= limit:
            break
        fetch = [p for p, at in position.items() if at == horizon]
    ready.sort(key=lambda e: (e.id, e.project))
    page = ready[:limit]
    last = page[-1].id if page else None
    page += [e for e in ready[limit:] if e.id == last]
    return page


async def trim_older_than(ledger: Ledger, projects: list[str], min_ms: int) -> int:
    """Remove the entries recorded before epoch ``min_ms`` from the streams of ``projects``;
    returns how many went. Exact (not ``~``), so cost follows what is removed."""
    if not projects:
        return 0
    with redis_errors():
        pipe = ledger.redis.pipeline(transaction=False)
        for project in projects:
            pipe.xtrim(ledger.keys.events(project), minid=f"{min_ms}-0", approximate=False)
        return sum(int(n) for n in await pipe.execute())


# Where to look for a late duplicate's first record: its settle ran between the event's time
# and the moment it was spooled, on Redis's clock (which may differ from farebox's a little).
LOOK_BEFORE_S = 30
LOOK_AFTER_S = 300
LOOK_AT_MOST = 100_000           # entries scanned before giving up (None: cannot tell)


async def in_stream(ledger: Ledger, event: UsageEvent) -> bool | None:
    """Whether ``event``'s request id is in its project's stream, recorded between
    ``LOOK_BEFORE_S`` before the event's time and ``LOOK_AFTER_S`` after it; None when that
    stretch holds more than ``LOOK_AT_MOST`` entries (not all read)."""
    key = ledger.keys.events(event.attribution.project)
    start = f"{max(0, int((event.ts - LOOK_BEFORE_S) * 1000))}-0"
    end = f"{int((event.ts + LOOK_AFTER_S) * 1000)}-{MAX_SEQ}"
    wanted = event.request_id
    scanned = 0
    while scanned < LOOK_AT_MOST:
        with redis_errors():
            entries = await ledger.redis.xrange(key, min=start, max=end, count=2_000)
        for _, fields in entries:
            found = fields.get(b"request_id", fields.get("request_id"))
            if found is not None and text(found) == wanted:
                return True
        scanned += len(entries)
        if len(entries) < 2_000:
            return False
        last = parse_stream_id(text(entries[-1][0]))
        assert last is not None
        start = format_stream_id(after(last))
    return None
