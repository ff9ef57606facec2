"""farebox keys in Redis: each key's record, each project's index of them, each project's rate
limits, and one counter that moves whenever a key stops working or changes (revoked, rotated)
or a project's rate limits change.

    fb:{key:<id>}:record      hash    a key's record: secret hash, project, agent, name, models,
                                      rpm, tpm, expires_at, created_at, revoked_at, rotated_at
    fb:{acme}:keys            set     the ids of project acme's keys
    fb:{acme}:limits          hash    project acme's rate limits: rpm, tpm (a field absent: no limit)
    fb:{key:*}:version        string  the change counter every farebox process polls: a new
                                      value at each change (never an increment, so a write sent
                                      twice after a lost reply, or to a new master after a
                                      failover, leaves the same value)

A record is tagged by its key id and the index by its project, so every command touches one
Redis Cluster slot. A tag holding ``:`` never names a project (project ids have no ``:``), so
these keys never share a project's names. The record holds the SHA-256 of the secret, never
the secret itself. Fields are text; what they mean is ``proxy.control.keys``'s business.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Mapping

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.ledger.errors import redis_errors, text
from proxy.ledger.keys import Keys

__all__ = ["KeyStore"]


def _new_version() -> int:
    """A value the change counter never had: the time in ms, then 20 random bits."""
    return (int(time.time() * 1000) << 20) | secrets.randbits(20)


class KeyStore:
    """Key records on one Redis, under one prefix."""

    __slots__ = ("redis", "prefix", "keys")

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)

    def record_key(self, key_id: str) -> str:
        return f"{self.prefix}:{{key:{key_id}}}:record"

    def index_key(self, project: str) -> str:
        return f"{self.prefix}:{{{project}}}:keys"

    def version_key(self) -> str:
        return f"{self.prefix}:{{key:*}}:version"

    async def add(self, key_id: str, fields: Mapping[str, str], project: str) -> None:
        """Store a new key's record, then list it in its project's index."""
        with redis_errors():
            await self.redis.hset(self.record_key(key_id), mapping=dict(fields))
            await self.redis.sadd(self.index_key(project), key_id)

    async def get(self, key_id: str) -> dict[str, str] | None:
        """A key's record, or None when there is none."""
        with redis_errors():
            raw = await self.redis.hgetall(self.record_key(key_id))
        return {text(k): text(v) for k, v in raw.items()} if raw else None

    async def of_project(self, project: str) -> list[dict[str, str]]:
        """Every record listed in ``project``'s index, in id order."""
        with redis_errors():
            ids = sorted(text(i) for i in await self.redis.smembers(self.index_key(project)))
            records: list[dict[str, str]] = []
            for key_id in ids:
                raw = await self.redis.hgetall(self.record_key(key_id))
                if raw:
                    records.append({"id": key_id, **{text(k): text(v) for k, v in raw.items()}})
        return records

    async def change(self, key_id: str, fields: Mapping[str, str]) -> dict[str, str] | None:
        """Set ``fields`` of an existing record and move the change counter (so every process
        drops what it remembers of keys); the record as changed, or None when there is none."""
        key = self.record_key(key_id)
        with redis_errors():
            if not await self.redis.exists(key):
                return None
            await self.redis.hset(key, mapping=dict(fields))
            await self.redis.set(self.version_key(), str(_new_version()))
        return await self.get(key_id)

    async def version(self) -> int:
        """The change counter (0 before any change)."""
        with redis_errors():
            value: Any = await self.redis.get(self.version_key())
        return int(value) if value is not None else 0

    async def limits(self, project: str) -> tuple[int | None, int | None]:
        """``project``'s requests and tokens per minute (None: no limit of that kind)."""
        with redis_errors():
            rpm, tpm = await self.redis.hmget(self.keys.limits(project), "rpm", "tpm")
        return (int(rpm) if rpm is not None else None, int(tpm) if tpm is not None else None)

    async def set_limits(self, project: str, rpm: int | None, tpm: int | None) -> None:
        """Set (or, with None, remove) ``project``'s rate limits and move the change counter, so
        every process reads them again."""
        key = self.keys.limits(project)
        with redis_errors():
            # One MULTI on a single Redis. After a MULTI, redis-py 8.1's async cluster client
            # fails on its own connections ("Event loop is closed" when it closes them): on a
            # cluster the writes go in order, unwrapped; a process that read them half-way
            # reads them again once the change counter below moves.
            pipe = self.redis.pipeline(transaction=not isinstance(self.redis, RedisCluster))
            for name, value in (("rpm", rpm), ("tpm", tpm)):
                if value is None:
                    pipe.hdel(key, name)
                else:
                    pipe.hset(key, name, str(value))
            await pipe.execute()
            await self.redis.set(self.version_key(), str(_new_version()))
