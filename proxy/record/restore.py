"""Rebuilding Redis's usage aggregates from PostgreSQL, after Redis lost its data.

For each project: the project, agent, key and model aggregates of every day, week, month and
the total from ``usage_daily``; the hour aggregates (those still within their TTL) and every
aggregate of the sessions still within theirs, with the rankings of sessions by cost, from
``usage_events``. Each is set to exactly what PostgreSQL holds (``write_aggregates``; a
session's buckets become its one hash, replaced whole), with what is left of its TTL; an
aggregate that would already have expired is not written. Budget
spend is read from these aggregates, so budgets count again what was spent. Budget settings,
farebox keys and holds are not part of the usage of record: they are not restored.

Run it after Redis came back empty and before farebox serves again (or once the sink has
caught up): an aggregate is set to PostgreSQL's sums, so usage recorded in Redis meanwhile
and not yet in PostgreSQL would not be counted.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import asyncpg

from proxy.ledger.aggregates import AggregateKey, write_aggregates
from proxy.ledger.ledger import Ledger
from proxy.ledger.periods import PERIODS, bucket_id, period_bounds
from proxy.ledger.settle import Ttls
from proxy.record.statement import FIELDS

__all__ = ["restore", "Restorer"]

_BREAKDOWN = ("requests", "prompt_tokens", "completion_tokens", "cost_nano")
_SUMS = ", ".join(f"sum({n})::bigint AS {n}" for n in FIELDS if n not in ("requests", "estimated"))
_EVENT_SUMS = f"count(*) AS requests, {_SUMS}, count(*) FILTER (WHERE estimated) AS estimated"


def _redis_field(name: str) -> str:
    return "cost" if name == "cost_nano" else name


def _at(day: date | datetime) -> datetime:
    if isinstance(day, datetime):
        return day.replace(tzinfo=timezone.utc) if day.tzinfo is None else day
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


class Restorer:
    """The aggregates of one project, summed before they are written."""

    def __init__(self, project: str, ttls: Ttls, now: float) -> None:
        self.project = project
        self.ttls = ttls
        self.now = now
        self.aggregates: dict[AggregateKey, dict[str, int]] = {}
        self.expiry: dict[AggregateKey, int | None] = {}
        self.rankings: dict[tuple[str, str], dict[str, int]] = {}

    def _ttl_left(self, period: str, at: datetime, session: bool = False) -> int | None | bool:
        """Seconds the aggregate of ``period`` holding ``at`` has left (None: no TTL); False
        when it would have expired already."""
        ttl = getattr(self.ttls, period)
        if session and self.ttls.session is not None and (ttl is None or ttl > self.ttls.session):
            ttl = self.ttls.session
        if ttl is None:
            return None
        _, end = period_bounds(period, at)
        last = min(end.timestamp(), self.now) if end is not None else self.now
        left = int(last + ttl - self.now)
        return left if left > 0 else False

    def add(self, periods: tuple[str, ...], at: datetime, agent: str, model: str, key_id: str,
            session: str | None, values: dict[str, int]) -> None:
        """A row of sums at ``at`` into the aggregates of ``periods`` of its scopes."""
        p = self.project
        if session is not None:
            scopes = [("session", session, 1)]
        else:
            scopes = [("project", p, 2), ("agent", agent, 1), ("model", model, 0)]
            if key_id:
                scopes.append(("key", key_id, 1))
        for period in periods:
            left = self._ttl_left(period, at, session is not None)
            if left is False:
                continue
            bucket = bucket_id(period, at)
            for scope, local, level in scopes:
                key = AggregateKey(p, scope, bucket, local)
                fields = self.aggregates.setdefault(key, {})
                self.expiry[key] = left  # type: ignore[assignment]
                for name in FIELDS:
                    f = _redis_field(name)
                    fields[f] = fields.get(f, 0) + values[name]
                for tag, who, min_level in (("m", model, 1), ("a", agent, 2)):
                    if level >= min_level:
                        for name in _BREAKDOWN:
                            f = f"{tag}|{who}|{_redis_field(name)}"
                            fields[f] = fields.get(f, 0) + values[name]
                if scope == "session":
                    ranking = self.rankings.setdefault((p, bucket), {})
                    ranking[local] = fields["cost"]


async def _project(conn: Any, ledger: Ledger, project: str, ttls: Ttls, now: float, ranking_size: int) -> int:
    r = Restorer(project, ttls, now)
    for row in await conn.fetch("SELECT * FROM usage_daily WHERE project = $1", project):
        r.add(("day", "week", "month", "total"), _at(row["day"]), row["agent"], row["model"], row["key_id"], None,
              {n: int(row[n]) for n in FIELDS})
    since = datetime.fromtimestamp(now - ttls.hour, tz=timezone.utc) if ttls.hour else datetime(1970, 1, 1, tzinfo=timezone.utc)
    for row in await conn.fetch(
            f"SELECT date_trunc('hour', ts, 'UTC') AS hour, agent, priced_model, coalesce(key_id, '') AS key_id, "
            f"{_EVENT_SUMS} FROM usage_events WHERE project = $1 AND ts >= date_trunc('hour', $2::timestamptz) "
            "GROUP BY 1, 2, 3, 4", project, since):
        r.add(("hour",), row["hour"], row["agent"], row["priced_model"], row["key_id"], None,
              {n: int(row[n]) for n in FIELDS})
    recent = (datetime.fromtimestamp(now - ttls.session, tz=timezone.utc) if ttls.session
              else datetime(1970, 1, 1, tzinfo=timezone.utc))
    for row in await conn.fetch(
            f"SELECT date_trunc('hour', ts, 'UTC') AS hour, session, priced_model, {_EVENT_SUMS} FROM usage_events "
            "WHERE project = $1 AND session IN (SELECT DISTINCT session FROM usage_events WHERE project = $1 "
            "AND session IS NOT NULL AND ts >= $2) GROUP BY 1, 2, 3", project, recent):
        r.add(PERIODS, row["hour"], "", row["priced_model"], "", row["session"], {n: int(row[n]) for n in FIELDS})
    return await write_aggregates(ledger, r.aggregates, r.expiry, r.rankings, ranking_size)


async def restore(conn: asyncpg.Connection | asyncpg.Pool, ledger: Ledger, *, ttls: Ttls = Ttls(),
                  now: float, project: str | None = None, ranking_size: int = 100) -> dict[str, int]:
    """Rebuild the aggregates of ``project`` (None: every project PostgreSQL has); returns the
    aggregates written per project."""
    if project is not None:
        projects = [project]
    else:
        projects = [row["project"] for row in await conn.fetch("SELECT DISTINCT project FROM usage_monthly ORDER BY 1")]
    return {p: await _project(conn, ledger, p, ttls, now, ranking_size) for p in projects}
