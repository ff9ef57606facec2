"""What rate limiting adds to a request's reserve and settle, in farebox CPU time and Redis calls.

One process, one embedded Redis, the ledger as a server builds it (the pipe, budget leases on,
a hard project budget). Each timed loop reserves and settles requests one after another, as one
client would, and is run twice, interleaved several times: ``plain`` (no rate limit) and
``rate`` (the request counted on a project's and a key's rpm and tpm, never reached). What is
timed is this process's CPU (``time.process_time``), not Redis's; beside it, the script calls
Redis ran per request (``INFO commandstats``), to show rate limiting adds none.

Run: ``python -m bench.ratecheck`` (prints JSON).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from typing import Any

import orjson

from proxy.domain import Attribution, RateAsk, RateLimit, UsageEvent
from proxy.ledger.connection import RedisHandle
from proxy.ledger.ledger import Ledger
from proxy.ledger.settle import Ttls

__all__ = ["run_ratecheck"]

WHO = Attribution("bench", "loadgen", None, "key_0123456789abcdef")
RATE = RateAsk(limits=(RateLimit("project", "bench", 10**9, 10**9), RateLimit("key", WHO.key_id or "", 10**9, 10**9)),
               tokens=120)


def _event(request_id: str) -> UsageEvent:
    return UsageEvent(request_id=request_id, ts=time.time(), attribution=WHO, model="gpt-4o-mini",
                      priced_model="gpt-4o-mini", endpoint="chat.completions", upstream="openai", status=200,
                      stream=False, estimated=False, prompt_tokens=40, completion_tokens=40, cached_tokens=0,
                      cache_creation_tokens=0, reasoning_tokens=0, cost_nano=20_000, latency_ms=1)


async def _loop(ledger: Ledger, n: int, rate: RateAsk | None, tag: str) -> None:
    for i in range(n):
        rid = f"{tag}-{i}"
        outcome = await ledger.reserve(rid, WHO, 30_000, deadline_s=60.0, rate=rate)
        assert outcome.ok
        ledger.queue_settle(_event(rid), outcome.rate_hold)
        if i % 16 == 15:
            await ledger.settled()
    await ledger.settled()


async def _scripts(ledger: Ledger) -> int:
    stats = await ledger.redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_eval"))


async def _run(n: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="farebox-ratecheck-") as data:
        handle = await RedisHandle.open(None, data)
        try:
            ledger = Ledger(handle.client, prefix="fbrate", pipe=handle.pipe, lease_requests=32, ttls=Ttls())
            await ledger.set_budget("project", "bench", 10**15, "month")
            await _loop(ledger, 500, None, "warm-plain")
            await _loop(ledger, 500, RATE, "warm-rate")
            cpu: dict[str, list[float]] = {"plain": [], "rate": []}
            calls: dict[str, list[float]] = {"plain": [], "rate": []}
            for r in range(rounds):
                for name, rate in (("plain", None), ("rate", RATE)) if r % 2 == 0 else (("rate", RATE), ("plain", None)):
                    before_calls = await _scripts(ledger)
                    started = time.process_time()
                    await _loop(ledger, n, rate, f"{name}-{r}")
                    cpu[name].append((time.process_time() - started) / n * 1e6)
                    calls[name].append((await _scripts(ledger) - before_calls - 1) / n)
                await ledger.close_leases()
        finally:
            await handle.close()
    plain, rate = statistics.median(cpu["plain"]), statistics.median(cpu["rate"])
    return {"requests_per_loop": n, "rounds": rounds, "plain_us": round(plain, 2), "rate_us": round(rate, 2),
            "rate_over_plain_us": round(rate - plain, 2),
            "rounds_us": {k: [round(x, 2) for x in v] for k, v in cpu.items()},
            "script_calls_per_request": {k: round(statistics.median(v), 3) for k, v in calls.items()},
            "python": sys.version.split()[0]}


def run_ratecheck(n: int = 5_000, rounds: int = 6) -> dict[str, Any]:
    return asyncio.run(_run(n, rounds))


if __name__ == "__main__":
    print(orjson.dumps(run_ratecheck(), option=orjson.OPT_INDENT_2).decode())
