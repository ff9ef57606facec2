"""The data plane's endpoints: which are metered, which pass through unmetered to which family's
upstream, and the 404 for the rest in the family's error shape; the query string and a coding
agent's own session header on a metered request."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.test_chat import MESSAGES, settled_usage

HEADERS = {"X-Project-Id": "acme"}


@pytest.fixture
def stack(make_stack):
    return make_stack()


@pytest.mark.parametrize("method,path,upstream_path", [
    ("GET", "/v1/responses/resp_123", "/v1/responses/resp_123"),
    ("DELETE", "/v1/responses/resp_123", "/v1/responses/resp_123"),
    ("GET", "/v1/responses/resp_123/input_items", "/v1/responses/resp_123/input_items"),
    ("POST", "/v1/responses/resp_123/cancel", "/v1/responses/resp_123/cancel"),
    ("POST", "/v1/responses/input_tokens", "/v1/responses/input_tokens"),
    ("POST", "/v1/messages/count_tokens", "/v1/messages/count_tokens"),
    ("GET", "/v1/models", "/v1/models"),
])
def test_pass_through_endpoints_reach_their_familys_upstream_without_a_project(stack, method, path, upstream_path):
    body = {"model": "gpt-4o-mini", "input": "hi"} if method == "POST" else None
    answer = httpx.request(method, f"{stack.url}{path}?limit=2", json=body,
                           headers={"Authorization": "Bearer sk-client"})
    assert len(answer.headers["X-Request-Id"]) == 32
    (seen,) = stack.received
    assert (seen["method"], seen["path"], seen["query"]) == (method, upstream_path, "limit=2")
    assert seen["headers"]["authorization"] == "Bearer sk-client"
    if body is not None:
        assert seen["body"] == body
    assert stack.events() == []


@pytest.mark.parametrize("path", ["/v1/responses/%2E%2E", "/v1/responses/%2E/input_items"])
def test_a_dot_segment_is_not_passed_through(stack, path):
    answer = httpx.get(f"{stack.url}{path}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "unknown_endpoint"
    assert stack.received == []


@pytest.mark.parametrize("method,path", [("POST", "/v1/messages/batches"), ("GET", "/v1/messages"),
                                         ("POST", "/v1/messages/count_tokens/x")])
def test_unknown_paths_under_messages_are_404_in_anthropics_shape(stack, method, path):
    answer = httpx.request(method, f"{stack.url}{path}", json={}, headers=HEADERS)
    assert answer.status_code == 404
    body = answer.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}
    assert (body["error"]["type"], body["error"]["code"]) == ("not_found_error", "unknown_endpoint")
    assert stack.received == []


@pytest.mark.parametrize("path", ["/v1/batches", "/v1/messagesx", "/v1/files"])
def test_unknown_paths_elsewhere_are_404_in_openais_shape(stack, path):
    answer = httpx.post(f"{stack.url}{path}", json={}, headers=HEADERS)
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("not_found_error", "unknown_endpoint")
    assert "POST /v1/chat/completions" in error["message"]
    assert stack.received == []


@pytest.mark.parametrize("chunked", [False, True], ids=["farebox's own server", "aiohttp"])
def test_a_metered_requests_query_string_is_forwarded_as_sent(stack, chunked):
    body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}).encode()
    content = iter([body]) if chunked else body  # an iterator is sent chunked: aiohttp's side serves it
    answer = httpx.post(f"{stack.url}/v1/chat/completions?beta=true&x=a%20b", content=content,
                        headers={**HEADERS, "Content-Type": "application/json"})
    assert answer.status_code == 200
    (seen,) = stack.received
    assert (seen["path"], seen["query"]) == ("/v1/chat/completions", "beta=true&x=a%20b")
    settled_usage(stack)


@pytest.mark.parametrize("headers,session", [
    ({"x-claude-code-session-id": "0b9c1e9e-4d7b-4f1e-9a57-1a2b3c4d5e6f"}, "0b9c1e9e-4d7b-4f1e-9a57-1a2b3c4d5e6f"),
    ({"session-id": "codex-7"}, "codex-7"),
    ({"X-Session-Id": "mine", "x-claude-code-session-id": "theirs"}, "mine"),
    ({"x-claude-code-session-id": "not an id!"}, ""),
])
def test_the_session_comes_from_a_coding_agents_own_header_when_none_is_named(stack, headers, session):
    answer = httpx.post(f"{stack.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES},
                        headers={**HEADERS, **headers})
    assert answer.status_code == 200
    settled_usage(stack)
    (event,) = stack.events()
    assert event["session"] == session
    if session:
        assert settled_usage(stack, scope="session", scope_id=f"acme/{session}")["requests"] == 1
    assert stack.received[0]["headers"].get("x-claude-code-session-id") == headers.get("x-claude-code-session-id")


def test_the_event_names_the_upstream_it_went_to(stack):
    answer = httpx.post(f"{stack.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES},
                        headers=HEADERS)
    assert answer.status_code == 200
    settled_usage(stack)
    (event,) = stack.events()
    assert event["upstream"] == "openai"
