"""The usage of record end to end: requests through farebox, drained by the sink of
``farebox serve`` into a throwaway PostgreSQL database; the statement equals Redis's reports,
reconcile finds nothing, and a difference made on purpose is found."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest

from pricing.money import usd_to_nano
from proxy.cli.main import main
from proxy.domain import Attribution
from proxy.http.app import SINK
from proxy.ledger.events import read_events
from proxy.ledger.reports import read_usage
from proxy.record.sink import Sink, SinkOptions
from tests.ledger.helpers import epoch, event
from tests.record.helpers import chat, readyz_sink, rows, wait_caught_up, wait_for_rows

AGENTS = ("planner", "coder", "critic")
MODELS = ("gpt-4o-mini", "gpt-4o")


def _send(stack, n: int) -> list[httpx.Response]:
    return [chat(stack.base_url, "acme", AGENTS[i % 3], MODELS[i % 2], session=f"run-{i % 4}") for i in range(n)]


def test_n_requests_become_n_rows_with_their_costs(pg_url, make_stack):
    stack = make_stack(postgres_url=pg_url)
    answers = _send(stack, 40)
    wait_for_rows(pg_url, 40)
    wait_caught_up(stack)
    got = {r["request_id"]: r for r in rows(pg_url)}
    assert len(got) == 40
    for answer in answers:
        row = got[answer.headers["X-Request-Id"]]
        assert row["cost_nano"] == usd_to_nano(answer.headers["X-Farebox-Cost-USD"])
        assert row["project"] == "acme" and row["status"] == 200
    # Every stream entry is a row with the same numbers.
    entries = stack.run(read_events(stack.services.ledger, ["acme"], (0, 0), 1000))
    assert len(entries) == 40
    for entry in entries:
        row = got[entry.fields["request_id"]]
        assert row["stream_id"] == entry.id_text
        for name in ("prompt_tokens", "completion_tokens", "cost_nano", "latency_ms"):
            assert row[name] == int(entry.fields[name]), name
        assert row["agent"] == entry.fields["agent"] and row["session"] == entry.fields["session"]
    status = readyz_sink(stack, lambda sink: sink["written"] == 40 and sink["lag_events"] == 0)  # its next report
    assert status["error"] is None
    metrics = httpx.get(f"{stack.url}/metrics").text
    assert "farebox_sink_lag_events 0.0" in metrics and "farebox_sink_events_total 40.0" in metrics


def _statement(pg_url: str, month: str, capsys, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["statement", "acme", "--month", month, "--json", "--postgres-url", pg_url, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_statement_equals_the_redis_reports_and_reconcile_is_clean(pg_url, make_stack, redis_url, key_prefix, capsys):
    stack = make_stack(postgres_url=pg_url)
    ledger = stack.services.ledger
    _send(stack, 12)
    # Earlier days of another month, with keys, cached and estimated usage, straight into the ledger.
    for i in range(9):
        who = Attribution("acme", AGENTS[i % 3], f"old-{i % 2}", "key1" if i % 2 else None)
        stack.run(ledger.settle(event(f"old-{i}", who, ts=epoch(f"2026-10-{10 + i}T23:59:59.500"),
                                      cost_nano=123_456_789 + i, cached=7, estimated=i % 4 == 0,
                                      model=MODELS[i % 2])))
    wait_for_rows(pg_url, 21)
    wait_caught_up(stack)
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    for m, at in ((month, None), ("2026-10", datetime(2026, 10, 15, tzinfo=timezone.utc))):
        statement = _statement(pg_url, m, capsys)
        report = stack.run(read_usage(ledger, "project", "acme", "month", at))
        for name in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd"):
            assert statement["total"][name] == report[name], name
        assert statement["by_agent"] == report["by_agent"]
        assert statement["by_model"] == report["by_model"]
        for day, values in statement["by_day"].items():
            daily = stack.run(read_usage(ledger, "project", "acme", "day", datetime.fromisoformat(day)))
            assert (values["requests"], values["cost_usd"]) == (daily["requests"], daily["cost_usd"])
        assert sum(v["requests"] for v in statement["by_day"].values()) == report["requests"]
        capsys.readouterr()
        assert main(["reconcile", "acme", "--month", m, "--postgres-url", pg_url, "--redis-url", redis_url,
                     "--redis-prefix", key_prefix]) == 0
        assert capsys.readouterr().out == f"no difference between PostgreSQL and Redis for acme {m}\n"
    # CSV: one line per part, the same amounts.
    capsys.readouterr()
    assert main(["statement", "acme", "--month", "2026-10", "--csv", "--postgres-url", pg_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "project,month,part,name,requests,prompt_tokens,completion_tokens,cost_usd"
    assert lines[1] == "acme,2026-10,total,,9,900,180,1.111111137"
    # A difference made on purpose is listed, with exit status 1.
    stack.run(ledger.redis.hincrby(ledger.keys.usage("acme", "project", "m202610", "acme"), "a|coder|cost", 5))
    assert main(["reconcile", "acme", "--month", "2026-10", "--json", "--postgres-url", pg_url, "--redis-url",
                 redis_url, "--redis-prefix", key_prefix]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["differences"] == [{"part": "agent", "name": "coder", "field": "cost_nano",
                                   "postgres": 370_370_379, "redis": 370_370_384}]


def test_a_redelivered_event_changes_nothing(pg_url, make_stack):
    stack = make_stack(postgres_url=pg_url)
    _send(stack, 3)
    wait_for_rows(pg_url, 3)
    wait_caught_up(stack)
    entries = stack.run(read_events(stack.services.ledger, ["acme"], (0, 0), 100))
    before = rows(pg_url, "SELECT * FROM usage_monthly")
    sink = Sink(stack.services.ledger, pg_url)
    try:  # the same batch again, as a sink that died before its XACK would
        stack.run(sink.connect())
        stack.run(sink.write(entries))
    finally:
        stack.run(sink.close())
    assert rows(pg_url, "SELECT * FROM usage_monthly") == before
    assert len(rows(pg_url)) == 3


@pytest.mark.parametrize("month", ["2026-13", "26-11", "", "2026-1"])
def test_a_bad_month_is_refused(pg_url, month, capsys):
    assert main(["statement", "acme", "--month", month, "--postgres-url", pg_url]) == 2
    assert capsys.readouterr().err == f"farebox: invalid month {month!r}: write YYYY-MM, e.g. 2026-11\n"


def test_without_postgres_the_commands_refuse(capsys, monkeypatch):
    monkeypatch.delenv("FAREBOX_POSTGRES_URL", raising=False)
    assert main(["statement", "acme", "--month", "2026-11"]) == 2
    assert capsys.readouterr().err == ("farebox: no PostgreSQL configured: set --postgres-url, "
                                       "FAREBOX_POSTGRES_URL or postgres_url\n")
    assert main(["statement", "acme", "--month", "2026-11", "--postgres-url", "mysql://x"]) == 2
    assert capsys.readouterr().err == ("farebox: invalid setting postgres_url: must start with postgresql:// "
                                       "or postgres://\n")


def test_events_stay_in_redis_until_postgres_has_them(pg_url, make_stack):
    stack = make_stack(postgres_url=pg_url, stream_maxlen=5, sink_in_serve=False)
    ledger = stack.services.ledger
    assert stack.app[SINK] is None
    _send(stack, 12)
    stack.run(ledger.settled())
    assert int(stack.run(ledger.redis.xlen(ledger.keys.events("acme")))) == 12  # no sink ran: none trimmed
    sink = Sink(ledger, pg_url, SinkOptions(stream_maxlen=5))
    try:
        assert stack.run(sink.drain_all()) == 12
        stack.run(sink.tidy())
    finally:
        stack.run(sink.close())
    assert len(rows(pg_url)) == 12
    assert int(stack.run(ledger.redis.xlen(ledger.keys.events("acme")))) == 5  # then trimmed to the length kept
    assert sink.lag.events == 0


def test_without_postgres_url_nothing_changes(make_stack):
    stack = make_stack(stream_maxlen=5)
    assert stack.app[SINK] is None
    _send(stack, 8)
    assert "sink" not in httpx.get(f"{stack.url}/readyz").json()
    assert "farebox_sink" not in httpx.get(f"{stack.url}/metrics").text
