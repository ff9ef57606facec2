"""Usage holds' records: what a hold of compute budget was made for, so that any farebox process
can settle or release it (``proxy.holds``).

A hold's money is held like a request's reservation (``reserve.lua`` under the hold's id, until
its expiry, not renewed); its record is one hash under its project's hash tag
(``Keys.hold``). A hold is closed once: ``close`` writes its ``closed`` field only when it has
none (``lua/hold_close.lua``), and reads the record back in the same step, so of two processes
settling or releasing one hold at once exactly one wins, and the other reads what won.
The record lives ``RECORD_KEPT_S`` past the hold's expiry, so a repeated settle or release finds
it and gets the same answer.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster

from proxy.ledger.errors import redis_errors, text
from proxy.ledger.keys import Keys
from proxy.ledger.scripts import lua_source

__all__ = ["HoldStore", "RECORD_KEPT_S"]

RECORD_KEPT_S = 86_400          # a hold's record outlives its expiry by a day


def _fields(raw: dict[Any, Any]) -> dict[str, str] | None:
    return {text(k): text(v) for k, v in raw.items()} if raw else None


class HoldStore:
    """The records of usage holds in one Redis."""

    __slots__ = ("redis", "keys", "script")

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        self.script = redis.register_script(lua_source("hold_close.lua"))

    async def add(self, project: str, hold_id: str, fields: dict[str, str], expires_at_ms: int) -> None:
        """Store a new hold's record, kept until ``RECORD_KEPT_S`` after ``expires_at_ms``."""
        key = self.keys.hold(project, hold_id)
        with redis_errors():
            # One key: a transaction on one Redis; on a cluster, a pipeline to its slot's node.
            pipe = self.redis.pipeline(transaction=not isinstance(self.redis, RedisCluster))
            pipe.hset(key, mapping=fields)
            pipe.pexpireat(key, expires_at_ms + RECORD_KEPT_S * 1000)
            await pipe.execute()

    async def get(self, project: str, hold_id: str) -> dict[str, str] | None:
        """A hold's record, or None when ``project`` has no such hold (or it was forgotten)."""
        with redis_errors():
            return _fields(await self.redis.hgetall(self.keys.hold(project, hold_id)))

    async def close(self, project: str, hold_id: str, closed: str) -> tuple[bool, dict[str, str] | None]:
        """Close the hold with ``closed`` (how: settled, released) unless it is closed already
        (``hold_close.lua``): whether this call closed it, and the record as it stands after
        (None: no such hold)."""
        with redis_errors():
            reply = await self.script(keys=[self.keys.hold(project, hold_id)], args=[closed])
        if len(reply) < 2:
            return False, None
        values = reply[1]
        return bool(int(reply[0])), {text(values[i]): text(values[i + 1]) for i in range(0, len(values), 2)}
