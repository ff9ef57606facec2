"""Redis memory (``--memory``): what farebox keeps per request, per new session and per project,
and whether memory stays flat under a steady load with new sessions.

Two parts, both against a fresh key prefix in one Redis (the embedded one, or ``--redis-url``),
settling ``UsageEvent``s through the ledger as the request path does (the pipe, batched settles;
what reaches Redis is the same as behind HTTP, the HTTP layer keeping nothing in Redis):

- unit costs: ``INFO memory`` (``used_memory``) before and after settling many requests of one
  kind (a new project each; a new session each; neither), and ``MEMORY USAGE`` of the keys of
  each kind, divided by the count;
- steady load: ``--rate`` requests/s for ``--duration`` seconds over ``--projects`` projects,
  a new session every ``--session-requests`` requests, with the session TTL and the idempotency
  window scaled down (``--session-ttl``, ``--window``) so that they run out inside the run;
  every ``--sample`` seconds it reports memory with and without the event streams, and the
  memory per request sent so far. At steady state the memory without streams stays flat
  while the requests sent keep growing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["run_memory", "render_memory_markdown"]

MODELS = ("gpt-4o-mini", "gpt-4o")


def _event(rid: str, who: Any, ts: float, n: int, model: str | None = None) -> Any:
    from proxy.domain import UsageEvent  # noqa: PLC0415

    model = model or MODELS[n % len(MODELS)]
    return UsageEvent(request_id=rid, ts=ts, attribution=who, model=model, priced_model=model,
                      endpoint="/v1/chat/completions", upstream="https://api.openai.com/v1", status=200,
                      stream=bool(n % 2), estimated=False, prompt_tokens=480 + n % 97, completion_tokens=120 + n % 31,
                      cached_tokens=0, cache_creation_tokens=0, reasoning_tokens=0, cost_nano=97_500 + n % 1000,
                      latency_ms=800 + n % 400, clamped_max_tokens=None)


async def _used(client: Any) -> int:
    return int((await client.info("memory"))["used_memory"])


async def _usage_of(client: Any, pattern: str) -> tuple[int, int]:
    """(keys, bytes by MEMORY USAGE) of the keys matching ``pattern``."""
    count = total = 0
    async for key in client.scan_iter(match=pattern, count=1000):
        count += 1
        total += int(await client.memory_usage(key, samples=0) or 0)
    return count, total


async def _hour_share(client: Any, pattern: str, hour: str, sample: int = 200) -> float:
    """The share of the session hashes matching ``pattern`` (MEMORY USAGE, ``sample`` of them)
    that their fields of bucket ``hour`` take: what each loses when it drops that bucket.
    Changes those hashes: run last."""
    before = after = 0
    async for key in client.scan_iter(match=pattern, count=1000):
        fields = [f for f in await client.hkeys(key) if f.startswith(hour.encode())]
        if not fields:
            continue
        before += int(await client.memory_usage(key, samples=0) or 0)
        await client.hdel(key, *fields)
        after += int(await client.memory_usage(key, samples=0) or 0)
        sample -= 1
        if sample <= 0:
            break
    return (before - after) / max(1, before)


async def _unit_costs(client: Any, pipe: Any, prefix: str, requests: int) -> dict[str, Any]:
    from proxy.domain import Attribution  # noqa: PLC0415
    from proxy.ledger.ledger import Ledger  # noqa: PLC0415
    from proxy.ledger.periods import bucket_ids  # noqa: PLC0415

    ledger = Ledger(client, prefix=prefix, pipe=pipe, stream_maxlen=0)
    now = time.time()
    n = 0

    async def settle_all(whos: list[Any], at: float = now, models: tuple[str, ...] = MODELS[:1]) -> int:
        nonlocal n
        before = await _used(client)
        for i, who in enumerate(whos):
            n += 1
            ledger.queue_settle(_event(uuid.uuid4().hex, who, at, n, models[i % len(models)]))
            if i % 256 == 255:
                await ledger.settled()
        await ledger.settled()
        return await _used(client) - before

    await settle_all([Attribution("warm", "agent", str(uuid.uuid4()), "key0")])  # scripts loaded, first allocations made
    projects = max(50, requests // 100)
    per_project = await settle_all([Attribution(f"project-{i:04d}", "agent", None, "key0") for i in range(projects)])
    base = Attribution("project-0000", "agent", str(uuid.uuid4()), "key0")
    per_request = await settle_all([base] * requests)
    sessions = max(500, requests // 4)
    per_session = await settle_all([Attribution("project-0000", "agent", str(uuid.uuid4()), "key0") for _ in range(sessions)])
    # The mix of docs/scaling.md: 5 agents, 1 key, 2 models a project; what a new hour bucket adds.
    mix = [Attribution(f"mix-{i:04d}", f"agent-{a}", None, "key0") for i in range(projects) for a in range(5)
           for _ in MODELS]
    await settle_all(mix, now, MODELS)
    await settle_all(mix, now + 3600, MODELS)
    hour = bucket_ids(now + 3600)[0]
    bucket_keys, bucket_bytes = await _usage_of(client, f"{prefix}:{{mix-0000}}:u:*:{hour}:*")
    done_keys, done_bytes = await _usage_of(client, f"{prefix}:*:done:*")
    stream_keys, stream_bytes = await _usage_of(client, f"{prefix}:*:events")
    session_keys, session_bytes = await _usage_of(client, f"{prefix}:{{project-0000}}:s:*")
    _, ranking_bytes = await _usage_of(client, f"{prefix}:{{project-0000}}:top:session:total")
    session_hour_share = await _hour_share(client, f"{prefix}:{{project-0000}}:s:*", bucket_ids(now)[0])
    request_b = per_request / requests
    return {
        "requests": n, "per_request_b": request_b,
        "per_new_session_b": per_session / sessions - request_b,
        "per_new_project_b": per_project / projects - request_b,
        "per_project_bucket_b": bucket_bytes, "per_project_bucket_keys": bucket_keys,
        "key_overhead_b": per_session / sessions - request_b - session_bytes / (sessions + 1),
        "marker_b": done_bytes / n, "done_sets": done_keys,
        "stream_entry_b": stream_bytes / n, "streams": stream_keys,
        "session_aggregates_b": session_bytes / (sessions + 1), "session_keys": session_keys,
        "session_hour_share": session_hour_share, "ranking_100_b": ranking_bytes,
    }


async def _steady(client: Any, pipe: Any, prefix: str, opts: dict[str, Any], say: Any) -> list[dict[str, Any]]:
    from proxy.domain import Attribution  # noqa: PLC0415
    from proxy.ledger.ledger import Ledger, Ttls  # noqa: PLC0415

    ledger = Ledger(client, prefix=prefix, pipe=pipe, stream_maxlen=opts["stream_maxlen"],
                    ttls=Ttls(session=opts["session_ttl"]), idempotency_window_s=opts["window"])
    projects, agents = opts["projects"], 5
    session_of: dict[tuple[int, int], str] = {}
    rate, tick = opts["rate"], 0.05
    start = time.monotonic()
    base = await _used(client)
    samples: list[dict[str, Any]] = []
    sent = 0
    next_sample = start + opts["sample"]
    while (now := time.monotonic()) - start < opts["duration"]:
        due = int((now - start) * rate) - sent
        for _ in range(due):
            sent += 1
            if sent % opts["session_requests"] == 0:  # a new session, for each agent in turn
                q = (sent // opts["session_requests"]) % (projects * agents)
                session_of[(q // agents, q % agents)] = str(uuid.uuid4())
            p, a = sent % projects, (sent // projects) % agents
            if (p, a) not in session_of:
                session_of[(p, a)] = str(uuid.uuid4())
            who = Attribution(f"project-{p:04d}", f"agent-{a}", session_of[(p, a)], f"key-{p:04d}")
            # one model per agent (so per session), both models in every project
            ledger.queue_settle(_event(uuid.uuid4().hex, who, time.time(), sent, MODELS[a % len(MODELS)]))
        await ledger.settled()
        if now >= next_sample:
            next_sample += opts["sample"]
            used = await _used(client) - base
            _, streams = await _usage_of(client, f"{prefix}:*:events")
            _, markers = await _usage_of(client, f"{prefix}:*:done:*")
            row = {"t_s": round(now - start, 1), "requests": sent, "used_mb": used / 2**20,
                   "without_streams_mb": (used - streams) / 2**20, "markers_mb": markers / 2**20,
                   "keys": int(await client.dbsize()),
                   "b_per_request_sent": (used - streams) / max(1, sent)}
            samples.append(row)
            say(f"memory t={row['t_s']:6.1f}s requests {sent:8d}  used {row['used_mb']:7.2f} MB  "
                f"without streams {row['without_streams_mb']:7.2f} MB  markers {row['markers_mb']:6.2f} MB  "
                f"{row['b_per_request_sent']:7.1f} B/request sent")
        await asyncio.sleep(max(0.0, tick - (time.monotonic() - now)))
    return samples


async def _run(redis_url: str | None, data_dir: Path, opts: dict[str, Any], say: Any) -> dict[str, Any]:
    from proxy.ledger.connection import RedisHandle  # noqa: PLC0415

    handle = await RedisHandle.open(redis_url, data_dir)
    prefix = f"fbm{uuid.uuid4().hex[:4]}"
    try:
        say("unit costs")
        units = await _unit_costs(handle.client, handle.pipe, prefix + "u", opts["unit_requests"])
        await _delete(handle.client, prefix + "u")
        say(f"steady load: {opts['rate']} requests/s for {opts['duration']:.0f} s")
        samples = await _steady(handle.client, handle.pipe, prefix + "s", opts, say)
        info = await handle.client.info("server")
        return {"options": opts, "redis_version": info.get("redis_version"), "units": units, "samples": samples}
    finally:
        await _delete(handle.client, prefix)
        await handle.close()


async def _delete(client: Any, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i:i + 500])


def run_memory(redis_url: str | None, data_dir: Path, opts: dict[str, Any], say: Any) -> dict[str, Any]:
    """Both parts; the report dict (``options``, ``units``, ``samples``)."""
    return asyncio.run(_run(redis_url, data_dir, opts, say))


def render_memory_markdown(report: dict[str, Any]) -> str:
    u, o = report["units"], report["options"]
    lines = [
        f"Redis {report['redis_version']}; unit costs from {u['requests']} settled requests (used_memory deltas):",
        "",
        "| | bytes |",
        "|---|---:|",
        f"| per request (done-marker + stream entry) | {u['per_request_b']:.0f} |",
        f"| of which the done-marker (MEMORY USAGE of the done-sets) | {u['marker_b']:.0f} |",
        f"| of which the stream entry (MEMORY USAGE of the streams) | {u['stream_entry_b']:.0f} |",
        f"| per new session (beyond its request; one hash) | {u['per_new_session_b']:.0f} |",
        f"| of which its hash (MEMORY USAGE) | {u['session_aggregates_b']:.0f} |",
        f"| per new project (beyond its request) | {u['per_new_project_b']:.0f} |",
        f"| per project and bucket (5 agents, 1 key, 2 models: {u['per_project_bucket_keys']} hashes; MEMORY USAGE) "
        f"| {u['per_project_bucket_b']:.0f} |",
        f"| per key, beyond MEMORY USAGE (Redis's key and expiry tables) | {u['key_overhead_b']:.0f} |",
        f"| a ranking of 100 sessions (MEMORY USAGE) | {u['ranking_100_b']:.0f} |",
        f"| share of a session's hash in its hour bucket's fields | {u['session_hour_share']:.2f} |",
        "",
        f"Steady load: {o['rate']} requests/s over {o['projects']} projects, a new session every "
        f"{o['session_requests']} requests, session TTL {o['session_ttl']} s, idempotency window {o['window']} s, "
        f"stream cap {o['stream_maxlen']} events per project:",
        "",
        "| t (s) | requests sent | used (MB) | without streams (MB) | markers (MB) | keys | B per request sent |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["samples"]:
        lines.append(f"| {r['t_s']:.0f} | {r['requests']} | {r['used_mb']:.2f} | {r['without_streams_mb']:.2f} | "
                     f"{r['markers_mb']:.2f} | {r['keys']} | {r['b_per_request_sent']:.1f} |")
    return "\n".join(lines) + "\n"
