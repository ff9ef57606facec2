"""Draining the event streams through a Redis consumer group (the PostgreSQL sink's side).

Every project's stream (``fb:{acme}:events``) gets the group ``farebox-sink`` (created at the
stream's start, so events recorded before the sink was turned on are drained too). Each sink
process is a consumer of it: ``read`` hands it entries no consumer had, ``reclaim`` takes over
entries another consumer was given and did not acknowledge for a while (a sink that died:
``XAUTOCLAIM``), ``ack`` acknowledges what PostgreSQL committed, and ``tidy`` trims the stream
by the acknowledged position (``lua/drain.lua``): an entry leaves Redis only once acknowledged,
and then only when the length or age kept wants it gone. A stream or group that disappeared
(Redis lost its data) is made again on the next read.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from proxy.ledger.errors import redis_errors, text
from proxy.ledger.events import StreamEntry, parse_stream_id
from proxy.ledger.scripts import lua_source

if TYPE_CHECKING:
    from proxy.ledger.ledger import Ledger

__all__ = ["Drain", "StreamState", "GROUP", "consumer_name"]

GROUP = "farebox-sink"
_TRIM_CAP = 10_000      # entries trimmed by length per stream and tidy call
_COUNT_CAP = 1_000      # entries counted as undelivered per stream


def consumer_name() -> str:
    """A consumer name unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class StreamState:
    """A project's stream as the group sees it after a tidy: ``behind`` counts the entries
    PostgreSQL may not have yet (pending plus undelivered, the latter counted up to 1,000);
    ``oldest_ms`` is the time of the oldest of them (None when there is none)."""

    project: str
    length: int
    pending: int
    undelivered: int
    oldest_ms: int | None
    trimmed: int

    @property
    def behind(self) -> int:
        return self.pending + self.undelivered


def _entries(project: str, raw: Any) -> tuple[list[StreamEntry], list[str]]:
    """Stream entries of a reply; entries that were deleted meanwhile come back as their ids."""
    out, gone = [], []
    for item in raw or ():
        if item is None:
            continue
        raw_id, fields = item[0], item[1]
        if fields is None:
            gone.append(text(raw_id))
            continue
        entry_id = parse_stream_id(text(raw_id))
        assert entry_id is not None
        if isinstance(fields, dict):
            values = {text(f): text(v) for f, v in fields.items()}
        else:
            values = {text(fields[i]): text(fields[i + 1]) for i in range(0, len(fields), 2)}
        out.append(StreamEntry(entry_id, project, values))
    return out, gone


class Drain:
    """One consumer of the sink's group, on one ledger's Redis."""

    def __init__(self, ledger: Ledger, consumer: str | None = None, group: str = GROUP) -> None:
        self.ledger = ledger
        self.redis = ledger.redis
        self.keys = ledger.keys
        self.group = group
        self.consumer = consumer or consumer_name()
        self._tidy = ledger.redis.register_script(lua_source("drain.lua"))
        self._cluster = isinstance(ledger.redis, RedisCluster)
        self._read = ledger.redis.register_script(lua_source("drain_read.lua"))
        self._joined: set[str] = set()

    async def projects(self) -> list[str]:
        """Every known project (``fb:projects``), sorted."""
        with redis_errors():
            return sorted(text(p) for p in await self.redis.smembers(self.keys.projects()))

    async def join(self, projects: list[str]) -> None:
        """Make sure each project's stream has the group (created at the stream's start)."""
        new = [p for p in projects if p not in self._joined]
        if not new:
            return
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for project in new:
                pipe.xgroup_create(self.keys.events(project), self.group, id="0", mkstream=True)
            replies = await pipe.execute(raise_on_error=False)
        for project, reply in zip(new, replies):
            if isinstance(reply, ResponseError) and "BUSYGROUP" not in str(reply):
                with redis_errors():
                    raise reply
            self._joined.add(project)

    async def read(self, projects: list[str], count: int) -> list[StreamEntry]:
        """Up to ``count`` entries per stream that no consumer was given yet (``drain_read.lua``,
        one call per project, one round trip); [] when there is none."""
        if not projects:
            return []
        await self.join(projects)
        replies = await self._read_calls(projects, count)
        if any(isinstance(r, NoScriptError) for r in replies):  # the server lost its scripts
            with redis_errors():
                await self.redis.script_load(self._read.script)
            replies = await self._read_calls(projects, count)
        out: list[StreamEntry] = []
        for project, reply in zip(projects, replies):
            if isinstance(reply, Exception):
                if "NOGROUP" in str(reply):  # Redis lost the stream or the group: join again next time
                    self._joined.discard(project)
                with redis_errors():
                    raise reply
            if reply:
                for raw_id, fields in orjson.loads(reply):
                    entry_id = parse_stream_id(raw_id)
                    assert entry_id is not None
                    out.append(StreamEntry(entry_id, project, fields))
        return out

    async def _read_calls(self, projects: list[str], count: int) -> list[Any]:
        args = (self.group, self.consumer, str(count))
        with redis_errors():
            if self._cluster:  # a script call per project, each to its slot's master, at once
                return await asyncio.gather(*(self.redis.evalsha(self._read.sha, 1, self.keys.events(p), *args)
                                              for p in projects), return_exceptions=True)
            pipe = self.redis.pipeline(transaction=False)
            for project in projects:
                pipe.evalsha(self._read.sha, 1, self.keys.events(project), *args)
            return await pipe.execute(raise_on_error=False)

    async def reclaim(self, project: str, min_idle_ms: int, count: int) -> list[StreamEntry]:
        """Entries of ``project`` given to a consumer at least ``min_idle_ms`` ago and still not
        acknowledged (that consumer died, or is stuck), now this consumer's. Entries that were
        trimmed meanwhile are acknowledged (nothing is left of them to write)."""
        key = self.keys.events(project)
        await self.join([project])
        try:
            with redis_errors():
                reply = await self.redis.execute_command("XAUTOCLAIM", key, self.group, self.consumer, min_idle_ms,
                                                         "0-0", "COUNT", count)
        except Exception as exc:
            if "NOGROUP" in str(exc):  # Redis lost the stream or the group: join again next time
                self._joined.discard(project)
            raise
        if not reply:
            return []
        got, gone = _entries(project, reply[1])
        if gone:
            with redis_errors():
                await self.redis.xack(key, self.group, *gone)
        return got

    async def ack(self, entries: list[StreamEntry]) -> int:
        """Acknowledge ``entries`` (PostgreSQL has them); returns how many were pending."""
        by_project: dict[str, list[str]] = {}
        for entry in entries:
            by_project.setdefault(entry.project, []).append(entry.id_text)
        if not by_project:
            return 0
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for project, ids in by_project.items():
                pipe.xack(self.keys.events(project), self.group, *ids)
            return sum(int(n) for n in await pipe.execute())

    async def tidy(self, projects: list[str], maxlen: int, min_age_id: str = "") -> list[StreamState]:
        """Trim each project's stream by the acknowledged position (never an entry the group has
        not acknowledged) to ``maxlen`` entries (0: no limit) and entries from ``min_age_id`` on
        ('' = no limit by age); returns where each stream stands."""
        if not projects:
            return []
        args = [self.group, str(maxlen), min_age_id, str(_TRIM_CAP), str(_COUNT_CAP)]
        with redis_errors():
            if self._cluster:  # (redis-py runs no script in a cluster pipeline)
                replies = await asyncio.gather(*(self._tidy(keys=[self.keys.events(p)], args=args) for p in projects))
            else:
                pipe = self.redis.pipeline(transaction=False)
                for project in projects:
                    await self._tidy(keys=[self.keys.events(project)], args=args, client=pipe)
                replies = await pipe.execute()
        out = []
        for project, (length, pending, undelivered, oldest, trimmed, _) in zip(projects, replies):
            oldest_id = parse_stream_id(text(oldest)) if oldest else None
            out.append(StreamState(project, int(length), int(pending), int(undelivered),
                                   oldest_id[0] if oldest_id else None, int(trimmed)))
        return out
