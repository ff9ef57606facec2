"""``farebox usage`` shows the LLM / compute split and compute by resource when a scope has usage
records of compute, and nothing new when it has none."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from proxy.compute import usage_event
from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from tests.test_cli import run
from tests.test_cli_reports import record as record_llm


def test_usage_prints_compute_by_resource_beside_llm_models(redis_url, key_prefix):
    now = time.time()
    who = Attribution("acme", "runner", "job-7")
    record_llm(redis_url, key_prefix, [("r1", who, now, 10_000_000)])

    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            ledger = Ledger(client, prefix=key_prefix)
            await ledger.settle(usage_event("u1", now, who, "compute:gpu", 750_000_000, 201))
            await ledger.settle(usage_event("u2", now, who, "compute:cpu", 100_000_000, 201))
        finally:
            await client.aclose()
    asyncio.run(go())
    env = {"REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": key_prefix}
    result = run(["usage", "session", "acme/job-7", "--period", "total"], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["requests", "3", "prompt", "tokens", "100", "completion", "tokens", "10", "cost",
                                "$0.86"]
    assert lines[2].split() == ["llm", "$0.01", "compute", "$0.85", "(2", "usage", "records)"]
    assert [line.split() for line in lines[3:]] == [
        ["by", "model:"], ["gpt-4o-mini", "requests", "1", "cost", "$0.01"],
        ["by", "resource:"], ["gpu", "records", "1", "cost", "$0.75"], ["cpu", "records", "1", "cost", "$0.10"]]
