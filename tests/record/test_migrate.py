"""``farebox db migrate``: the versioned files applied once each, in order; usage_events
partitioned by month, a partition made for each month an event arrives in."""

from __future__ import annotations

import asyncio

from proxy.cli.main import main
from proxy.domain import Attribution
from proxy.ledger.events import StreamEntry
from proxy.record.db import connect, migrations
from proxy.record.writer import row_of, write_batch
from tests.ledger.helpers import epoch, event
from tests.record.helpers import rows


def test_migrate_applies_each_file_once(pg_url, capsys):
    assert [name for _, name, _ in migrations()][0] == "001_usage.sql"
    assert main(["db", "migrate", "--postgres-url", pg_url]) == 0
    assert capsys.readouterr().out == "applied 001_usage.sql\n"
    assert main(["db", "migrate", "--postgres-url", pg_url]) == 0
    assert capsys.readouterr().out == "the schema is up to date\n"
    assert [r["version"] for r in rows(pg_url, "SELECT version FROM schema_migrations")] == [1]
    assert rows(pg_url, "SELECT relkind::text AS k FROM pg_class WHERE relname = 'usage_events'") == [{"k": "p"}]


def test_each_month_gets_its_partition(pg_url):
    async def write() -> None:
        pool = await connect(pg_url)
        try:
            from proxy.record.db import migrate  # noqa: PLC0415

            await migrate(pool)
            batch = []
            for i, at in enumerate(("2026-10-31T23:59:59", "2026-11-01T00:00:00", "2027-01-15T08:00:00")):
                fields = event(f"r{i}", Attribution("acme"), ts=epoch(at)).to_fields()
                batch.append(row_of(StreamEntry((i + 1, 0), "acme", dict(zip(fields[::2], fields[1::2])))))
            async with pool.acquire() as conn:
                assert await write_batch(conn, batch, set()) == 3
        finally:
            await pool.close()

    asyncio.run(write())
    parts = rows(pg_url, "SELECT inhrelid::regclass::text AS name FROM pg_inherits "
                         "WHERE inhparent = 'usage_events'::regclass ORDER BY 1")
    assert [p["name"] for p in parts] == ["usage_events_202610", "usage_events_202611", "usage_events_202701"]
    assert [r["n"] for r in rows(pg_url, "SELECT count(*) AS n FROM usage_events_202611")] == [1]


def test_an_unreachable_postgres_is_reported(capsys):
    assert main(["db", "migrate", "--postgres-url", "postgresql://postgres@127.0.0.1:1/none"]) == 1
    assert capsys.readouterr().err.startswith("farebox: cannot reach PostgreSQL at postgresql://postgres@127.0.0.1:1/none: ")
