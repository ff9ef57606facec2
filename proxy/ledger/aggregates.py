"""Usage aggregates read and written whole, in integers: for reconciling Redis with the usage of
record in PostgreSQL, and for rebuilding Redis's aggregates from it after Redis lost its data.

An aggregate is the hash ``settle.lua`` keeps per scope, bucket and id (``Keys.usage``):
``requests``, ``prompt_tokens``, ``completion_tokens``, ``cached_tokens``,
``cache_creation_tokens``, ``reasoning_tokens``, ``cost`` (nano-USD), ``estimated``, and
breakdowns ``m|<model>|<field>`` / ``a|<agent>|<field>``; settle.lua writes only fields that
are not zero, and so does ``write_aggregates``. A session's aggregates are the buckets of its
one hash (``session_fields.py``): read and written here in those same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from proxy.ledger.errors import redis_errors, text
from proxy.ledger.session_fields import decode, encode

if TYPE_CHECKING:
    from proxy.ledger.ledger import Ledger

__all__ = ["AggregateKey", "read_aggregates", "write_aggregates"]

_CHUNK = 500  # commands per pipeline round trip


@dataclass(frozen=True, slots=True)
class AggregateKey:
    """One aggregate: ``project``'s ``scope`` (project, agent, session, key, model), bucket
    (``periods.bucket_id``) and id inside the project."""

    project: str
    scope: str
    bucket: str
    local: str


async def read_aggregates(ledger: Ledger, keys: Sequence[AggregateKey]) -> list[dict[str, int]]:
    """Each aggregate's fields as integers ({} where there is none)."""
    await ledger.settled()  # what this process recorded so far is part of the answer
    out: list[dict[str, int]] = []
    k = ledger.keys
    for i in range(0, len(keys), _CHUNK):
        with redis_errors():
            pipe = ledger.redis.pipeline(transaction=False)
            for a in keys[i:i + _CHUNK]:
                if a.scope == "session":
                    pipe.hgetall(k.session(a.project, a.local))
                else:
                    pipe.hgetall(k.usage(a.project, a.scope, a.bucket, a.local))
            replies = await pipe.execute()
        for a, reply in zip(keys[i:i + _CHUNK], replies):
            values = {text(f): int(v) for f, v in reply.items()}
            out.append(decode(values).get(a.bucket, {}) if a.scope == "session" else values)
    return out


async def write_aggregates(ledger: Ledger, aggregates: dict[AggregateKey, dict[str, int]],
                           ttls: dict[AggregateKey, int | None],
                           rankings: dict[tuple[str, str], dict[str, int]], ranking_size: int) -> int:
    """Set each aggregate to exactly ``aggregates[key]`` (its nonzero fields; what was there is
    replaced), with the TTL ``ttls[key]`` seconds (None: none); set the rankings of sessions by
    cost (``(project, bucket)`` → session → nano-USD, the ``ranking_size`` costliest kept, 0 =
    all); and add the projects to the known projects. Returns the aggregates written.
    A session's hash is replaced whole by the session's aggregates given here, and lives as
    long as the longest-lived of them."""
    k = ledger.keys
    items = list(aggregates.items())
    sessions: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
    session_ttl: dict[tuple[str, str], int | None] = {}
    for key, fields in items:
        if key.scope == "session":
            who = (key.project, key.local)
            sessions.setdefault(who, {})[key.bucket] = fields
            ttl, longest = ttls.get(key), session_ttl.get(who, 0)
            session_ttl[who] = None if ttl is None or longest is None else max(longest, int(ttl))
    writes: list[tuple[str, dict[str, int], int | None]] = [
        (k.usage(key.project, key.scope, key.bucket, key.local), fields, ttls.get(key))
        for key, fields in items if key.scope != "session"]
    writes += [(k.session(p, local), encode(buckets), session_ttl[(p, local)])
               for (p, local), buckets in sessions.items()]
    with redis_errors():
        for i in range(0, len(writes), _CHUNK):
            pipe = ledger.redis.pipeline(transaction=False)
            for name, fields, ttl in writes[i:i + _CHUNK]:
                pipe.delete(name)
                values = {f: str(v) for f, v in fields.items() if v}
                if values:
                    pipe.hset(name, mapping=values)
                    if ttl:
                        pipe.expire(name, max(1, int(ttl)))
            await pipe.execute()
        ranked = list(rankings.items())
        for i in range(0, len(ranked), _CHUNK):
            pipe = ledger.redis.pipeline(transaction=False)
            for (project, bucket), costs in ranked[i:i + _CHUNK]:
                name = k.top_sessions(project, bucket)
                pipe.delete(name)
                top = sorted(costs.items(), key=lambda item: (-item[1], item[0]))
                if ranking_size:
                    top = top[:ranking_size]
                if top:
                    pipe.zadd(name, {session: cost for session, cost in top})
                    ttl = ttls.get(AggregateKey(project, "session", bucket, top[0][0]))
                    if ttl:
                        pipe.expire(name, max(1, int(ttl)))
            await pipe.execute()
        projects = sorted({key.project for key in aggregates})
        if projects:
            await ledger.redis.sadd(k.projects(), *projects)
    return len(items)
