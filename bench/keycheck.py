"""What checking a farebox key adds to a request, in CPU time, with no HTTP or Redis around it.

Three timings, each the median of several runs of many calls:

- ``headers``: step 2 as it is without a key, ``proxy.attribute.attribute`` (the baseline);
- ``key``: step 2 with a farebox key the process already knows, ``KeyAuth.attribute`` awaited
  (finding the credential, the remembered key, its expiry, its models, its upstream's key, the
  headers against it): the steady state, with no Redis read;
- ``request_headers``: ``Upstream.request_headers`` (the forwarded headers, with the check that
  no farebox key is among them), for a request without a key and one with a key (stripped).

Run: ``python -m bench.keycheck`` (prints JSON).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.attribute import attribute
from proxy.control.keys import secret_hash
from proxy.keyauth import KeyAuth, KeyResolver
from proxy.settings import Settings
from proxy.upstream.kinds import OpenAIKind
from proxy.upstream.relay import Upstream

__all__ = ["run_keycheck"]

SECRET = "fbk_0123456789abcdef" + "A" * 43
_HEADERS = {"Host": "127.0.0.1:8080", "Content-Type": "application/json", "Accept": "application/json",
            "User-Agent": "OpenAI/Python 1.54.0", "X-Stainless-Lang": "python", "Content-Length": "120",
            "X-Agent-Id": "planner"}


class _Records:
    """The one record the benchmark's key has (read once; then remembered)."""

    def __init__(self) -> None:
        self.reads = 0

    async def key_record(self, key_id: str) -> dict[str, str]:
        self.reads += 1
        return {"hash": secret_hash(SECRET), "project": "acme", "agent": "", "name": "", "models": '["gpt-4o*"]',
                "rpm": "", "tpm": "", "expires_at": str(int(time.time()) + 86400), "created_at": "1",
                "revoked_at": "", "rotated_at": ""}

    async def keys_version(self) -> int:
        return 0


def _per_call_us(fn: Any, calls: int, runs: int) -> float:
    out = []
    for _ in range(runs):
        started = time.process_time()
        fn(calls)
        out.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(out)


def run_keycheck(calls: int = 200_000, runs: int = 5) -> dict[str, Any]:
    settings = Settings()
    upstream = Upstream("http://127.0.0.1:9/v1", kind=OpenAIKind("http://127.0.0.1:9/v1", "sk-own"))
    auth = KeyAuth(settings, KeyResolver(_Records()), lambda family, model: upstream)
    # As both servers hand headers over: case-insensitive multidicts.
    plain = CIMultiDictProxy(CIMultiDict({**_HEADERS, "Authorization": "Bearer sk-client", "X-Project-Id": "acme"}))
    keyed = CIMultiDictProxy(CIMultiDict({**_HEADERS, "Authorization": f"Bearer {SECRET}"}))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(auth.resolver.check())
    loop.run_until_complete(auth.attribute(keyed, "openai", "gpt-4o-mini"))   # the first read, then remembered

    def headers(n: int) -> None:
        for _ in range(n):
            attribute(plain, settings)

    def key(n: int) -> None:
        async def many() -> None:
            # The resolver's watch runs beside the requests, as on a server (it keeps the
            # remembered key trusted); every 100 requests the loop lets it run when it is due.
            watching = asyncio.ensure_future(auth.resolver.watch_forever())
            for i in range(n):
                await auth.attribute(keyed, "openai", "gpt-4o-mini")
                if i % 100 == 0:
                    await asyncio.sleep(0)
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        loop.run_until_complete(many())

    def forwarded_plain(n: int) -> None:
        for _ in range(n):
            upstream.request_headers(plain)

    def forwarded_keyed(n: int) -> None:
        for _ in range(n):
            upstream.request_headers(keyed)

    reads = auth.resolver.ledger
    result: dict[str, Any] = {"headers_us": _per_call_us(headers, calls, runs), "key_us": _per_call_us(key, calls, runs),
              "request_headers_plain_us": _per_call_us(forwarded_plain, calls, runs),
              "request_headers_keyed_us": _per_call_us(forwarded_keyed, calls, runs),
              "python": sys.version.split()[0]}
    result["key_record_reads"] = reads.reads   # 1: the key was read once, then remembered
    loop.close()
    result["key_over_headers_us"] = result["key_us"] - result["headers_us"]
    return result


if __name__ == "__main__":
    print(orjson.dumps(run_keycheck(), option=orjson.OPT_INDENT_2).decode())
