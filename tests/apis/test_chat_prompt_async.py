"""Counting a chat prompt off the event loop: inline when small and loaded, in a thread otherwise."""

from __future__ import annotations

import asyncio
import threading

import pytest

from proxy.apis import chat_prompt
from proxy.apis.chat_prompt import ChatCount, ChatParts, count_chat, count_chat_async
from proxy.tokens import counting


def large_body() -> dict[str, object]:
    text = "The quick brown fox jumps over the lazy dog. " * 1000  # 45 000 characters
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": text},
        ]
    }


async def test_async_count_equals_sync_count_for_a_large_body() -> None:
    body = large_body()
    assert await count_chat_async("gpt-4o", body) == count_chat("gpt-4o", body)


async def test_async_count_of_a_small_body_runs_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = chat_prompt.count_parts

    def recording(model: str, parts: ChatParts) -> ChatCount:
        threads.append(threading.get_ident())
        return real(model, parts)

    monkeypatch.setattr(chat_prompt, "count_parts", recording)
    body = {"messages": [{"role": "user", "content": "hi"}]}

    assert await count_chat_async("gpt-4o", body) == ChatCount(8, 0)
    assert threads == [threading.get_ident()]


async def test_async_count_of_a_large_body_leaves_the_loop_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop_ran = threading.Event()
    seen: dict[str, object] = {}
    real = chat_prompt.count_parts

    def waiting(model: str, parts: ChatParts) -> ChatCount:
        seen["thread"] = threading.get_ident()
        # Only a loop that is still running can set this; inline counting would never see it.
        seen["loop_ran"] = loop_ran.wait(timeout=10)
        return real(model, parts)

    async def other_task() -> None:
        loop_ran.set()

    monkeypatch.setattr(chat_prompt, "count_parts", waiting)
    body = large_body()

    count, _ = await asyncio.gather(count_chat_async("gpt-4o", body), other_task())

    assert seen == {"thread": seen["thread"], "loop_ran": True}
    assert seen["thread"] != threading.get_ident()
    assert count == count_chat("gpt-4o", body)


async def test_async_threshold_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = chat_prompt.count_parts

    def recording(model: str, parts: ChatParts) -> ChatCount:
        threads.append(threading.get_ident())
        return real(model, parts)

    monkeypatch.setattr(chat_prompt, "count_parts", recording)
    body = {"messages": [{"role": "user", "content": "x" * 100}]}

    await count_chat_async("gpt-4o", body, offload_threshold_chars=50)

    assert threads != [threading.get_ident()]
    assert len(threads) == 1


async def test_async_count_loads_a_missing_encoding_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    real = chat_prompt.count_parts

    def recording(model: str, parts: ChatParts) -> ChatCount:
        threads.append(threading.get_ident())
        return real(model, parts)

    monkeypatch.setattr(counting, "_loaded", {})  # as in a fresh process
    monkeypatch.setattr(chat_prompt, "count_parts", recording)
    body = {"messages": [{"role": "user", "content": "hi"}]}

    assert await count_chat_async("gpt-4o", body) == ChatCount(8, 0)
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


async def test_a_large_response_format_is_counted_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = chat_prompt.count_parts

    def recording(model: str, parts: ChatParts) -> ChatCount:
        threads.append(threading.get_ident())
        return real(model, parts)

    monkeypatch.setattr(chat_prompt, "count_parts", recording)
    schema = {"type": "object", "description": "word " * 20_000}
    body = {"messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}

    count = await count_chat_async("gpt-4o", body)

    assert len(threads) == 1 and threads[0] != threading.get_ident()
    assert count.prompt > 20_000
