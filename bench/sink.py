"""``python -m bench --sink``: how many events a second one sink drains from Redis into PostgreSQL.

    python -m bench --sink [--sink-events 100000] [--sink-projects 10] [--postgres-url URL] [--out r.json]
    python -m bench --sink --sink-rate 5000 [--sink-seconds 20]

A fresh embedded Redis (or ``--redis-url``, under a key prefix of its own) and a throwaway
database on the PostgreSQL server of ``--postgres-url`` (default the local one; dropped at the
end). Events are appended to the projects' streams as settle.lua appends them (the same
fields, ``UsageEvent.to_fields``; the aggregates are not the sink's business), spread over the
projects, agents, sessions and two models.

- Backlog (default): ``--sink-events`` events first, then one sink, in this process, drains
  them all while the clock runs: events written (rows and rollups) and acknowledged per second.
- Steady (``--sink-rate R``): another process appends R events a second for
  ``--sink-seconds`` while the sink runs; its lag is sampled twice a second, and the time it
  needs to catch up once the appends stop is measured. It keeps up when the oldest event not
  yet in PostgreSQL is never more than 2 s old and it catches up within 2 s. (The lag in
  events counts those in the batches being written too: up to ``--sink-batch`` per project.)

Either way the rows and the rolled-up requests are counted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import redis.asyncio as aioredis

from proxy.domain import Attribution, UsageEvent
from proxy.ledger.embedded import EmbeddedRedis
from proxy.ledger.ledger import Ledger
from proxy.record.sink import Sink, SinkOptions

__all__ = ["run_sink_bench"]

TARGET_EVENTS_PER_S = 5000


def _event(i: int, projects: int, ts: float) -> UsageEvent:
    return UsageEvent(
        request_id=f"bench-{i}", ts=ts, attribution=Attribution(f"p{i % projects}", f"agent-{i % 7}", f"s-{i % 97}"),
        model=("gpt-4o-mini", "gpt-4o")[i % 2], priced_model=("gpt-4o-mini", "gpt-4o")[i % 2],
        endpoint="chat.completions", upstream="openai", status=200, stream=bool(i % 3), estimated=False,
        prompt_tokens=120 + i % 50, completion_tokens=40 + i % 20, cached_tokens=0, cache_creation_tokens=0,
        reasoning_tokens=0, cost_nano=30_000 + i % 1000, latency_ms=120, ttfb_ms=40)


async def _fill(client: aioredis.Redis, ledger: Ledger, first: int, n: int, projects: int) -> None:
    """Append events ``first`` .. ``first + n - 1`` to their projects' streams."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for i in range(first, first + n):
        e = _event(i, projects, now)
        fields = e.to_fields()
        pipe.xadd(ledger.keys.events(e.attribution.project), dict(zip(fields[::2], fields[1::2])))
    pipe.sadd(ledger.keys.projects(), *(f"p{p}" for p in range(projects)))
    await pipe.execute()


def produce(redis_url: str, prefix: str, rate: int, seconds: float, projects: int) -> None:
    """Append ``rate`` events a second for ``seconds`` (ticks of 50 ms): the steady load's process."""
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        ledger = Ledger(client, prefix=prefix)
        per_tick, sent, start = max(1, rate // 20), 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate) + per_tick
            if due > sent:
                await _fill(client, ledger, sent, due - sent, projects)
                sent = due
            await asyncio.sleep(0.05)
        await client.aclose()
        print(sent)
    asyncio.run(run())


async def _counts(pg_url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM usage_events")
        rolled = await conn.fetchval("SELECT sum(requests) FROM usage_monthly")
    finally:
        await conn.close()
    return int(rows), int(rolled or 0)


async def _backlog(client: aioredis.Redis, ledger: Ledger, pg_url: str, events: int, projects: int,
                   batch: int) -> dict[str, Any]:
    started = time.perf_counter()
    for start in range(0, events, 5000):
        await _fill(client, ledger, start, min(5000, events - start), projects)
    appended_s = time.perf_counter() - started
    sink = Sink(ledger, pg_url, SinkOptions(batch=batch, stream_maxlen=1000))
    try:
        await sink.connect()  # migrations before the clock starts
        started, cpu0 = time.perf_counter(), _own_cpu_s()
        drained = await sink.drain_all()
        drain_s, cpu_s = time.perf_counter() - started, _own_cpu_s() - cpu0
        await sink.tidy()
    finally:
        await sink.close()
    rows, rolled = await _counts(pg_url)
    rate = drained / drain_s if drain_s else 0.0
    return {"mode": "backlog", "events": events, "projects": projects, "batch": batch,
            "appended_s": round(appended_s, 2), "drained": drained, "drain_s": round(drain_s, 2),
            "events_per_s": round(rate), "sink_cpu_us": _per_event(cpu_s, drained), "rows": rows, "rolled_up_requests": rolled, "lag_after": sink.lag.events,
            "target_events_per_s": TARGET_EVENTS_PER_S, "keeps_up": rate >= TARGET_EVENTS_PER_S}


def _postgres_cpu_s() -> float:
    """CPU seconds the local PostgreSQL's processes have used so far (those this user may read)."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        try:
            if (p.info["name"] or "").startswith("postgres"):
                t = p.cpu_times()
                total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


async def _redis_cpu_s(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _own_cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


async def _steady(redis_url: str, prefix: str, ledger: Ledger, pg_url: str, rate: int, seconds: float,
                  projects: int, batch: int, round_min_s: float) -> dict[str, Any]:
    sink = Sink(ledger, pg_url, SinkOptions(batch=batch, stream_maxlen=1000, round_min_s=round_min_s,
                                            defer_busy_s=0))  # its capacity, whatever the load
    await sink.connect()
    cpu0 = (_own_cpu_s(), _postgres_cpu_s(), await _redis_cpu_s(ledger.redis))
    task = asyncio.ensure_future(sink.run_forever())
    producer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from bench.sink import produce; "
        f"produce({redis_url!r}, {prefix!r}, {rate}, {seconds}, {projects})",
        stdout=subprocess.PIPE)
    samples: list[tuple[int, float]] = []
    try:
        waiting = asyncio.ensure_future(producer.communicate())
        while not waiting.done():
            await asyncio.sleep(0.5)
            samples.append((sink.lag.events, sink.lag.seconds))
        sent = int((await waiting)[0].decode().strip() or 0)
        stopped = time.perf_counter()
        while sink.written < sent and time.perf_counter() - stopped < 120:
            await asyncio.sleep(0.05)
        catch_up_s = time.perf_counter() - stopped
        cpu1 = (_own_cpu_s(), _postgres_cpu_s(), await _redis_cpu_s(ledger.redis))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sink.close()
    rows, rolled = await _counts(pg_url)
    steady = samples[2:] or samples  # past the start-up
    max_lag = max((n for n, _ in steady), default=0)
    max_lag_s = max((t for _, t in steady), default=0.0)
    return {"mode": "steady", "rate": rate, "seconds": seconds, "projects": projects, "batch": batch,
            "round_min_s": round_min_s, "sent": sent, "rows": rows, "rolled_up_requests": rolled, "max_lag_events": max_lag,
            "max_lag_s": round(max_lag_s, 2), "catch_up_s": round(catch_up_s, 2),
            "batches": sink.batches,
            # CPU per event: the sink (this process, the lag sampling included), PostgreSQL's
            # processes, and Redis (the producer's appends included)
            "sink_cpu_us": _per_event(cpu1[0] - cpu0[0], sent), "postgres_cpu_us": _per_event(cpu1[1] - cpu0[1], sent),
            "redis_cpu_us": _per_event(cpu1[2] - cpu0[2], sent),
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "keeps_up": rows == sent and max_lag_s <= 2.0 and catch_up_s <= 2.0}


def _per_event(cpu_s: float, events: int) -> float:
    return round(cpu_s / events * 1e6, 1) if events else 0.0


async def _bench(redis_url: str, admin_url: str, events: int, projects: int, batch: int,
                 rate: int, seconds: float, round_min_s: float) -> dict[str, Any]:
    prefix = f"fbbench{uuid.uuid4().hex[:8]}"
    name = f"fbbench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f"CREATE DATABASE {name}")
    pg_url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    client = aioredis.Redis.from_url(redis_url)
    ledger = Ledger(client, prefix=prefix, stream_maxlen=0)
    try:
        if rate:
            return await _steady(redis_url, prefix, ledger, pg_url, rate, seconds, projects, batch, round_min_s)
        return await _backlog(client, ledger, pg_url, events, projects, batch)
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i:i + 500])
        await client.aclose()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def run_sink_bench(redis_url: str | None, postgres_url: str, events: int, projects: int, batch: int,
                   out: Path | None, rate: int = 0, seconds: float = 20.0,
                   round_min_s: float = SinkOptions.round_min_s) -> int:
    embedded = None
    if redis_url is None:
        embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="farebox-bench-sink-"))).start()
        redis_url = embedded.url
    try:
        result = asyncio.run(_bench(redis_url, postgres_url, events, projects, batch, rate, seconds, round_min_s))
    finally:
        if embedded is not None:
            embedded.stop()
    if rate:
        print(f"sink, steady: {result['sent']} events at {rate}/s for {seconds:g} s over {projects} projects; "
              f"lag at most {result['max_lag_events']} events / {result['max_lag_s']} s; caught up "
              f"{result['catch_up_s']} s after the last; rows {result['rows']}, rolled up "
              f"{result['rolled_up_requests']}; keeps up: {result['keeps_up']}; {result['batches']} batches; CPU per "
              f"event: sink {result['sink_cpu_us']} µs, PostgreSQL {result['postgres_cpu_us']} µs, Redis "
              f"{result['redis_cpu_us']} µs (appends included)")
        ok = result["rows"] == result["sent"] == result["rolled_up_requests"]
    else:
        print(f"sink, backlog: {result['drained']} events from {projects} projects drained in {result['drain_s']} s: "
              f"{result['events_per_s']} events/s (target {TARGET_EVENTS_PER_S}), sink CPU {result['sink_cpu_us']} µs per "
              f"event; rows {result['rows']}, "
              f"rolled up {result['rolled_up_requests']}, lag after {result['lag_after']}")
        ok = result["rows"] == events == result["rolled_up_requests"] and result["lag_after"] == 0
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1
