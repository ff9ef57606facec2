"""Rate limits on the data plane: a key's or a project's requests and tokens per minute, every 429
on chat completions, responses and messages in its API family's shape with ``Retry-After`` and
OpenAI's ``x-ratelimit-*`` headers, nothing forwarded or recorded for a refused request; tokens
counted on the worst case and corrected at settle; limits set, shown and removed through the
admin API (with its exact 400s and 404s) and the CLI.

The ledger's clock is frozen 5 seconds into a minute, so each test runs in one rate window and
the waits the answers name are exact."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
import redis

from tests.e2e.test_keys_admin import ADMIN
from tests.e2e.test_keys_data_plane import ANTHROPIC_KEY, BODIES, OPENAI_KEY, PATHS, post
from tests.e2e.test_metrics import scrape, value
from tests.processes import clean_env

READ = {"Authorization": "Bearer read-secret"}


@pytest.fixture
def minute() -> int:
    """The current minute's start (epoch seconds): the ledger's clock stays 5 s into it."""
    return (int(time.time()) // 60) * 60


@pytest.fixture
def stack(make_stack, minute):
    now = minute + 5.0   # 55 s left in this minute
    return make_stack(admin_token="admin-secret", admin_read_token="read-secret", upstream_api_key=OPENAI_KEY,
                      anthropic_api_key=ANTHROPIC_KEY, clock=lambda: now)


def resets_at(minute: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minute + 60))


def new_key(stack, **body) -> dict:
    made = httpx.post(f"{stack.url}/admin/keys", headers=ADMIN, json={"project": "acme", **body})
    assert made.status_code == 201, made.text
    return made.json()


def bearer(key: dict) -> dict:
    return {"Authorization": f"Bearer {key['key']}"}


def rate_error(path: str, message: str, extra: dict) -> dict:
    if path == "/v1/messages":
        return {"type": "error", "error": {"type": "rate_limit_error", "message": message,
                                           "code": "rate_limit_exceeded", **extra}}
    return {"error": {"message": message, "type": "rate_limit_exceeded", "param": None,
                      "code": "rate_limit_exceeded", **extra}}


def refused_endpoint(path: str) -> str:
    """The endpoint label of a metered path, as events and metrics name it."""
    from proxy.apis.registry import METERED

    return METERED[path].name


def settled_events(stack, project: str = "acme") -> list[dict]:
    stack.run(stack.services.settled())
    return stack.events(project)


@pytest.mark.parametrize("path", PATHS)
def test_a_keys_rpm_refuses_the_request_over_it_with_429_and_rate_headers(stack, path, minute):
    key = new_key(stack, rpm=2)
    assert [post(stack, path, bearer(key)).status_code for _ in range(2)] == [200, 200]
    refused = post(stack, path, bearer(key))
    assert refused.status_code == 429
    message = (f"Rate limit reached for farebox key '{key['id']}' on requests per minute: limit 2, used 2, "
               "requested 1; try again in 55s.")
    assert refused.json() == rate_error(path, message, {
        "scope": "key", "scope_id": key["id"], "limit": "requests", "limit_value": 2, "used": 2, "requested": 1,
        "resets_at": resets_at(minute)})
    h = refused.headers
    assert (h["retry-after"], h["retry-after-ms"]) == ("55", "55000")
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"],
            h["x-ratelimit-reset-requests"]) == ("2", "0", "55s")
    assert "x-ratelimit-limit-tokens" not in h
    assert h["x-request-id"]
    assert len(stack.received) == 2                      # the refused request went nowhere
    assert len(settled_events(stack)) == 2               # and nothing was recorded for it
    assert refused.headers["x-request-id"] not in {e["request_id"] for e in settled_events(stack)}
    m = scrape(stack)
    assert value(m, "farebox_rate_limited_total", scope="key", limit="requests") == 1
    assert value(m, "farebox_requests_total", endpoint=refused_endpoint(path), status="429",
                 model=BODIES[path]["model"]) == 1


@pytest.mark.parametrize("path", PATHS)
def test_tokens_count_the_worst_case_then_what_was_used(stack, path):
    """With tpm = one worst case + one actual use, a request settles to what it used, so a second
    fits; a third does not, and its 429 shows the two actual uses counted."""
    bound = "max_output_tokens" if path == "/v1/responses" else "max_tokens"
    body = {**BODIES[path], bound: 200}
    probe = new_key(stack, tpm=1)   # its 429 says what the request counts: its worst case
    worst = post(stack, path, bearer(probe), body).json()["error"]["requested"]
    assert post(stack, path, bearer(new_key(stack)), body).status_code == 200
    [event] = settled_events(stack)
    used = int(event["prompt_tokens"]) + int(event["completion_tokens"])
    assert 200 < worst and used < worst
    key = new_key(stack, tpm=worst + used)
    assert post(stack, path, bearer(key), body).status_code == 200
    assert post(stack, path, bearer(key), body).status_code == 200
    refused = post(stack, path, bearer(key), body)
    assert refused.status_code == 429, refused.text
    body = refused.json()["error"]
    assert (body["limit"], body["used"], body["limit_value"]) == ("tokens", 2 * used, worst + used)
    assert body["requested"] == worst
    h = refused.headers
    assert h["x-ratelimit-limit-tokens"] == str(worst + used)
    assert h["x-ratelimit-remaining-tokens"] == str(worst - used)
    assert h["x-ratelimit-reset-tokens"] == "55s"
    assert len(settled_events(stack)) == 3
    assert len(stack.received) == 3


def test_a_request_alone_above_the_tpm_is_told_to_lower_its_bound(stack):
    key = new_key(stack, tpm=10)
    refused = post(stack, "/v1/chat/completions", bearer(key))
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert message.startswith(f"Rate limit reached for farebox key '{key['id']}' on tokens per minute: limit 10, "
                              "used 0 (requests in flight count their worst case until they finish), requested ")
    assert message.endswith("more than the limit: lower its output bound (max_tokens or the like).")
    assert stack.received == []


def test_a_project_limit_set_through_the_admin_api_applies_to_header_attribution(stack):
    put = httpx.put(f"{stack.url}/admin/limits/project/acme", headers=ADMIN, json={"rpm": 1})
    assert put.status_code == 200
    assert put.json() == {"scope": "project", "id": "acme", "rpm": 1, "tpm": None}
    assert httpx.get(f"{stack.url}/admin/limits/project/acme", headers=READ).json() == put.json()
    headers = {"X-Project-Id": "acme", "Authorization": "Bearer sk-client"}
    assert post(stack, "/v1/chat/completions", headers).status_code == 200
    refused = post(stack, "/v1/chat/completions", headers)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"] == (
        "Rate limit reached for project 'acme' on requests per minute: limit 1, used 1, requested 1; "
        "try again in 55s.")
    # A key of the project counts on the project's limit too.
    key = new_key(stack)
    assert post(stack, "/v1/chat/completions", bearer(key)).json()["error"]["scope"] == "project"
    # Another project is not limited.
    assert post(stack, "/v1/chat/completions", {**headers, "X-Project-Id": "other"}).status_code == 200
    deleted = httpx.delete(f"{stack.url}/admin/limits/project/acme", headers=ADMIN)
    assert deleted.json() == {"scope": "project", "id": "acme", "rpm": None, "tpm": None}
    assert post(stack, "/v1/chat/completions", headers).status_code == 200
    assert len(settled_events(stack)) == 2


def test_a_keys_limits_change_through_the_admin_api(stack):
    key = new_key(stack, rpm=1)
    assert post(stack, "/v1/chat/completions", bearer(key)).status_code == 200
    assert post(stack, "/v1/chat/completions", bearer(key)).status_code == 429
    changed = httpx.put(f"{stack.url}/admin/limits/key/{key['id']}", headers=ADMIN, json={"rpm": 3, "tpm": None})
    assert changed.json() == {"scope": "key", "id": key["id"], "rpm": 3, "tpm": None}
    assert httpx.get(f"{stack.url}/admin/keys/{key['id']}", headers=ADMIN).json()["rpm"] == 3
    assert [post(stack, "/v1/chat/completions", bearer(key)).status_code for _ in range(3)] == [200, 200, 429]


def _bad(message: str, param: str, code: str = "invalid_value") -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


@pytest.mark.parametrize(("method", "path", "body", "status", "expected"), [
    ("PUT", "/admin/limits/team/acme", {"rpm": 1}, 400,
     _bad("Unknown rate limit scope 'team': use project or key.", "scope")),
    ("PUT", "/admin/limits/project/ac%20me", {"rpm": 1}, 400,
     _bad("Invalid project id 'ac me': ids are 1-128 characters of letters, digits and . _ - @.", "id")),
    ("PUT", "/admin/limits/key/acme", {"rpm": 1}, 400,
     _bad("Invalid key id 'acme': key ids look like key_0123456789abcdef.", "id")),
    ("PUT", "/admin/limits/project/acme", {"rpm": 0}, 400,
     _bad("Invalid rpm 0: a whole number from 1 to 1000000000, or null for none.", "rpm")),
    ("PUT", "/admin/limits/project/acme", {"tpm": "5"}, 400,
     _bad("Invalid tpm '5': a whole number from 1 to 1000000000, or null for none.", "tpm")),
    ("PUT", "/admin/limits/project/acme", {"rpm": 1, "burst": 2}, 400,
     _bad("Unknown field 'burst': a rate limit takes rpm and tpm.", "burst")),
    ("PUT", "/admin/limits/key/key_0123456789abcdef", {"rpm": 1}, 404,
     {"error": {"message": "No key 'key_0123456789abcdef'.", "type": "not_found_error", "param": None,
                "code": "key_not_found"}}),
    ("GET", "/admin/limits/key/key_0123456789abcdef", None, 404,
     {"error": {"message": "No key 'key_0123456789abcdef'.", "type": "not_found_error", "param": None,
                "code": "key_not_found"}}),
])
def test_bad_limits_are_refused_exactly_and_change_nothing(stack, method, path, body, status, expected):
    answer = httpx.request(method, f"{stack.url}{path}", headers=ADMIN, json=body)
    assert answer.status_code == status, answer.text
    assert answer.json() == expected
    assert httpx.get(f"{stack.url}/admin/limits/project/acme", headers=ADMIN).json() == {
        "scope": "project", "id": "acme", "rpm": None, "tpm": None}


def test_the_read_token_may_not_change_limits(stack):
    for method, body in (("PUT", {"rpm": 1}), ("DELETE", None)):
        answer = httpx.request(method, f"{stack.url}/admin/limits/project/acme", headers=READ, json=body)
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "read_only_token"


def test_limits_through_the_cli_on_the_ledger(redis_url, key_prefix):
    env = {**clean_env(), "REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": key_prefix}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "proxy", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    done = cli("limit", "set", "project", "acme", "--rpm", "60", "--tpm", "90000")
    assert (done.returncode, done.stdout) == (0, "project acme rpm 60 tpm 90000\n"), done.stderr
    shown = cli("limit", "show", "project", "acme", "--json")
    assert shown.stdout.replace(" ", "").replace("\n", "") == '{"scope":"project","id":"acme","rpm":60,"tpm":90000}'
    bad = cli("limit", "set", "project", "acme", "--rpm", "0")
    assert bad.returncode == 2
    assert bad.stderr == "farebox: Invalid rpm 0: a whole number from 1 to 1000000000, or null for none.\n"
    gone = cli("limit", "delete", "project", "acme")
    assert gone.stdout == "project acme rpm none tpm none\n"
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.exists(f"{key_prefix}:{{acme}}:limits") == 0
    finally:
        client.close()


def counters(redis_url: str, prefix: str, scope: str, scope_id: str, window: int) -> tuple[int, int]:
    client = redis.Redis.from_url(redis_url)
    try:
        got = client.hgetall(f"{prefix}:{{acme}}:rl:{scope}:{window}:{scope_id}")
    finally:
        client.close()
    return int(got.get(b"r", 0)), int(got.get(b"t", 0))


def test_requests_drawn_from_budget_leases_count_exactly_once_settled(stack, redis_url, key_prefix, minute):
    """Sequential requests of one key draw from budget leases, which count many requests' worth at
    once; once they are settled and the leases have given back what they did not lend, the
    minute's counters hold exactly the requests made and the tokens they used."""
    key = new_key(stack, rpm=100_000, tpm=100_000_000)
    httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN, json={"limit_usd": "1000", "period": "day"})
    for _ in range(40):
        assert post(stack, "/v1/chat/completions", bearer(key)).status_code == 200
    assert stack.services.ledger.leases_granted >= 1
    time.sleep(0.6)   # the last lease closes after its life and gives back what it did not lend
    events = settled_events(stack)
    stack.run(stack.services.ledger.settled())
    used = sum(int(e["prompt_tokens"]) + int(e["completion_tokens"]) for e in events)
    assert len(events) == 40
    assert counters(redis_url, key_prefix, "key", key["id"], minute // 60) == (40, used)
