"""Rate limits hold exactly across farebox processes: 200 requests at once, half to each of two
processes sharing one Redis, against a key's rpm and a project's tpm."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.e2e.test_keys_processes import ADMIN, CHAT, start_farebox
from tests.e2e.test_rate_limits import counters

REQUESTS = 200


def _fresh_minute(margin_s: float = 20.0) -> int:
    """Wait until at least ``margin_s`` of the current minute is left (a burst stays in one rate
    window); the minute's number."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.05)
    return int(time.time()) // 60


async def _burst(urls: list[str], headers: dict) -> list[int]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=REQUESTS)) as client:
        answers = await asyncio.gather(*(client.post(f"{urls[i % 2]}/v1/chat/completions", json=CHAT, headers=headers)
                                         for i in range(REQUESTS)))
    return [a.status_code for a in answers]


def test_rpm_and_tpm_hold_exactly_with_200_parallel_requests_over_two_processes(make_stack, redis_url, key_prefix,
                                                                                 tmp_path):
    stack = make_stack()
    procs = [start_farebox(stack.upstream_url, redis_url, key_prefix, str(tmp_path / f"d{i}")) for i in range(2)]
    urls = [url for _, url in procs]
    try:
        key = httpx.post(f"{urls[0]}/admin/keys", headers=ADMIN, json={"project": "acme", "rpm": 50}).json()
        window = _fresh_minute()
        statuses = await_burst(urls, {"Authorization": f"Bearer {key['key']}"})
        assert sorted(set(statuses)) == [200, 429]
        assert statuses.count(200) == 50
        assert counters(redis_url, key_prefix, "key", key["id"], window)[0] == 50

        # tpm on the project, requests attributed by headers: each counts its worst case (16 out
        # plus its prompt) while in flight, then what it used.
        tpm = 2_000
        assert httpx.put(f"{urls[1]}/admin/limits/project/acme", headers=ADMIN, json={"tpm": tpm}).status_code == 200
        # Both processes looked the project's limits up during the first burst (none then) and
        # remember that: the limit set through the second must reach the first within a second,
        # or the first admits its hundred requests, 2,400 tokens' worth, past the limit.
        time.sleep(1.0)
        window = _fresh_minute()
        before = len(stack.received)
        statuses = await_burst(urls, {"X-Project-Id": "acme", "Authorization": "Bearer sk-client"})
    finally:
        for proc, _ in procs:
            proc.terminate()
            proc.wait(15)
    admitted = statuses.count(200)
    assert admitted + statuses.count(429) == REQUESTS
    assert len(stack.received) - before == admitted
    # Every request settled (the processes stopped): the minute's counters hold the requests
    # admitted and exactly the tokens they used, within the limit.
    events = [e for e in stack.events("acme") if e["key_id"] != key["id"]]
    assert len(events) == admitted > 0
    used = sum(int(e["prompt_tokens"]) + int(e["completion_tokens"]) for e in events)
    assert counters(redis_url, key_prefix, "project", "acme", window) == (admitted, used)
    assert used <= tpm


def await_burst(urls: list[str], headers: dict) -> list[int]:
    return asyncio.run(_burst(urls, headers))
