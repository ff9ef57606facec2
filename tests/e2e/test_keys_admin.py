"""farebox keys on the admin API: create (the secret once), list, show, revoke, rotate; every bad
input's 400; the read-only admin token; and no secret or hash in any answer but the issuing
one, nor anywhere in Redis."""

from __future__ import annotations

import re

import httpx
import pytest
import redis

ADMIN = {"Authorization": "Bearer admin-secret"}
READ = {"Authorization": "Bearer read-secret"}
ISSUED_FIELDS = {"id", "key", "project", "agent", "name", "models", "rpm", "tpm", "expires_at", "created_at"}


@pytest.fixture
def stack(make_stack):
    return make_stack(admin_token="admin-secret", admin_read_token="read-secret")


def create(stack, **body) -> httpx.Response:
    return httpx.post(f"{stack.url}/admin/keys", headers=ADMIN, json=body)


def redis_values(url: str, prefix: str) -> list[bytes]:
    """Every key name and value under ``prefix`` (strings, hashes, sets, streams)."""
    client = redis.Redis.from_url(url)
    out: list[bytes] = []
    try:
        for name in client.scan_iter(match=f"{prefix}:*", count=1000):
            out.append(name)
            kind = client.type(name)
            if kind == b"string":
                out.append(client.get(name) or b"")
            elif kind == b"hash":
                for field, value in client.hgetall(name).items():
                    out += [field, value]
            elif kind == b"set":
                out += list(client.smembers(name))
            elif kind == b"zset":
                out += [m for m, _ in client.zrange(name, 0, -1, withscores=True)]
            elif kind == b"stream":
                for _, fields in client.xrange(name):
                    for field, value in fields.items():
                        out += [field, value]
    finally:
        client.close()
    return out


def test_create_answers_201_with_the_secret_once(stack, redis_url, key_prefix):
    made = create(stack, project="acme", agent="planner", name="ci bot", models=["gpt-4o-mini", "claude-*"],
                  rpm=60, tpm=10000, expires_in="30d")
    assert made.status_code == 201
    body = made.json()
    assert set(body) == ISSUED_FIELDS
    assert re.fullmatch(r"fbk_[A-Za-z0-9_-]{59}", body["key"])
    assert re.fullmatch(r"key_[0-9a-f]{16}", body["id"])
    assert (body["project"], body["agent"], body["name"]) == ("acme", "planner", "ci bot")
    assert body["models"] == ["gpt-4o-mini", "claude-*"] and (body["rpm"], body["tpm"]) == (60, 10000)
    assert body["expires_at"].endswith("Z") and body["created_at"].endswith("Z")

    shown = httpx.get(f"{stack.url}/admin/keys/{body['id']}", headers=ADMIN)
    assert shown.status_code == 200
    view = shown.json()
    assert "key" not in view and "hash" not in view and view["state"] == "active"
    assert {k: view[k] for k in ISSUED_FIELDS - {"key"}} == {k: body[k] for k in ISSUED_FIELDS - {"key"}}
    listed = httpx.get(f"{stack.url}/admin/keys?project=acme", headers=ADMIN).json()["keys"]
    assert [k["id"] for k in listed] == [body["id"]] and listed[0] == view
    assert httpx.get(f"{stack.url}/admin/keys?project=other", headers=ADMIN).json() == {"keys": []}
    for answer in (shown.text, httpx.get(f"{stack.url}/admin/keys?project=acme", headers=ADMIN).text):
        assert body["key"] not in answer and body["key"][20:] not in answer

    stored = b"\n".join(redis_values(redis_url, key_prefix))
    assert body["key"].encode() not in stored and body["key"][20:].encode() not in stored


def test_defaults_are_null(stack):
    body = create(stack, project="acme").json()
    assert {k: body[k] for k in ("agent", "name", "models", "rpm", "tpm", "expires_at")} == dict.fromkeys(
        ("agent", "name", "models", "rpm", "tpm", "expires_at"))


def test_revoke_and_rotate(stack):
    body = create(stack, project="acme").json()
    rotated = httpx.post(f"{stack.url}/admin/keys/{body['id']}/rotate", headers=ADMIN)
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["id"] == body["id"] and new["key"] != body["key"] and set(new) == ISSUED_FIELDS
    revoked = httpx.delete(f"{stack.url}/admin/keys/{body['id']}", headers=ADMIN)
    assert revoked.status_code == 200
    assert revoked.json()["state"] == "revoked" and revoked.json()["revoked_at"].endswith("Z")
    again = httpx.delete(f"{stack.url}/admin/keys/{body['id']}", headers=ADMIN)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    refused = httpx.post(f"{stack.url}/admin/keys/{body['id']}/rotate", headers=ADMIN)
    assert refused.status_code == 400
    assert refused.json() == {"error": {"message": f"Key '{body['id']}' is revoked: create a new key instead.",
                                        "type": "invalid_request_error", "param": "id", "code": "invalid_value"}}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_key_is_404(stack, method):
    answer = httpx.request(method, f"{stack.url}/admin/keys/key_0000000000000000", headers=ADMIN)
    assert answer.status_code == 404
    assert answer.json() == {"error": {"message": "No key 'key_0000000000000000'.", "type": "not_found_error",
                                       "param": None, "code": "key_not_found"}}


def _error(message: str, param: str | None) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": "invalid_value"}}


@pytest.mark.parametrize("body,param,message", [
    ({}, "project", "'project' is required: the project the key is bound to."),
    ({"project": "a b"}, "project", "Invalid project 'a b': ids are 1-128 characters of letters, digits and . _ - @."),
    ({"project": 5}, "project", "Invalid project 5: ids are 1-128 characters of letters, digits and . _ - @."),
    ({"project": "acme", "agent": "x/y"}, "agent",
     "Invalid agent 'x/y': ids are 1-128 characters of letters, digits and . _ - @."),
    ({"project": "acme", "name": 7}, "name", "Invalid name 7: printable text of at most 200 characters."),
    ({"project": "acme", "models": []}, "models",
     'Invalid models []: a list of 1 to 100 model names or glob patterns such as ["gpt-4o-mini", "claude-*"]; '
     "leave it out to allow every model."),
    ({"project": "acme", "models": "gpt-4o"}, "models",
     "Invalid models 'gpt-4o': a list of 1 to 100 model names or glob patterns such as [\"gpt-4o-mini\", "
     "\"claude-*\"]; leave it out to allow every model."),
    ({"project": "acme", "rpm": 0}, "rpm", "Invalid rpm 0: a whole number from 1 to 1000000000."),
    ({"project": "acme", "tpm": "10"}, "tpm", "Invalid tpm '10': a whole number from 1 to 1000000000."),
    ({"project": "acme", "rpm": 1.5}, "rpm", "Invalid rpm 1.5: a whole number from 1 to 1000000000."),
    ({"project": "acme", "expires_in": "30"}, "expires_in",
     "Invalid expires_in '30': use a duration such as 90s, 15m, 12h or 30d (at most ten years)."),
    ({"project": "acme", "expires_in": "0d"}, "expires_in",
     "Invalid expires_in '0d': use a duration such as 90s, 15m, 12h or 30d (at most ten years)."),
    ({"project": "acme", "expires_in": "4000d"}, "expires_in",
     "Invalid expires_in '4000d': use a duration such as 90s, 15m, 12h or 30d (at most ten years)."),
    ({"project": "acme", "budget": "5"}, "budget",
     "Unknown field 'budget': a key takes project, agent, name, models, rpm, tpm, expires_in."),
])
def test_bad_create_is_400_and_stores_nothing(stack, body, param, message):
    answer = create(stack, **body)
    assert answer.status_code == 400
    assert answer.json() == _error(message, param)
    assert httpx.get(f"{stack.url}/admin/keys?project=acme", headers=ADMIN).json() == {"keys": []}


def test_bad_bodies_and_queries_are_400(stack):
    not_json = httpx.post(f"{stack.url}/admin/keys", headers=ADMIN, content=b"{")
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    no_project = httpx.get(f"{stack.url}/admin/keys", headers=ADMIN)
    assert no_project.status_code == 400
    assert no_project.json() == _error("Query parameter 'project' is required, e.g. /admin/keys?project=acme.",
                                       "project")
    extra = httpx.get(f"{stack.url}/admin/keys?project=acme&scope=key", headers=ADMIN)
    assert extra.status_code == 400 and extra.json() == _error("Unknown query parameter 'scope': use project.",
                                                               "scope")
    bad_id = httpx.get(f"{stack.url}/admin/keys/fbk_nope", headers=ADMIN)
    assert bad_id.status_code == 400
    assert bad_id.json() == _error("Invalid key id 'fbk_nope': key ids look like key_0123456789abcdef.", "id")
    bad_project = httpx.get(f"{stack.url}/admin/keys?project=a%20b", headers=ADMIN)
    assert bad_project.status_code == 400
    assert bad_project.json() == _error(
        "Invalid project 'a b': ids are 1-128 characters of letters, digits and . _ - @.", "project")


def test_the_read_token_reads_and_may_not_write(stack):
    made = create(stack, project="acme").json()
    assert httpx.get(f"{stack.url}/admin/keys?project=acme", headers=READ).status_code == 200
    assert httpx.get(f"{stack.url}/admin/keys/{made['id']}", headers=READ).status_code == 200
    assert httpx.get(f"{stack.url}/admin/budgets", headers=READ).status_code == 200
    for method, path, body in (("POST", "/admin/keys", {"project": "acme"}),
                               ("DELETE", f"/admin/keys/{made['id']}", None),
                               ("POST", f"/admin/keys/{made['id']}/rotate", None),
                               ("PUT", "/admin/budgets/project/acme", {"limit_usd": "5"}),
                               ("DELETE", "/admin/budgets/project/acme", None)):
        answer = httpx.request(method, f"{stack.url}{path}", headers=READ, json=body)
        assert answer.status_code == 403, (method, path)
        assert answer.json() == {"error": {
            "message": "The read-only admin token allows GET requests only: use the admin token to change anything.",
            "type": "permission_error", "param": None, "code": "read_only_token"}}
    assert httpx.get(f"{stack.url}/admin/keys/{made['id']}", headers=ADMIN).json()["state"] == "active"
    assert httpx.get(f"{stack.url}/admin/budgets", headers=ADMIN).json() == {"budgets": []}
    wrong = httpx.get(f"{stack.url}/admin/keys?project=acme", headers={"Authorization": "Bearer read"})
    assert wrong.status_code == 401


def test_a_read_token_alone_enables_reading_only(make_stack):
    stack = make_stack(admin_read_token="read-secret")
    assert httpx.get(f"{stack.url}/admin/budgets", headers=READ).status_code == 200
    assert httpx.post(f"{stack.url}/admin/keys", headers=READ, json={"project": "acme"}).status_code == 403
    assert httpx.get(f"{stack.url}/admin/budgets", headers=ADMIN).status_code == 401
