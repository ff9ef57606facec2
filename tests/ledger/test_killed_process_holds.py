"""A farebox process killed with SIGKILL mid-request: its holds lapse ``hold_ttl_s`` later.

A real ``farebox serve`` (``hold_ttl_s`` = 1 s) in front of a fake upstream whose streams
last long, on the tests' Redis: two streams of one project in flight (one held on its own,
one drawn from a budget lease) keep their holds past their first deadlines while the process
renews them, then the process is killed and the budget's room comes back.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys

import pytest

from proxy.fake_upstream import create_fake_app
from proxy.ledger.ledger import Ledger
from tests.harness import LoopThread
from tests.processes import clean_env, free_port, wait_ready

HOLD_TTL_S = 1
BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}],
                   "max_tokens": 32, "stream": True})




def _start_stream(port: int) -> http.client.HTTPConnection:
    """A stream whose chunks come a second apart: once its first chunk is read it is held."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/chat/completions", BODY,
                 {"Content-Type": "application/json", "X-Project-Id": "killed", "Authorization": "Bearer sk-k",
                  "X-Fake-Chunk-Delay-Ms": "1000"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")
    return conn


@pytest.fixture
def upstream_url():
    threads = LoopThread()
    try:
        yield threads.serve(create_fake_app(chunks=30))
    finally:
        threads.close()


@pytest.fixture
def farebox(tmp_path, upstream_url, redis_url, key_prefix):
    port = free_port()
    env = clean_env()
    env.update(FAREBOX_HOLD_TTL_S=str(HOLD_TTL_S), FAREBOX_REDIS_PREFIX=key_prefix)
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--upstream", f"{upstream_url}/v1",
         "--redis-url", redis_url, "--data-dir", str(tmp_path / "data"), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def test_the_holds_of_a_killed_process_lapse_after_hold_ttl(farebox, redis_client, key_prefix):
    proc, port = farebox
    ledger = Ledger(redis_client, prefix=key_prefix)
    await ledger.set_budget("project", "killed", 1_000_000_000, "day")  # $1: room for a lease

    async def held() -> int:
        return (await ledger.budget_state("project", "killed")).reserved_nano

    first = await asyncio.to_thread(_start_stream, port)  # held on its own
    second = await asyncio.to_thread(_start_stream, port)  # drawn from a lease (the first is in flight)
    try:
        await asyncio.sleep(0.5)  # the lease has stopped lending and given back what it did not lend
        in_flight = await held()
        assert in_flight > 0
        await asyncio.sleep(3 * HOLD_TTL_S)  # past their first deadlines: renewed by the live process
        assert await held() == in_flight

        proc.kill()
        proc.wait(10)
        lapsed = in_flight
        for _ in range(100):  # they lapse hold_ttl_s (+ a lease's life) after the last renewal
            lapsed = await held()
            if lapsed == 0:
                break
            await asyncio.sleep(0.1)
        assert lapsed == 0
    finally:
        first.close()
        second.close()
