"""What farebox adds to a request, timed piece by piece, in one process with no HTTP around it.

- prompt counting: ``count_chat_prompt`` (tiktoken, the model's encoding, chat framing) for a
  1 KB, 100 KB and 1 MB user message; farebox runs it before every reservation. Prompts of
  more than 16,000 characters are counted in a worker thread, so the event loop is free
  meanwhile, but the request still waits for the count.
- one reserve + settle round trip: ``Ledger.reserve`` then ``Ledger.settle`` of one request
  with a project budget (the Lua scripts, over the same kind of Redis connection farebox opens),
  wall time and the client's CPU.
- SSE parsing per chunk: what the stream relay does with each event — split it out of the
  bytes, take its ``data``, parse the JSON, feed the usage meter, decide whether to drop it.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

__all__ = ["run_pieces"]

_WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have "
          "an they you were her she there been one all we their has would when if so no will more can out up who "
          "them some into only time could new these two may first then do any like my now over such our man me "
          "even most made after also did many before must through back years where much your way well down should "
          "because each just those people how too little state good very make world still own see men work long "
          "get here between both life being under never day same another know while last might us great old year "
          "off come since against go came right used take three").split()


def _text_of_size(size: int, seed: int = 7) -> str:
    """Deterministic English-like text of exactly ``size`` characters."""
    rng = random.Random(seed)
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def _timed(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def time_prompt_counting(sizes: dict[str, int], repeat: dict[str, int]) -> dict[str, Any]:
    from proxy.apis.chat_prompt import count_chat_prompt  # noqa: PLC0415
    from proxy.tokens import preload_encodings  # noqa: PLC0415

    preload_encodings()
    results = {}
    for label, size in sizes.items():
        body = {"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": _text_of_size(size)}]}
        tokens = count_chat_prompt("gpt-4o-mini", body)
        times = _timed(lambda: count_chat_prompt("gpt-4o-mini", body), repeat[label])
        results[label] = {"bytes": size, "tokens": tokens, "ms_p50": statistics.median(times), "ms_min": min(times),
                          "runs": len(times)}
    return results


async def _reserve_settle(redis_url: str | None, data_dir: Path, rounds: int) -> dict[str, Any]:
    from pricing.catalog import Catalog  # noqa: PLC0415
    from pricing.cost import Usage, cost_nano, worst_case_nano  # noqa: PLC0415
    from proxy.ledger.connection import RedisHandle  # noqa: PLC0415
    from proxy.domain import Attribution, UsageEvent  # noqa: PLC0415
    from proxy.ledger.ledger import Ledger  # noqa: PLC0415
    from proxy.settings import Settings  # noqa: PLC0415

    prefix = f"fbbench{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_url, data_dir=data_dir, redis_prefix=prefix)
    handle = await RedisHandle.open(settings.redis_url, settings.data_dir)
    try:
        ledger = Ledger(handle.client, prefix=prefix, pipe=handle.pipe)  # as proxy/app.py builds it
        await ledger.set_budget("project", "bench", 10**15, "month")
        price = Catalog.load().resolve("gpt-4o-mini")
        assert price is not None
        who = Attribution(project="bench", agent="loadgen", session=None, key_id="k0123456789abcde")
        usage = Usage(prompt_tokens=24, completion_tokens=40)
        amount = worst_case_nano(price, 24, 64)

        async def one() -> tuple[float, float]:
            rid = uuid.uuid4().hex
            t0 = time.perf_counter()
            outcome = await ledger.reserve(rid, who, amount, deadline_s=660.0)
            assert outcome.ok
            t1 = time.perf_counter()
            event = UsageEvent(request_id=rid, ts=time.time(), attribution=who, model="gpt-4o-mini",
                               priced_model=price.name, endpoint="chat.completions", upstream="http://127.0.0.1/v1",
                               status=200, stream=False, estimated=False, prompt_tokens=24, completion_tokens=40,
                               cached_tokens=0, cache_creation_tokens=0, reasoning_tokens=0,
                               cost_nano=cost_nano(price, usage), latency_ms=1)
            await ledger.settle(event)
            t2 = time.perf_counter()
            return (t1 - t0) * 1e6, (t2 - t1) * 1e6

        for _ in range(min(100, rounds)):
            await one()
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        samples = [await one() for _ in range(rounds)]
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        reserve = [r for r, _ in samples]
        settle = [s for _, s in samples]
        both = sorted(r + s for r, s in samples)
        server = await _server_time(handle.client, ledger, who, amount, price, usage, min(rounds, 1000))
        return {
            "redis": handle.description.split(" (")[0],
            "rounds": rounds,
            "us_p50": statistics.median(both),
            "us_p99": both[min(len(both) - 1, int(len(both) * 0.99))],
            "reserve_us_p50": statistics.median(reserve),
            "settle_us_p50": statistics.median(settle),
            "client_cpu_us": cpu / rounds * 1e6,
            "wall_us_mean": wall / rounds * 1e6,
            **server,
        }
    finally:
        await handle.close()


async def _server_time(redis: Any, ledger: Any, who: Any, amount: int, price: Any, usage: Any,
                       rounds: int) -> dict[str, Any]:
    """Redis's own time per reserve and per settle script (INFO commandstats), each run alone."""
    from pricing.cost import cost_nano  # noqa: PLC0415
    from proxy.domain import UsageEvent  # noqa: PLC0415

    async def evalsha_usec() -> float:
        stats = await redis.info("commandstats")
        return float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))

    rids = [uuid.uuid4().hex for _ in range(rounds)]
    await redis.config_resetstat()
    for rid in rids:
        await ledger.reserve(rid, who, amount, deadline_s=660.0)
    reserve_us = await evalsha_usec()
    await redis.config_resetstat()
    for rid in rids:
        await ledger.settle(UsageEvent(
            request_id=rid, ts=time.time(), attribution=who, model="gpt-4o-mini", priced_model=price.name,
            endpoint="chat.completions", upstream="http://127.0.0.1/v1", status=200, stream=False, estimated=False,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, cached_tokens=0,
            cache_creation_tokens=0, reasoning_tokens=0, cost_nano=cost_nano(price, usage), latency_ms=1))
    settle_us = await evalsha_usec()
    stats = await redis.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items() if k != "cmdstat_evalsha"}
    return {"redis_reserve_us": reserve_us, "redis_settle_us": settle_us,
            "redis_calls_per_settle": {k: round(v / rounds, 1) for k, v in sorted(calls.items()) if v >= rounds}}


def time_reserve_settle(redis_url: str | None, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="farebox-bench-pieces-") as tmp:
        try:
            import uvloop  # noqa: PLC0415
            return uvloop.run(_reserve_settle(redis_url, Path(tmp), rounds))
        except ImportError:
            return asyncio.run(_reserve_settle(redis_url, Path(tmp), rounds))


def _stream_bytes(chunks: int) -> list[bytes]:
    """A chat completion stream as an OpenAI-compatible upstream sends it: role, content
    chunks, finish, usage, [DONE] (the shape of farebox's fake upstream)."""
    head = {"id": "chatcmpl-fb00000000000000000001", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "gpt-4o-mini", "service_tier": "default", "system_fingerprint": "fp_fb0fake001"}

    def event(choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": choices, "usage": usage}) + b"\n\n"

    out = [event([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}, "logprobs": None,
                   "finish_reason": None}])]
    out += [event([{"index": 0, "delta": {"content": " word word"}, "logprobs": None, "finish_reason": None}])
            for _ in range(chunks)]
    out.append(event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
    out.append(event([], {"prompt_tokens": 24, "completion_tokens": 40, "total_tokens": 64,
                          "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}))
    out.append(b"data: [DONE]\n\n")
    return out


def time_sse_per_chunk(streams: int) -> dict[str, Any]:
    """The relay's per-event work (see ``_Call.relay_stream`` in proxy/flow.py), one event per read."""
    from proxy.apis.chat import ChatStreamMeter  # noqa: PLC0415
    from proxy.upstream.sse import SSESplitter  # noqa: PLC0415

    events = _stream_bytes(20)

    def relay_one_stream(strip_usage: bool) -> int:
        splitter = SSESplitter()
        meter = ChatStreamMeter("gpt-4o-mini", strip_usage)
        forwarded = 0
        for data in events:
            forwarded += sum(meter.take(raw) for raw in splitter.feed(data))
        meter.result(24)
        return forwarded

    relay_one_stream(False)
    per_chunk = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(streams):
            relay_one_stream(False)
        per_chunk.append((time.perf_counter() - started) / (streams * len(events)) * 1e6)
    return {"events_per_stream": len(events), "us_per_chunk_p50": statistics.median(per_chunk),
            "us_per_chunk_min": min(per_chunk)}


def run_pieces(*, smoke: bool, redis_url: str | None) -> dict[str, Any]:
    if smoke:
        sizes = {"1 KB": 1_000, "100 KB": 100_000}
        repeat = {"1 KB": 20, "100 KB": 3}
        rounds, streams = 200, 50
    else:
        sizes = {"1 KB": 1_000, "100 KB": 100_000, "1 MB": 1_000_000}
        repeat = {"1 KB": 200, "100 KB": 20, "1 MB": 5}
        rounds, streams = 3000, 1000
    return {
        "prompt_counting": time_prompt_counting(sizes, repeat),
        "reserve_settle": time_reserve_settle(redis_url, rounds),
        "sse_parse": time_sse_per_chunk(streams),
    }
