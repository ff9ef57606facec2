"""The fake upstream's other endpoints, and the requests it records."""

from __future__ import annotations

import base64
import json

from proxy import fake_upstream
from proxy.fake_upstream import RECEIVED
from proxy.tokens import count_text
from tests.fake_upstream.conftest import BODY, CHAT, post_chat


# --- other endpoints -------------------------------------------------------------------------

async def test_models_is_an_openai_list(fake):
    response = await fake.get("/v1/models")
    assert response.status == 200
    listing = await response.json()
    assert listing["object"] == "list"
    assert {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"} in listing["data"]


async def test_one_listed_model_is_retrieved_and_any_other_is_not_found(fake):
    response = await fake.get("/v1/models/gpt-4o-mini")
    assert response.status == 200
    assert await response.json() == {"id": "gpt-4o-mini", "object": "model", "created": 1721172741,
                                     "owned_by": "system"}
    missing = await fake.get("/v1/models/gpt-9")
    assert missing.status == 404
    assert await missing.json() == {"error": {"message": "The model 'gpt-9' does not exist",
                                              "type": "invalid_request_error", "param": "model",
                                              "code": "model_not_found"}}


async def test_legacy_completion_with_usage(fake):
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": ["Once upon", "a time"], "max_tokens": 7}
    response = await fake.post("/v1/completions", json=body)
    completion = await response.json()
    assert completion["object"] == "text_completion"
    assert [c["index"] for c in completion["choices"]] == [0, 1]
    assert all(c["finish_reason"] == "length" for c in completion["choices"])
    prompt_tokens = count_text(body["model"], "Once upon") + count_text(body["model"], "a time")
    assert completion["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 14,
                                   "total_tokens": prompt_tokens + 14}


async def test_legacy_completion_stream_with_usage(fake):
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon", "stream": True,
            "stream_options": {"include_usage": True}}
    response = await fake.post("/v1/completions", json=body)
    blocks = (await response.text()).split("\n\n")[:-1]
    assert blocks[-1] == "data: [DONE]"
    chunks = [json.loads(block[len("data: "):]) for block in blocks[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_embeddings_are_deterministic_with_usage(fake):
    body = {"model": "text-embedding-3-small", "input": ["hello world", "goodbye"], "dimensions": 8}
    first = await (await fake.post("/v1/embeddings", json=body)).json()
    again = await (await fake.post("/v1/embeddings", json=body)).json()
    assert first == again
    assert [len(item["embedding"]) for item in first["data"]] == [8, 8]
    assert first["data"][0]["embedding"] != first["data"][1]["embedding"]
    tokens = count_text(body["model"], "hello world") + count_text(body["model"], "goodbye")
    assert first["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    encoded = await (await fake.post("/v1/embeddings", json={**body, "encoding_format": "base64"})).json()
    assert len(base64.b64decode(encoded["data"][0]["embedding"])) == 8 * 4


# --- recording -------------------------------------------------------------------------------

async def test_requests_are_recorded_and_can_be_cleared(fake):
    await post_chat(fake, headers={"X-Trace": "one"})
    await fake.get("/v1/models")
    recorded = fake.app[RECEIVED]
    assert [(r["method"], r["path"], r["body"]) for r in recorded] == [
        ("POST", CHAT, BODY), ("GET", "/v1/models", None)]
    assert recorded[0]["headers"]["x-trace"] == "one"
    listed = await (await fake.get("/_fake/requests")).json()
    assert listed == recorded
    cleared = await fake.delete("/_fake/requests")
    assert cleared.status == 204
    assert fake.app[RECEIVED] == []
    assert await (await fake.get("/_fake/requests")).json() == []


async def test_recording_keeps_only_the_latest_requests(fake, monkeypatch):
    monkeypatch.setattr(fake_upstream.server, "RECORD_LIMIT", 3)
    for turn in range(5):
        await post_chat(fake, {**BODY, "user": str(turn)})
    assert [r["body"]["user"] for r in fake.app[RECEIVED]] == ["2", "3", "4"]


async def test_malformed_bodies_are_recorded_as_none(fake):
    await fake.post(CHAT, data=b"{oops", headers={"Content-Type": "application/json"})
    assert fake.app[RECEIVED][-1]["body"] is None
