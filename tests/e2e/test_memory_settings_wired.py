"""The memory settings reach the ledger farebox serves with: a session's aggregates and the
idempotency markers live as long as the settings say, not the ledger's defaults."""

from __future__ import annotations

import httpx

from tests.e2e.test_chat import MESSAGES, settled_usage


def test_session_ttl_and_idempotency_window_come_from_the_settings(make_stack, key_prefix):
    stack = make_stack(ttl_session_s=3600, idempotency_window_s=120)
    answer = httpx.post(f"{stack.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES},
                        headers={"X-Project-Id": "acme", "X-Session-Id": "run-9"})
    assert answer.status_code == 200
    settled_usage(stack)
    redis = stack.services.ledger.redis
    keys = [k.decode() for k in stack.run(redis.keys(f"{key_prefix}:{{acme}}:*"))]
    sessions = [k for k in keys if ":u:session:" in k]
    markers = [k for k in keys if ":done:" in k]
    assert sessions and markers
    for key in sessions:  # the total and month hashes too: at most the session TTL
        assert 0 < stack.run(redis.ttl(key)) <= 3600, key
    for key in markers:
        assert 0 < stack.run(redis.ttl(key)) <= 120, key
