"""Which Redis farebox talks to: the configured URL, a Redis Cluster (``redis+cluster://``), or
the embedded one in the data directory."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from proxy.ledger.cluster import CLUSTER_SCHEME, ClusterPipe, parse_cluster_url
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
    client: aioredis.Redis | RedisCluster
    description: str
    embedded: EmbeddedRedis | None = None
    pipe: RedisPipe | ClusterPipe | None = None  # the request path's scripts; see pipe.py, cluster.py

    @classmethod
    async def open(cls, redis_url: str | None, data_dir: str | Path) -> "RedisHandle":
        """The Redis at ``redis_url``, or (None or empty) the embedded one in ``data_dir``."""
        if redis_url and redis_url.startswith(f"{CLUSTER_SCHEME}://"):
            return cls._cluster(redis_url)
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

    @classmethod
    def _cluster(cls, url: str) -> "RedisHandle":
        """A Redis Cluster: redis-py's cluster client for what is not the request path (it
        follows redirections and reads the slot table itself), and a ``ClusterPipe``."""
        seeds, username, password = parse_cluster_url(url)
        client = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in seeds], username=username,
                              password=password, socket_connect_timeout=CONNECT_TIMEOUT_S,
                              socket_timeout=REPLY_TIMEOUT_S, max_connections=256)
        pipe = ClusterPipe(seeds, username=username, password=password, connect_timeout_s=CONNECT_TIMEOUT_S,
                           timeout_s=REPLY_TIMEOUT_S)
        description = describe_url(url)
        log.info("using redis cluster: %s", description)
        return cls(client=client, description=description, pipe=pipe)

    async def close(self) -> None:
        if self.pipe is not None:
            await self.pipe.close()
        await self.client.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
