"""Shared fixtures: one real Redis for the whole run, and a fresh key prefix per test.

``REDIS_URL`` set → that server (CI's second pass points it at a dedicated database);
otherwise an embedded redis-server in a temporary directory. Every test gets its own key
prefix, so runs and tests never see each other's data.
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


@pytest.fixture
async def redis_client(redis_url: str):
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def make_stack(redis_url: str, key_prefix: str, tmp_path):
    """Factory: ``make_stack(**settings)`` starts a fake upstream and farebox in front of it."""
    from tests.harness import LoopThread, start_stack

    threads = LoopThread()

    def make(upstream_options: dict | None = None, **settings):
        base = {"redis_url": redis_url, "redis_prefix": key_prefix, "data_dir": str(tmp_path / "data"),
                "default_max_output_tokens": 4096}
        return start_stack(threads, {**base, **settings}, upstream_options)

    try:
        yield make
    finally:
        threads.close()
