"""Shared fixtures: one real Redis for the whole run, and a fresh key prefix per test.

``REDIS_URL`` set → that server (CI's second pass points it at a dedicated database);
otherwise an embedded redis-server in a temporary directory. Every test gets its own key
prefix, so runs and tests never see each other's data, and the keys under it are deleted
when the test ends (a shared server keeps nothing of a run).
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis.asyncio as aioredis

from proxy.ledger.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def key_prefix() -> str:
    return f"fbt{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _delete_test_keys(request: pytest.FixtureRequest):
    """After a test that used a key prefix, delete every key under it."""
    if "key_prefix" not in request.fixturenames:
        yield
        return
    prefix, url = request.getfixturevalue("key_prefix"), request.getfixturevalue("redis_url")
    yield
    import redis  # noqa: PLC0415 - synchronous: this runs after the test's event loop is gone

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
    finally:
        client.close()


@pytest.fixture
async def redis_client(redis_url: str):
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def make_stack(redis_url: str, key_prefix: str, tmp_path):
    """Factory: ``make_stack(**settings)`` starts a fake upstream and farebox in front of it
    (``clock``: the wall clock its ledger reads, for tests that need to choose the time)."""
    from tests.harness import LoopThread, start_stack

    threads = LoopThread()

    def make(upstream_options: dict | None = None, clock=None, **settings):
        # (a sink never waits for a busy machine here: tests wait for its rows; tests/record/test_sink_busy.py
        # covers the waiting)
        base = {"redis_url": redis_url, "redis_prefix": key_prefix, "data_dir": str(tmp_path / "data"),
                "default_max_output_tokens": 4096, "sink_defer_busy_s": 0}
        return start_stack(threads, {**base, **settings}, upstream_options, clock=clock)

    try:
        yield make
    finally:
        threads.close()
