"""What the fake upstream tests share: a client of a fresh fake upstream, and ways to ask it."""

from __future__ import annotations

import json

import pytest

from proxy.fake_upstream import create_fake_app

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
BODY = {"model": "gpt-4o-mini", "messages": MESSAGES}


@pytest.fixture
async def fake(aiohttp_client):
    return await aiohttp_client(create_fake_app())


async def post_chat(client, body=None, headers=None):
    response = await client.post(CHAT, json=BODY if body is None else body, headers=headers or {})
    return response.status, await response.json()


async def stream_events(client, body, headers=None) -> list:
    """The stream's data payloads: parsed JSON objects, and the final "[DONE]" as a string."""
    response = await client.post(CHAT, json={**body, "stream": True}, headers=headers or {})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    text = await response.text()
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: ")
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def counted_usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }
