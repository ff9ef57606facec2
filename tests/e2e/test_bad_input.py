"""Every bad input gets its exact status and OpenAI-shaped error, and is neither forwarded nor recorded."""

from __future__ import annotations

import http.client
import json

import httpx
import pytest
from proxy.ledger.reports import read_usage

GOOD = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"X-Project-Id": "acme", "Content-Type": "application/json"}


@pytest.fixture
def stack(make_stack):
    return make_stack(max_body_bytes=64 * 1024)


def assert_untouched(stack, redis_client, key_prefix):
    assert stack.received == [], "nothing may reach the upstream"
    found = stack.run(_keys(stack, key_prefix))
    assert found == [], f"nothing may be recorded, found {found}"


async def _keys(stack, key_prefix):
    import redis.asyncio as aioredis
    client = stack.services.ledger.redis
    assert isinstance(client, aioredis.Redis)
    layout = stack.services.ledger.keys.layout().encode()  # written at start, by no request
    return [k async for k in client.scan_iter(match=f"{key_prefix}:*") if k != layout]


def post(stack, body: bytes | str, headers=None):
    data = body.encode() if isinstance(body, str) else body
    return httpx.post(f"{stack.base_url}/chat/completions", content=data, headers=headers or HEADERS, timeout=30)


def error(response):
    return response.json()["error"]


CASES = [
    ("malformed json", b'{"model": "gpt-4o-mini", "messages": [', 400, "invalid_request_error", "invalid_json", None,
     "The request body is not valid JSON"),
    ("empty body", b"", 400, "invalid_request_error", "invalid_json", None, "The request body is empty; send a JSON object."),
    ("array body", b"[1, 2]", 400, "invalid_request_error", "invalid_json", None,
     "The request body must be a JSON object, not an array."),
    ("string body", b'"hello"', 400, "invalid_request_error", "invalid_json", None,
     "The request body must be a JSON object, not a string."),
    ("missing model", json.dumps({"messages": []}).encode(), 400, "invalid_request_error", "missing_required_parameter",
     "model", "Missing required parameter: 'model'."),
    ("numeric model", json.dumps({"model": 4, "messages": []}).encode(), 400, "invalid_request_error", "invalid_type",
     "model", "Invalid type for 'model': expected a non-empty string, got a number."),
    ("messages not a list", json.dumps({"model": "gpt-4o-mini", "messages": "hi"}).encode(), 400,
     "invalid_request_error", "invalid_type", "messages", "Invalid type for 'messages': expected an array, got a string."),
    ("missing messages", json.dumps({"model": "gpt-4o-mini"}).encode(), 400, "invalid_request_error",
     "missing_required_parameter", "messages", "Missing required parameter: 'messages'."),
    ("stream not bool", json.dumps({**GOOD, "stream": "yes"}).encode(), 400, "invalid_request_error", "invalid_type",
     "stream", "Invalid type for 'stream': expected a boolean, got a string."),
    ("max_tokens string", json.dumps({**GOOD, "max_tokens": "10"}).encode(), 400, "invalid_request_error", "invalid_type",
     "max_tokens", "Invalid type for 'max_tokens': expected an integer, got a string."),
    ("max_tokens float", json.dumps({**GOOD, "max_tokens": 1.5}).encode(), 400, "invalid_request_error", "invalid_type",
     "max_tokens", "Invalid type for 'max_tokens': expected an integer, got a number."),
    ("max_tokens zero", json.dumps({**GOOD, "max_tokens": 0}).encode(), 400, "invalid_request_error", "invalid_value",
     "max_tokens", "Invalid value for 'max_tokens': must be at least 1, got 0."),
    ("max_completion_tokens bool", json.dumps({**GOOD, "max_completion_tokens": True}).encode(), 400,
     "invalid_request_error", "invalid_type", "max_completion_tokens",
     "Invalid type for 'max_completion_tokens': expected an integer, got a boolean."),
    ("unknown model", json.dumps({**GOOD, "model": "no-such-model-xyz"}).encode(), 400, "invalid_request_error",
     "model_not_found", "model", "Unknown model 'no-such-model-xyz'"),
    ("max_tokens 2**62", json.dumps({**GOOD, "max_tokens": 2**62}).encode(), 400, "invalid_request_error",
     "invalid_value", "max_tokens", f"Invalid value for 'max_tokens': must be at most 2147483647, got {2**62}."),
    ("max_tokens beyond 64 bits", json.dumps({**GOOD, "max_tokens": 2**70}).encode(), 400, "invalid_request_error",
     "invalid_type", "max_tokens", "Invalid type for 'max_tokens': expected an integer, got a number."),
    ("max_completion_tokens 2**31", json.dumps({**GOOD, "max_completion_tokens": 2**31}).encode(), 400,
     "invalid_request_error", "invalid_value", "max_completion_tokens",
     "Invalid value for 'max_completion_tokens': must be at most 2147483647, got 2147483648."),
    ("n 2**40", json.dumps({**GOOD, "n": 2**40}).encode(), 400, "invalid_request_error", "invalid_value", "n",
     f"Invalid value for 'n': must be at most 128, got {2**40}."),
    ("n 129", json.dumps({**GOOD, "n": 129}).encode(), 400, "invalid_request_error", "invalid_value", "n",
     "Invalid value for 'n': must be at most 128, got 129."),
    ("n zero", json.dumps({**GOOD, "n": 0}).encode(), 400, "invalid_request_error", "invalid_value", "n",
     "Invalid value for 'n': must be at least 1, got 0."),
    ("worst case beyond pricing", json.dumps({**GOOD, "model": "gpt-4o", "max_completion_tokens": 2**31 - 1,
                                              "n": 128}).encode(), 400, "invalid_request_error", "invalid_value",
     "max_completion_tokens", "This request may cost up to $2748779.07, more than farebox prices ($100000.00); "
     "lower 'max_completion_tokens'."),
]


@pytest.mark.parametrize("name,body,status,etype,code,param,message", CASES, ids=[c[0] for c in CASES])
def test_bad_body(stack, redis_client, key_prefix, name, body, status, etype, code, param, message):
    response = post(stack, body)
    assert response.status_code == status
    err = error(response)
    assert err["type"] == etype
    assert err["code"] == code
    assert err["param"] == param
    assert err["message"].startswith(message)
    assert response.headers["Content-Type"].startswith("application/json")
    assert_untouched(stack, redis_client, key_prefix)


def test_missing_project_header(stack, redis_client, key_prefix):
    response = post(stack, json.dumps(GOOD), {"Content-Type": "application/json"})
    assert response.status_code == 400
    assert error(response) == {
        "message": "Missing X-Project-Id header: every request must name its project.",
        "type": "invalid_request_error", "param": "X-Project-Id", "code": "missing_project"}
    assert_untouched(stack, redis_client, key_prefix)


def test_default_project_is_used_when_configured(make_stack):
    stack = make_stack(default_project="fallback-team")
    response = post(stack, json.dumps(GOOD), {"Content-Type": "application/json"})
    assert response.status_code == 200
    from datetime import datetime, timezone
    report = stack.run(read_usage(stack.services.ledger, "project", "fallback-team", "day", datetime.now(timezone.utc)))
    assert report["requests"] == 1


BAD_IDS = [
    ("too long", "a" * 129),
    ("slash", "team/a"),
    ("brace", "team{a}"),
    ("colon", "team:a"),
    ("space", "team a"),
    ("empty", ""),
]


@pytest.mark.parametrize("header", ["X-Project-Id", "X-Agent-Id", "X-Session-Id"])
@pytest.mark.parametrize("label,value", BAD_IDS, ids=[b[0] for b in BAD_IDS])
def test_ids_outside_the_allowed_form(stack, redis_client, key_prefix, header, label, value):
    headers = {**HEADERS, header: value}
    response = post(stack, json.dumps(GOOD), headers)
    assert response.status_code == 400
    err = error(response)
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "invalid_id"
    assert err["param"] == header
    assert err["message"].endswith("ids are 1-128 characters of letters, digits and . _ - @.")
    assert_untouched(stack, redis_client, key_prefix)


def _send_raw_header(stack, raw: bytes):
    host, port = stack.url.removeprefix("http://").split(":")
    body = json.dumps(GOOD).encode()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/v1/chat/completions")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(len(body)))
    conn.putheader("X-Project-Id", raw)
    conn.endheaders(body)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response, payload


@pytest.mark.parametrize("label,raw", [("non-ascii", "équipe".encode()), ("tab inside", b"team\ta")])
def test_ids_with_non_ascii_or_tab_bytes(stack, redis_client, key_prefix, label, raw):
    """Sent byte for byte (HTTP clients refuse to send such headers themselves)."""
    response, payload = _send_raw_header(stack, raw)
    assert response.status == 400
    err = json.loads(payload)["error"]
    assert err["code"] == "invalid_id"
    assert err["param"] == "X-Project-Id"
    assert_untouched(stack, redis_client, key_prefix)


@pytest.mark.parametrize("raw", [b"team\x01a", b"team\x7fa", b"team\x1ba"], ids=["soh", "del", "esc"])
def test_ids_with_control_characters_are_refused_by_the_http_layer(stack, redis_client, key_prefix, raw):
    """RFC 9110 forbids control characters in header values: the HTTP parser answers 400 itself."""
    response, payload = _send_raw_header(stack, raw)
    assert response.status == 400
    assert b"Invalid header value char" in payload
    assert_untouched(stack, redis_client, key_prefix)


def test_body_over_the_limit_is_413(stack, redis_client, key_prefix):
    big = json.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * (70 * 1024)}]})
    response = post(stack, big)
    assert response.status_code == 413
    err = error(response)
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "request_too_large"
    assert "exceeds the limit of 65536 bytes" in err["message"]
    assert_untouched(stack, redis_client, key_prefix)


def test_body_over_the_limit_without_content_length_is_413(stack, redis_client, key_prefix):
    big = json.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * (70 * 1024)}]}).encode()

    def chunks():
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    response = httpx.post(f"{stack.base_url}/chat/completions", content=chunks(), headers=HEADERS, timeout=30)
    assert response.status_code == 413
    assert error(response)["code"] == "request_too_large"
    assert_untouched(stack, redis_client, key_prefix)


@pytest.mark.parametrize("method,path", [("POST", "/v1/audio/speech"), ("GET", "/v2/anything"), ("GET", "/"),
                                         ("GET", "/v1/chat/completions")])
def test_other_paths_are_404_and_not_forwarded(stack, redis_client, key_prefix, method, path):
    response = httpx.request(method, f"{stack.url}{path}", headers=HEADERS)
    assert response.status_code == 404
    err = error(response)
    assert err["type"] == "not_found_error"
    assert err["code"] == "unknown_endpoint"
    assert path in err["message"]
    assert_untouched(stack, redis_client, key_prefix)
