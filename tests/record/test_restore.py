"""Redis loses everything (FLUSHALL on a Redis of the test's own); ``farebox restore
--from-postgres`` brings back every report and budget's spend as they were."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from proxy.cli.main import main
from proxy.domain import Attribution
from proxy.ledger.embedded import EmbeddedRedis
from proxy.ledger.reports import read_usage
from tests.ledger.helpers import epoch, event
from tests.record.helpers import chat, wait_caught_up, wait_for_rows

PERIODS = ("hour", "day", "week", "month", "total")


@pytest.fixture
def own_redis(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        yield server.url
    finally:
        server.stop()


def _reports(stack, at: datetime | None = None) -> dict:
    ledger = stack.services.ledger
    out = {}
    for scope, scope_id in (("project", "acme"), ("agent", "acme/planner"), ("agent", "acme/coder"),
                            ("session", "acme/run-1"), ("key", "acme/key1"),
                            ("model", "acme/gpt-4o"), ("model", "acme/gpt-4o-mini"), ("project", "beta")):
        for period in PERIODS:
            if period == "hour" and at is not None:
                continue  # an old hour's aggregate lives 48 hours after it was written, not after the hour
            out[(scope, scope_id, period)] = stack.run(read_usage(ledger, scope, scope_id, period, at, top=100))
    return out


def _budgets(stack) -> dict:
    ledger = stack.services.ledger
    return {(s, i): stack.run(ledger.get_budget(s, i))["spent_usd"] for s, i in BUDGETS}


BUDGETS = (("project", "acme"), ("agent", "acme/planner"), ("session", "acme/run-1"), ("key", "acme/key1"))


def _set_budgets(stack) -> None:
    for scope, scope_id in BUDGETS:
        for period in ("month",):
            stack.run(stack.services.ledger.set_budget(scope, scope_id, 1_000_000_000_000, period))


def test_flushall_then_restore_brings_back_reports_and_budget_spend(pg_url, own_redis, make_stack, capsys):
    stack = make_stack(postgres_url=pg_url, redis_url=own_redis)
    ledger = stack.services.ledger
    _set_budgets(stack)
    for i in range(10):
        chat(stack.base_url, "acme", ("planner", "coder")[i % 2], ("gpt-4o", "gpt-4o-mini")[i % 2],
             session=f"run-{i % 3}")
    chat(stack.base_url, "beta", "default", "gpt-4o")
    # Earlier months and a key, straight into the ledger. (No session: a session's aggregates
    # live ttl_session_s after its last request, and these are written now, not at their time.)
    for i in range(6):
        who = Attribution("acme", ("planner", "coder")[i % 2], None, "key1")
        stack.run(ledger.settle(event(f"old-{i}", who, ts=epoch(f"2026-{9 + i % 3:02d}-0{1 + i}T12:00:00"),
                                      cost_nano=987_654_321 + i, cached=3, estimated=i == 2)))
    stack.run(ledger.settle(event("now-key", Attribution("acme", "planner", "run-1", "key1"), ts=stack.services.ledger.clock(),
                                  cost_nano=5_000_000, model="gpt-4o")))
    wait_for_rows(pg_url, 18)
    wait_caught_up(stack)
    before_now, before_old = _reports(stack), _reports(stack, datetime(2026, 10, 2, 12, tzinfo=timezone.utc))
    spent = _budgets(stack)
    assert spent[("project", "acme")] != "0.00" and spent[("key", "acme/key1")] != "0.00"

    stack.run(ledger.redis.flushall())
    assert stack.run(read_usage(ledger, "project", "acme", "month"))["requests"] == 0

    capsys.readouterr()
    assert main(["restore", "--from-postgres", "--postgres-url", pg_url, "--redis-url", own_redis,
                 "--redis-prefix", ledger.keys.prefix]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["restored acme", "restored beta"]

    assert _reports(stack) == before_now
    assert _reports(stack, datetime(2026, 10, 2, 12, tzinfo=timezone.utc)) == before_old
    _set_budgets(stack)  # budget settings are not part of the usage of record
    assert _budgets(stack) == spent
    # Budgets keep counting: a request after the restore adds to the restored spend.
    chat(stack.base_url, "acme", "planner", "gpt-4o", session="run-1")
    after = stack.run(read_usage(ledger, "project", "acme", "month"))
    assert after["requests"] == before_now[("project", "acme", "month")]["requests"] + 1


def test_restore_of_one_project_leaves_the_others(pg_url, own_redis, make_stack, capsys):
    stack = make_stack(postgres_url=pg_url, redis_url=own_redis)
    ledger = stack.services.ledger
    chat(stack.base_url, "acme", "planner", "gpt-4o")
    chat(stack.base_url, "beta", "planner", "gpt-4o")
    wait_for_rows(pg_url, 2)
    wait_caught_up(stack)
    stack.run(ledger.redis.flushall())
    assert main(["restore", "--from-postgres", "--project", "beta", "--postgres-url", pg_url, "--redis-url",
                 own_redis, "--redis-prefix", ledger.keys.prefix]) == 0
    assert stack.run(read_usage(ledger, "project", "beta", "day"))["requests"] == 1
    assert stack.run(read_usage(ledger, "project", "acme", "day"))["requests"] == 0

