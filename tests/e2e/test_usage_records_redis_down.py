"""Usage records and holds while Redis is down: records follow fail_mode like requests (open:
recorded without a budget check, spooled and replayed once); holds always answer 503."""

from __future__ import annotations

import time

import httpx
import pytest

from proxy.ledger.embedded import EmbeddedRedis

HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "runner"}


@pytest.fixture
def own_redis(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def post(stack, path, body):
    return httpx.post(f"{stack.url}{path}", headers=HEADERS, json=body, timeout=30)


def test_fail_closed_refuses_usage_records_and_holds_with_503(make_stack, own_redis):
    stack = make_stack(redis_url=own_redis.url, fail_mode="closed")
    own_redis.stop()
    for path in ("/v1/usage-records", "/v1/usage-records/holds"):
        answer = post(stack, path, {"resource": "gpu", "quantity": "1"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (503, "ledger_unavailable")


def test_fail_open_spools_usage_records_and_replays_them_once(make_stack, own_redis):
    stack = make_stack(redis_url=own_redis.url, fail_mode="open")
    own_redis.stop()
    answer = post(stack, "/v1/usage-records", {"resource": "gpu", "quantity": "1", "execution_id": "job-7"})
    assert answer.status_code == 201, answer.text
    held = post(stack, "/v1/usage-records/holds", {"resource": "gpu", "quantity": "1"})
    assert (held.status_code, held.json()["error"]["code"]) == (503, "ledger_unavailable")
    stack.run(stack.services.settled())
    spooled = stack.run(stack.services.spool.events())
    assert [(e.request_id, e.priced_model, e.cost_nano, e.attribution.session) for e in spooled] == [
        (answer.headers["X-Request-Id"], "compute:gpu", 1_500_000_000, "job-7")]
    own_redis.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.run(stack.services.spool.pending()):
        time.sleep(0.2)
    assert [e["cost_nano"] for e in stack.events()] == ["1500000000"]
