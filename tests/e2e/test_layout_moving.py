"""A start that found Redis away moves an earlier version's session hashes once Redis answers;
until then no budget is read (they would read too little): requests answer 503 as if Redis were
away, nothing forwarded or recorded, and /readyz says why."""

from __future__ import annotations

import time

import httpx

from proxy.http.app import _migrate
from proxy.ledger.ledger import LAYOUT_MOVING
from proxy.ledger.session_fields import tag

HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "planner", "X-Session-Id": "run-1"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def test_no_request_is_served_until_the_earlier_layout_is_moved(make_stack, key_prefix):
    stack = make_stack(fail_mode="closed", admin_token="admin-secret")
    ledger = stack.services.ledger
    admin = {"Authorization": "Bearer admin-secret"}
    assert httpx.put(f"{stack.url}/admin/budgets/session/acme/run-1", headers=admin,
                     json={"limit_usd": "0.00001", "period": "day"}).status_code == 200
    # An earlier version's day aggregate of the session, spent past the limit, and a start that
    # could not move it (Redis was away then).
    stack.run(ledger.redis.delete(ledger.keys.layout()))
    day = time.strftime("d%Y%m%d", time.gmtime())
    old = f"{key_prefix}:{{acme}}:u:session:{day}:run-1"
    stack.run(ledger.redis.hset(old, mapping={"requests": "3", "cost": "20000"}))
    ledger.layout_ready = False

    answer = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY, timeout=30)
    assert answer.status_code == 503
    assert answer.json() == {"error": {"message": LAYOUT_MOVING, "type": "service_unavailable",
                                       "code": "ledger_unavailable", "param": None}}
    ready = httpx.get(f"{stack.url}/readyz")
    assert ready.status_code == 503 and ready.json()["error"] == LAYOUT_MOVING
    assert not [r for r in stack.received if r["path"] == "/v1/chat/completions"]
    assert stack.events("acme") == []

    stack.run(_migrate(ledger))  # Redis answers: the move runs
    assert ledger.layout_ready and httpx.get(f"{stack.url}/readyz").status_code == 200
    assert stack.run(ledger.redis.exists(old)) == 0
    assert stack.run(ledger.redis.hget(ledger.keys.session("acme", "run-1"), f"{tag(day)}$")) == b"20000"
    # The moved spend counts: the session's day budget is spent.
    answer = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY, timeout=30)
    assert answer.status_code == 402 and answer.json()["error"]["scope"] == "session"
