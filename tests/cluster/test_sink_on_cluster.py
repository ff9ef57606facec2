"""The PostgreSQL sink on a real Redis Cluster: every project's stream is drained from the
master owning its slot, each event stored once, and the streams trimmed by the acknowledged
position on each master."""

from __future__ import annotations

import time

import pytest

from pricing.money import usd_to_nano
from proxy.domain import Attribution
from proxy.ledger.drain import Drain
from proxy.ledger.ledger import Ledger
from proxy.ledger.reports import read_usage
from proxy.record.sink import Sink, SinkOptions
from tests.cluster.conftest import projects_by_master
from tests.ledger.helpers import event
from tests.record.conftest import pg_url, postgres_admin_url  # noqa: F401 - fixtures
from tests.record.helpers import fetch

pytestmark = pytest.mark.once

PER_PROJECT = 30


async def test_events_of_projects_on_every_master_are_stored_once_and_trimmed(cluster, handle, prefix, pg_url):
    ledger = Ledger(handle.client, prefix=prefix, pipe=handle.pipe, stream_maxlen=0)
    projects = [p for found in projects_by_master(cluster, 2, stem="sink").values() for p in found]
    now = time.time()
    for project in projects:
        for i in range(PER_PROJECT):
            await ledger.settle(event(f"{project}-r{i}", Attribution(project, f"a{i % 3}"), ts=now,
                                      cost_nano=1_000 + i))
    sink = Sink(ledger, pg_url, SinkOptions(batch=7, stream_maxlen=10))
    try:
        assert await sink.drain_all() == PER_PROJECT * len(projects)
        # A second sink finds nothing left to write: every entry was acknowledged.
        other = Sink(ledger, pg_url, SinkOptions(batch=7, stream_maxlen=10))
        try:
            assert await other.drain_all() == 0
        finally:
            await other.close()
        states = await sink.tidy()
    finally:
        await sink.close()
    assert sum(s.behind for s in states) == 0
    per_project = {r["project"]: (r["n"], r["cost"], r["ids"]) for r in await fetch(
        pg_url, "SELECT project, count(*) AS n, sum(cost_nano) AS cost, count(DISTINCT request_id) AS ids "
                "FROM usage_events GROUP BY project")}
    expected_cost = sum(1_000 + i for i in range(PER_PROJECT))
    assert per_project == {p: (PER_PROJECT, expected_cost, PER_PROJECT) for p in projects}
    for project in projects:
        assert int(await ledger.redis.xlen(ledger.keys.events(project))) == 10  # trimmed on its master
        report = await read_usage(ledger, "project", project, "month")
        assert (report["requests"], usd_to_nano(report["cost_usd"])) == (PER_PROJECT, expected_cost)
    assert set(projects) <= set(await Drain(ledger).projects())
