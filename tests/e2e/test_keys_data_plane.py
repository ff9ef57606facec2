"""farebox keys on the data plane: a key decides who pays and is never sent upstream; every 401
and 403 on chat completions, responses and messages, each in its API family's error shape,
with nothing forwarded and nothing recorded; ``auth = "keys"``; and the secret in no log line,
Redis value or event."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.e2e.test_keys_admin import ADMIN, redis_values

OPENAI_KEY, ANTHROPIC_KEY = "sk-farebox-own", "sk-ant-farebox-own"
BODIES = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 16},
    "/v1/messages": {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
}
PATHS = list(BODIES)


@pytest.fixture
def stack(make_stack):
    return make_stack(admin_token="admin-secret", upstream_api_key=OPENAI_KEY, anthropic_api_key=ANTHROPIC_KEY)


def new_key(stack, **body) -> dict:
    made = httpx.post(f"{stack.url}/admin/keys", headers=ADMIN, json={"project": "acme", **body})
    assert made.status_code == 201, made.text
    return made.json()


def post(stack, path: str, headers: dict, body: dict | None = None) -> httpx.Response:
    return httpx.post(f"{stack.url}{path}", headers=headers, json=body or BODIES[path], timeout=30)


def error_of(path: str, status: int, message: str, code: str, param: str | None = None) -> dict:
    """The error body of ``path``'s API family."""
    if path == "/v1/messages":
        error = {"type": "authentication_error" if status == 401 else "permission_error", "message": message,
                 "code": code}
        if param is not None:
            error["param"] = param
        return {"type": "error", "error": error}
    return {"error": {"message": message, "type": "authentication_error" if status == 401 else "permission_error",
                      "param": param, "code": code}}


def assert_nothing_happened(stack, project: str = "acme") -> None:
    assert stack.received == []
    stack.run(stack.services.settled())
    assert stack.events(project) == []


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("header", ["Authorization", "x-api-key", "api-key"])
def test_a_key_decides_who_pays_and_never_goes_upstream(stack, path, header, caplog):
    caplog.set_level(logging.DEBUG)
    key = new_key(stack, agent="planner")
    secret = key["key"]
    value = f"Bearer {secret}" if header == "Authorization" else secret
    answer = post(stack, path, {header: value, "X-Session-Id": "run-1"})
    assert answer.status_code == 200, answer.text
    [sent] = stack.received
    headers = sent["headers"]
    assert secret not in repr(headers)
    if path == "/v1/messages":
        assert headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in headers
    else:
        assert headers["authorization"] == f"Bearer {OPENAI_KEY}"
    stack.run(stack.services.settled())
    [event] = stack.events("acme")
    assert (event["project"], event["agent"], event["session"], event["key_id"]) == ("acme", "planner", "run-1",
                                                                                     key["id"])
    assert secret not in repr(event)
    assert all(secret not in record.getMessage() for record in caplog.records)


def test_the_header_naming_the_keys_own_project_and_agent_is_fine(stack):
    key = new_key(stack, agent="planner")
    answer = post(stack, "/v1/chat/completions", {"Authorization": f"Bearer {key['key']}", "X-Project-Id": "acme",
                                                  "X-Agent-Id": "planner"})
    assert answer.status_code == 200


def test_an_unpinned_key_takes_the_agent_header(stack):
    key = new_key(stack)
    assert post(stack, "/v1/chat/completions", {"Authorization": f"Bearer {key['key']}",
                                                "X-Agent-Id": "writer"}).status_code == 200
    stack.run(stack.services.settled())
    assert stack.events("acme")[0]["agent"] == "writer"


@pytest.mark.parametrize("path", PATHS)
def test_a_header_naming_another_project_is_403(stack, path):
    key = new_key(stack)
    answer = post(stack, path, {"Authorization": f"Bearer {key['key']}", "X-Project-Id": "other"})
    assert answer.status_code == 403
    assert answer.json() == error_of(
        path, 403, "This farebox key belongs to project 'acme'; the X-Project-Id header names another. Leave the "
        "header out or name the key's project.", "project_mismatch", "X-Project-Id")
    assert_nothing_happened(stack)
    assert_nothing_happened(stack, "other")


@pytest.mark.parametrize("path", PATHS)
def test_a_header_naming_another_agent_than_the_keys_is_403(stack, path):
    key = new_key(stack, agent="planner")
    answer = post(stack, path, {"x-api-key": key["key"], "X-Agent-Id": "writer"})
    assert answer.status_code == 403
    assert answer.json() == error_of(
        path, 403, "This farebox key belongs to agent 'planner'; the X-Agent-Id header names another. Leave the "
        "header out or name the key's agent.", "agent_mismatch", "X-Agent-Id")
    assert_nothing_happened(stack)


@pytest.mark.parametrize("path", PATHS)
def test_a_model_outside_the_keys_models_is_403(stack, path):
    key = new_key(stack, models=["gpt-4.1*", "claude-opus-*"])
    answer = post(stack, path, {"Authorization": f"Bearer {key['key']}"})
    model = BODIES[path]["model"]
    assert answer.status_code == 403
    assert answer.json() == error_of(path, 403, f"This farebox key may not use model '{model}': it allows gpt-4.1*, "
                                     "claude-opus-*.", "model_not_allowed", "model")
    assert_nothing_happened(stack)
    allowed = new_key(stack, models=["gpt-4o-*", "claude-haiku-*"])
    assert post(stack, path, {"Authorization": f"Bearer {allowed['key']}"}).status_code == 200


def _revoked(stack) -> str:
    key = new_key(stack)
    httpx.delete(f"{stack.url}/admin/keys/{key['id']}", headers=ADMIN).raise_for_status()
    return key["key"]


def _rotated_away(stack) -> str:
    key = new_key(stack)
    httpx.post(f"{stack.url}/admin/keys/{key['id']}/rotate", headers=ADMIN).raise_for_status()
    return key["key"]


def _unknown(stack) -> str:
    secret = new_key(stack)["key"]
    return secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")


INVALID = {
    "unknown": (_unknown, "Invalid farebox key: no such key (check that it was copied whole)."),
    "malformed": (lambda stack: "fbk_short", "Invalid farebox key: it is not in the form farebox issues (fbk_ and 59 "
                  "characters)."),
    "revoked": (_revoked, "This farebox key was revoked."),
    "rotated away": (_rotated_away, "Invalid farebox key: no such key (check that it was copied whole)."),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_key_is_401(stack, path, case):
    make, message = INVALID[case]
    secret = make(stack)
    answer = post(stack, path, {"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 401
    assert answer.json() == error_of(path, 401, message, "invalid_api_key")
    assert_nothing_happened(stack)


@pytest.mark.parametrize("path", PATHS)
def test_an_expired_key_is_401(stack, path):
    key = new_key(stack, expires_in="90s")
    auth = stack.services.auth
    auth.wall = lambda: 4_000_000_000.0   # far past the key's expiry
    answer = post(stack, path, {"x-api-key": key["key"]})
    assert answer.status_code == 401
    body = answer.json()
    assert body == error_of(path, 401, body["error"]["message"], "invalid_api_key")
    assert body["error"]["message"].startswith(f"This farebox key expired at {key['expires_at'][:10]}")
    assert_nothing_happened(stack)


@pytest.mark.parametrize("path", PATHS)
def test_auth_keys_refuses_a_request_without_a_farebox_key(make_stack, path):
    stack = make_stack(admin_token="admin-secret", auth="keys", upstream_api_key=OPENAI_KEY,
                       anthropic_api_key=ANTHROPIC_KEY)
    answer = post(stack, path, {"Authorization": "Bearer sk-client", "x-api-key": "sk-ant-client",
                                "X-Project-Id": "acme"})
    assert answer.status_code == 401
    assert answer.json() == error_of(path, 401, "This farebox requires a farebox key: send Authorization: Bearer "
                                     "fbk_... (or x-api-key: fbk_...).", "missing_api_key")
    assert_nothing_happened(stack)


def test_auth_keys_forwards_only_farebox_credentials(make_stack):
    stack = make_stack(admin_token="admin-secret", auth="keys", upstream_api_key=OPENAI_KEY,
                       anthropic_api_key=ANTHROPIC_KEY)
    key = new_key(stack)
    answer = post(stack, "/v1/chat/completions", {"x-api-key": key["key"], "api-key": "sk-client-azure"})
    assert answer.status_code == 200
    headers = stack.received[0]["headers"]
    assert headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "x-api-key" not in headers and "api-key" not in headers
    answer = post(stack, "/v1/messages", {"Authorization": f"Bearer {key['key']}", "x-api-key": "sk-ant-client"})
    assert answer.status_code == 200
    assert stack.received[1]["headers"]["x-api-key"] == ANTHROPIC_KEY


def test_auth_keys_covers_the_pass_through_endpoints(make_stack):
    stack = make_stack(admin_token="admin-secret", auth="keys", upstream_api_key=OPENAI_KEY,
                       anthropic_api_key=ANTHROPIC_KEY)
    refused = httpx.get(f"{stack.url}/v1/models", headers={"Authorization": "Bearer sk-client"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"
    count = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}
    refused = httpx.post(f"{stack.url}/v1/messages/count_tokens", json=count)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    assert stack.received == []
    key = new_key(stack, models=["gpt-*"])
    listed = httpx.get(f"{stack.url}/v1/models", headers={"Authorization": f"Bearer {key['key']}"})
    assert listed.status_code == 200
    assert stack.received[0]["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    outside = httpx.post(f"{stack.url}/v1/messages/count_tokens", json=count, headers={"x-api-key": key["key"]})
    assert outside.status_code == 403 and outside.json()["error"]["code"] == "model_not_allowed"
    other = httpx.get(f"{stack.url}/v1/models", headers={"Authorization": f"Bearer {key['key']}",
                                                          "X-Project-Id": "other"})
    assert other.status_code == 403
    assert len(stack.received) == 1


def test_passthrough_mode_without_a_key_works_as_before(stack):
    answer = post(stack, "/v1/chat/completions", {"Authorization": "Bearer sk-client", "X-Project-Id": "acme"})
    assert answer.status_code == 200
    stack.run(stack.services.settled())
    assert stack.events("acme")[0]["key_id"].startswith("k")


def test_a_key_is_refused_when_farebox_holds_no_upstream_key(make_stack):
    stack = make_stack(admin_token="admin-secret")   # no upstream_api_key, no anthropic_api_key
    key = new_key(stack)
    for path in PATHS:
        answer = post(stack, path, {"Authorization": f"Bearer {key['key']}"})
        assert answer.status_code == 500
        assert answer.json()["error"]["code"] == "upstream_key_missing"
        assert "a farebox key is never sent upstream" in answer.json()["error"]["message"]
    assert_nothing_happened(stack)


def test_the_secret_is_in_no_redis_value_and_no_event(stack, redis_url, key_prefix, caplog):
    caplog.set_level(logging.DEBUG)
    key = new_key(stack)
    for path in PATHS:
        assert post(stack, path, {"Authorization": f"Bearer {key['key']}"}).status_code == 200
    assert post(stack, PATHS[0], {"Authorization": f"Bearer {key['key']}", "X-Project-Id": "x"}).status_code == 403
    stack.run(stack.services.settled())
    assert len(stack.events("acme")) == 3
    stored = b"\n".join(redis_values(redis_url, key_prefix))
    secret = key["key"]
    assert secret.encode() not in stored and secret[20:].encode() not in stored
    assert key["id"].encode() in stored   # the events name the key by its id
    assert all(secret[20:] not in record.getMessage() for record in caplog.records)


def test_the_key_is_the_key_budget_scope(stack):
    key = new_key(stack)
    other = new_key(stack)
    put = httpx.put(f"{stack.url}/admin/budgets/key/acme/{key['id']}", headers=ADMIN,
                    json={"limit_usd": "0.000001", "period": "day"})
    assert put.status_code == 200, put.text
    refused = post(stack, "/v1/chat/completions", {"Authorization": f"Bearer {key['key']}"})
    assert refused.status_code == 402
    assert (refused.json()["error"]["scope"], refused.json()["error"]["scope_id"]) == ("key", f"acme/{key['id']}")
    assert stack.received == []
    assert post(stack, "/v1/chat/completions", {"Authorization": f"Bearer {other['key']}"}).status_code == 200
