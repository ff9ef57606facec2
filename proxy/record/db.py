"""PostgreSQL: connecting, the versioned schema migrations, and the monthly partitions.

Migrations are the files ``migrations/NNN_name.sql`` shipped in the package, applied in order,
each in its own transaction and noted in ``schema_migrations``; an advisory lock makes
processes that start together apply each once. ``usage_events`` is partitioned by month:
``usage_events_YYYYMM`` is created before the first event of its month is written, so an old
month can be detached (``ALTER TABLE usage_events DETACH PARTITION usage_events_202601``)
and archived.
"""

from __future__ import annotations

import re
from datetime import date
from importlib import resources
from typing import Any

import asyncpg

__all__ = ["connect", "migrate", "migrations", "ensure_partitions", "partition_name", "month_start",
           "next_month", "check_url", "describe_url"]

_MIGRATION = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")
_LOCK = 0x66617265  # advisory lock key of migrations and partition creation ("fare")


def check_url(url: str) -> str:
    if not re.match(r"^postgres(ql)?://", url):
        raise ValueError("must start with postgresql:// or postgres://")
    return url


def describe_url(url: str) -> str:
    """The URL without its password, fit for logs."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


async def connect(url: str, *, max_size: int = 4) -> asyncpg.Pool:
    """A small pool to ``url`` (raises ``OSError`` / ``asyncpg`` errors when it cannot)."""
    return await asyncpg.create_pool(url, min_size=0, max_size=max_size, command_timeout=60)


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration shipped, in order."""
    out = []
    for item in resources.files("proxy.record").joinpath("migrations").iterdir():
        match = _MIGRATION.fullmatch(item.name)
        if match:
            out.append((int(match[1]), item.name, item.read_text(encoding="utf-8")))
    return sorted(out)


async def migrate(pool: asyncpg.Pool | asyncpg.Connection) -> list[str]:
    """Apply the migrations not applied yet; returns the names of those applied now."""
    applied_now = []
    async with _acquire(pool) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                           "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for version, name, sql in migrations():
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                if await conn.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1", version):
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
                applied_now.append(name)
    return applied_now


class _acquire:
    """``async with`` a connection of a pool, or a connection itself."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.ctx: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        if isinstance(self.source, asyncpg.Pool):
            self.ctx = self.source.acquire()
            return await self.ctx.__aenter__()
        return self.source

    async def __aexit__(self, *exc: Any) -> None:
        if self.ctx is not None:
            await self.ctx.__aexit__(*exc)


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    return month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)


def partition_name(month: date) -> str:
    return f"usage_events_{month.year:04d}{month.month:02d}"


async def ensure_partitions(conn: asyncpg.Connection, months: set[date], known: set[date]) -> None:
    """Create the partitions of ``months`` that are not in ``known`` (and add them to it)."""
    for month in sorted(months - known):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {partition_name(month)} PARTITION OF usage_events "
                f"FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') TO ('{next_month(month).isoformat()} 00:00:00+00')")
        known.add(month)
