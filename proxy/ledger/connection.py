"""Which Redis farebox talks to: the configured URL, or the embedded one in the data directory."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from proxy.ledger.embedded import EmbeddedRedis, EmbeddedRedisError
from proxy.ledger.pipe import RedisPipe

__all__ = ["RedisHandle", "describe_url"]

log = logging.getLogger("farebox")

RETRIES = 1
CONNECT_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 10.0


def describe_url(url: str) -> str:
    """The URL without its password, fit for logs."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@dataclass
class RedisHandle:
    client: aioredis.Redis
    description: str
    embedded: EmbeddedRedis | None = None
    pipe: RedisPipe | None = None  # the request path's scripts; see proxy/ledger/pipe.py

    @classmethod
    async def open(cls, redis_url: str | None, data_dir: str | Path) -> "RedisHandle":
        """The Redis at ``redis_url``, or (None or empty) the embedded one in ``data_dir``."""
        embedded = None
        if redis_url:
            url = redis_url
            description = describe_url(url)
        else:
            try:
                embedded = await asyncio.to_thread(EmbeddedRedis(Path(data_dir)).start)
            except EmbeddedRedisError as exc:
                raise RuntimeError(f"cannot start the embedded Redis in {data_dir}: {exc}") from exc
            url = embedded.url
            description = f"embedded ({embedded.data_dir})"
        # A blocking pool waits for a free connection instead of failing under a burst.
        # One quick retry, so a dead Redis is reported (503 or spool) in well under a second.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=256, timeout=10, socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=REPLY_TIMEOUT_S, retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), RETRIES))
        client = aioredis.Redis(connection_pool=pool)
        pipe = RedisPipe.from_url(url, connect_timeout_s=CONNECT_TIMEOUT_S, timeout_s=REPLY_TIMEOUT_S)
        log.info("using redis: %s", description)
        return cls(client=client, description=description, embedded=embedded, pipe=pipe)

    async def close(self) -> None:
        if self.pipe is not None:
            await self.pipe.close()
        await self.client.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
