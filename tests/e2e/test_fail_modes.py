"""Redis stops and starts again under a running proxy: fail closed refuses, fail open spools and replays."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import httpx
import pytest

from proxy.ledger.embedded import EmbeddedRedis
from proxy.ledger.reports import read_usage

HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "planner"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


@pytest.fixture
def own_redis(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def _report(stack):
    return stack.run(read_usage(stack.services.ledger, "project", "acme", "day", datetime.now(timezone.utc)))


def test_fail_closed_answers_503_and_forwards_nothing(make_stack, own_redis):
    stack = make_stack(redis_url=own_redis.url, fail_mode="closed")
    assert httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY).status_code == 200
    own_redis.stop()
    response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY, timeout=30)
    assert response.status_code == 503
    err = response.json()["error"]
    assert err["type"] == "service_unavailable" and err["code"] == "ledger_unavailable"
    assert len([r for r in stack.received if r["path"] == "/v1/chat/completions"]) == 1
    assert httpx.get(f"{stack.url}/readyz").status_code == 503
    assert httpx.get(f"{stack.url}/healthz").status_code == 200
    own_redis.start()
    assert httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY).status_code == 200
    # The first request's record may have been on its way when Redis stopped: then it was
    # spooled, and is replayed now that Redis is back.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _report(stack)["requests"] < 2:
        time.sleep(0.2)
    assert _report(stack)["requests"] == 2


def test_fail_open_forwards_spools_and_replays_when_redis_is_back(make_stack, own_redis, tmp_path):
    stack = make_stack(redis_url=own_redis.url, fail_mode="open")
    own_redis.stop()
    responses = [httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY, timeout=30)
                 for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    stack.run(stack.services.settled())
    spool = stack.services.spool
    spooled = stack.run(spool.events())
    assert sorted(e.request_id for e in spooled) == sorted(r.headers["X-Request-Id"] for r in responses)
    assert all(e.completion_tokens == r.json()["usage"]["completion_tokens"] for e, r in
               zip(sorted(spooled, key=lambda e: e.request_id), sorted(responses, key=lambda r: r.headers["X-Request-Id"])))
    own_redis.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.run(spool.pending()):
        time.sleep(0.2)
    assert not stack.run(spool.pending())
    report = _report(stack)
    assert report["requests"] == 3
    assert report["completion_tokens"] == sum(r.json()["usage"]["completion_tokens"] for r in responses)
    # Replaying again records nothing twice.
    for event in spooled:
        assert stack.run(stack.services.ledger.settle(event)).recorded is False
    assert _report(stack)["requests"] == 3
