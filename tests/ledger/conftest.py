"""Ledger tests leave nothing behind: the keys under a test's prefix are deleted after it."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis


@pytest.fixture(autouse=True)
async def _delete_test_keys(redis_url: str, key_prefix: str):
    yield
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{key_prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i:i + 500])
    finally:
        await client.aclose()
