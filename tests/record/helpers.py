"""What the usage-of-record tests share: sending requests, waiting for the sink, reading rows."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import asyncpg
import httpx

from proxy.ledger.drain import Drain


def chat(base_url: str, project: str, agent: str, model: str, session: str | None = None,
         max_tokens: int = 50) -> httpx.Response:
    headers = {"X-Project-Id": project, "X-Agent-Id": agent, "Authorization": "Bearer sk-test"}
    if session:
        headers["X-Session-Id"] = session
    response = httpx.post(f"{base_url}/chat/completions", headers=headers, timeout=30,
                          json={"model": model, "max_tokens": max_tokens,
                                "messages": [{"role": "user", "content": f"hello from {agent}"}]})
    assert response.status_code == 200, response.text
    return response


async def fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def rows(url: str, query: str = "SELECT * FROM usage_events ORDER BY request_id", *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in asyncio.run(fetch(url, query, *args))]


def count_rows(url: str) -> int:
    try:
        return int(asyncio.run(fetch(url, "SELECT count(*) AS n FROM usage_events"))[0]["n"])
    except (asyncpg.UndefinedTableError, OSError):
        return 0


def wait_for_rows(url: str, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_rows(url) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{count_rows(url)} rows in usage_events after {timeout:.0f} s, {n} expected")


def wait_caught_up(stack: Any, timeout: float = 30.0) -> None:
    """Until the stack's sink (a process of its own or a task of the stack) has written and
    acknowledged everything: no entry of any stream pending or undelivered in the group."""
    drain = Drain(stack.services.ledger)
    deadline = time.monotonic() + timeout
    behind = None
    while time.monotonic() < deadline:
        stack.run(stack.services.ledger.settled())
        states = stack.run(drain.tidy(stack.run(drain.projects()), 0))
        behind = sum(s.behind for s in states)
        if behind == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the sink is {behind} events behind after {timeout:.0f} s")


def readyz_sink(stack: Any, until: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
    """The sink's part of ``/readyz`` once ``until`` holds for it (the sink reports about once a
    second what it saw)."""
    deadline = time.monotonic() + timeout
    while True:
        sink = httpx.get(f"{stack.url}/readyz").json()["sink"]
        if until(sink) or time.monotonic() > deadline:
            assert until(sink), sink
            return sink
        time.sleep(0.1)
