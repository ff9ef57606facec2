"""The memory settings reach the ledger farebox serves with: a session's aggregates and the
idempotency markers live as long as the settings say, not the ledger's defaults."""

from __future__ import annotations

import httpx
import redis as sync_redis

from tests.e2e.test_chat import MESSAGES, settled_usage


def test_session_ttl_and_idempotency_window_come_from_the_settings(make_stack, key_prefix):
    stack = make_stack(ttl_session_s=3600, idempotency_window_s=120)
    answer = httpx.post(f"{stack.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES},
                        headers={"X-Project-Id": "acme", "X-Session-Id": "run-9"})
    assert answer.status_code == 200
    settled_usage(stack)
    redis = stack.services.ledger.redis
    keys = [k.decode() for k in stack.run(redis.keys(f"{key_prefix}:{{acme}}:*"))]
    sessions = [k for k in keys if ":s:" in k]
    markers = [k for k in keys if ":done:" in k]
    assert sessions and markers
    for key in sessions:  # the session's one hash, its total and month included: the session TTL
        assert 0 < stack.run(redis.ttl(key)) <= 3600, key
    for key in markers:
        assert 0 < stack.run(redis.ttl(key)) <= 120, key


def test_serve_moves_sessions_of_the_earlier_layout_before_it_answers(make_stack, redis_url, key_prefix):
    client = sync_redis.Redis.from_url(redis_url)
    old = f"{key_prefix}:{{acme}}:u:session:total:run-9"
    client.hset(old, mapping={"requests": 1, "cost": 2_000_000, "m|gpt-4o-mini|requests": 1,
                              "m|gpt-4o-mini|cost": 2_000_000})
    client.delete(f"{key_prefix}:layout")
    stack = make_stack(admin_token="admin-secret")
    assert client.exists(old) == 0
    assert client.hget(f"{key_prefix}:{{acme}}:s:run-9", "t$") == b"2000000"
    client.close()
    budget = httpx.put(f"{stack.url}/admin/budgets/session/acme/run-9", json={"limit_usd": "0.003", "period": "total"},
                       headers={"Authorization": "Bearer admin-secret"})
    assert budget.status_code == 200, budget.text
    assert budget.json()["spent_usd"] == "0.002"
