"""What the ledger's modules share about Redis replies and failures.

Redis errors become ``LedgerUnavailable`` here and nowhere else.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from redis.exceptions import RedisError

from proxy.errors import LedgerUnavailable

__all__ = ["redis_errors", "text"]


def text(value: bytes | str) -> str:
    """A reply's bytes as text (a str stays as it is)."""
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def redis_errors() -> Iterator[None]:
    """Redis failures (no connection, timeouts, error replies) as ``LedgerUnavailable``."""
    try:
        yield
    except RedisError as exc:
        raise LedgerUnavailable(f"Redis is unavailable: {exc}") from exc
    except OSError as exc:
        raise LedgerUnavailable(f"Redis is unavailable: {exc}") from exc
