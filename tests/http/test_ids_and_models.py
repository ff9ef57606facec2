"""Which request id a client sees, and ``GET /v1/models/{model}`` passed through, with the
official OpenAI SDK as the client.

``X-Request-Id`` is farebox's own id (the ``request_id`` of its usage event and access-log line),
so the SDK's ``_request_id`` is farebox's; the provider's id, the one its support can look up, is
passed on as ``X-Upstream-Request-Id``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from openai import OpenAI

from proxy.http.app import create_app
from proxy.ledger.events import read_events
from proxy.settings import Settings
from tests.harness import LoopThread

HEADERS = {"X-Project-Id": "acme"}
MESSAGES = [{"role": "user", "content": "Say something."}]
FAREBOX_ID = re.compile(r"[0-9a-f]{32}")


def client_for(base_url: str, headers: dict[str, str] | None = None) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="sk-test-client", default_headers=HEADERS if headers is None else headers,
                  max_retries=0)


# --------------------------------------------------------------------------- request ids

def test_the_sdks_request_id_is_farebox_and_the_providers_is_beside_it(make_stack):
    stack = make_stack()
    raw = client_for(stack.base_url).chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                                messages=MESSAGES)
    completion = raw.parse()
    farebox_id = raw.headers["X-Request-Id"]
    assert completion._request_id == farebox_id and FAREBOX_ID.fullmatch(farebox_id)
    assert raw.headers["X-Upstream-Request-Id"] == "req_fb000000000000000000000001"
    # farebox's id is the one its records use.
    events = stack.run(read_events(stack.services.ledger, ["acme"], (0, 0), 10))
    assert [e.fields["request_id"] for e in events] == [farebox_id]


def test_a_stream_carries_farebox_id_and_the_providers_too(make_stack):
    stack = make_stack()
    with client_for(stack.base_url).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True) as response:
        assert FAREBOX_ID.fullmatch(response.headers["X-Request-Id"])
        assert response.headers["X-Upstream-Request-Id"] == "req_fb000000000000000000000001"
        assert [line for line in response.iter_lines() if line][-1] == "data: [DONE]"


def test_farebox_own_answer_has_its_id_alone(make_stack):
    stack = make_stack()
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(stack.base_url, headers={}).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    headers = caught.value.response.headers
    assert FAREBOX_ID.fullmatch(headers["X-Request-Id"]) and caught.value.request_id == headers["X-Request-Id"]
    assert "X-Upstream-Request-Id" not in headers
    assert stack.received == []


# --------------------------------------------------------------------------- models

MODEL = {"id": "ft:gpt-4o-mini:acme::abc123", "object": "model", "created": 1732000000, "owned_by": "acme"}


@pytest.fixture
def models_upstream() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A small upstream answering ``GET /v1/models/{model}`` as OpenAI does (the fake upstream
    serves only the list), recording the path and query string it was asked for."""
    seen: list[dict[str, Any]] = []

    async def retrieve(request: web.Request) -> web.Response:
        seen.append({"path": request.rel_url.raw_path, "query": request.rel_url.raw_query_string,
                     "authorization": request.headers.get("Authorization"),
                     "project": request.headers.get("X-Project-Id")})
        model_id = request.match_info["model"]
        if model_id != MODEL["id"]:
            return web.json_response({"error": {"message": f"The model '{model_id}' does not exist",
                                                 "type": "invalid_request_error", "param": "model",
                                                 "code": "model_not_found"}},
                                     status=404, headers={"X-Request-Id": "req_up_404"})
        return web.json_response(MODEL, headers={"X-Request-Id": "req_up_1", "OpenAI-Organization": "acme-org"})

    app = web.Application()
    app.router.add_get("/v1/models/{model}", retrieve)
    threads = LoopThread()
    try:
        yield threads.serve(app), seen
    finally:
        threads.close()


@pytest.fixture
def farebox_before(models_upstream, redis_url, key_prefix, tmp_path) -> Iterator[str]:
    upstream_url, _ = models_upstream
    threads = LoopThread()
    settings = Settings(upstream=f"{upstream_url}/v1", redis_url=redis_url, redis_prefix=key_prefix,
                        data_dir=str(tmp_path / "data"))
    try:
        yield f"{threads.serve(create_app(settings), front=True)}/v1"
    finally:
        threads.close()


def test_models_retrieve_passes_through_without_a_project(models_upstream, farebox_before):
    _, seen = models_upstream
    client = client_for(farebox_before, headers={})
    model = client.models.retrieve(MODEL["id"])
    assert model.to_dict() == MODEL
    assert FAREBOX_ID.fullmatch(model._request_id)
    assert seen == [{"path": "/v1/models/ft:gpt-4o-mini:acme::abc123", "query": "",
                     "authorization": "Bearer sk-test-client", "project": None}]


def test_models_retrieve_keeps_the_upstreams_status_body_query_and_encoding(models_upstream, farebox_before):
    _, seen = models_upstream
    response = httpx.get(f"{farebox_before}/models/org%2Fnope", params={"a": "1 2"},
                         headers={"X-Project-Id": "acme", "Authorization": "Bearer sk-test-client"})
    assert response.status_code == 404
    assert response.json() == {"error": {"message": "The model 'org/nope' does not exist",
                                         "type": "invalid_request_error", "param": "model",
                                         "code": "model_not_found"}}
    assert response.headers["X-Upstream-Request-Id"] == "req_up_404"
    assert FAREBOX_ID.fullmatch(response.headers["X-Request-Id"])
    assert seen == [{"path": "/v1/models/org%2Fnope", "query": "a=1+2", "authorization": "Bearer sk-test-client",
                     "project": None}]
    with pytest.raises(openai.NotFoundError) as caught:
        client_for(farebox_before).models.retrieve("org/nope")  # the SDK encodes the / as %2F
    assert caught.value.response.headers["X-Upstream-Request-Id"] == "req_up_404"
    assert seen[-1]["path"] == "/v1/models/org%2Fnope"


@pytest.mark.parametrize("path", ["/models/a/b", "/models/%2e%2E", "/models/%2E"])
def test_a_models_path_that_is_not_one_model_is_not_found_and_not_forwarded(models_upstream, farebox_before, path):
    _, seen = models_upstream
    response = httpx.get(f"{farebox_before}{path}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_endpoint"
    assert seen == []
