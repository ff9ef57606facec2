"""Reconciling a project's month: PostgreSQL's statement against Redis's aggregates.

Compared, in integers: the month's totals (every field), each agent's and each model's
requests, tokens and cost (the month aggregate's breakdowns), and each day's totals (the day
aggregates). Every difference is listed; none is expected once the sink has caught up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import asyncpg

from proxy.ledger.aggregates import AggregateKey, read_aggregates
from proxy.ledger.ledger import Ledger
from proxy.ledger.periods import bucket_id
from proxy.record.db import next_month
from proxy.record.statement import FIELDS, PART_FIELDS, Statement, read_statement

__all__ = ["Difference", "reconcile"]

# Statement field -> Redis field.
_REDIS = {"cost_nano": "cost"}


@dataclass(frozen=True, slots=True)
class Difference:
    part: str          # total, agent, model, day
    name: str          # the agent, model or day ('' for the total)
    field: str
    postgres: int
    redis: int

    def to_json(self) -> dict[str, Any]:
        return {"part": self.part, "name": self.name, "field": self.field, "postgres": self.postgres,
                "redis": self.redis}

    def to_text(self) -> str:
        where = f"{self.part} {self.name}".strip()
        return f"{where}: {self.field} postgres {self.postgres} redis {self.redis}"


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def _breakdown(values: dict[str, int], tag: str) -> dict[str, dict[str, int]]:
    groups: dict[str, dict[str, int]] = {}
    for name, value in values.items():
        if name.startswith(tag):
            who, _, what = name[len(tag):].rpartition("|")
            groups.setdefault(who, {})[what] = value
    return groups


def _compare(part: str, name: str, fields: tuple[str, ...], pg: dict[str, int], redis: dict[str, int]) -> list[Difference]:
    out = []
    for f in fields:
        a, b = pg.get(f, 0), redis.get(_REDIS.get(f, f), 0)
        if a != b:
            out.append(Difference(part, name, f, a, b))
    return out


async def reconcile(conn: asyncpg.Connection | asyncpg.Pool, ledger: Ledger, project: str, month: date
                    ) -> tuple[Statement, list[Difference]]:
    """The statement, and every difference between it and Redis."""
    statement = await read_statement(conn, project, month)
    days = []
    day = month
    while day < next_month(month):
        days.append(day)
        day += timedelta(days=1)
    keys = [AggregateKey(project, "project", bucket_id("month", _at(month)), project)]
    keys += [AggregateKey(project, "project", bucket_id("day", _at(d)), project) for d in days]
    month_values, *day_values = await read_aggregates(ledger, keys)
    out = _compare("total", "", FIELDS, statement.total, month_values)
    for tag, part, pg_parts in (("a|", "agent", statement.by_agent), ("m|", "model", statement.by_model)):
        redis_parts = _breakdown(month_values, tag)
        for name in sorted(set(pg_parts) | set(redis_parts)):
            out += _compare(part, name, PART_FIELDS, pg_parts.get(name, {}), redis_parts.get(name, {}))
    for d, values in zip(days, day_values):
        out += _compare("day", d.isoformat(), FIELDS, statement.by_day.get(d.isoformat(), {}), values)
    return statement, out
