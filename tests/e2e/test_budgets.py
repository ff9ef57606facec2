"""Hard budgets end to end: reserve before forwarding, 402, clamping, soft budgets, admin API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import httpx
import openai
from openai import AsyncOpenAI, OpenAI

from pricing.cost import Usage, cost_nano, worst_case_nano
from pricing.money import nano_to_usd, usd_to_nano
from proxy.apis.chat_prompt import count_chat_prompt
from proxy.ledger.reports import read_usage
from tests.processes import free_port

ADMIN = {"Authorization": "Bearer admin-secret"}
HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "planner", "X-Session-Id": "run-42"}
MESSAGES = [{"role": "user", "content": "Give me one line."}]
MODEL = "gpt-4o-mini"


def put_budget(stack, scope, scope_id, limit, period="month", mode="hard"):
    response = httpx.put(f"{stack.url}/admin/budgets/{scope}/{scope_id}", headers=ADMIN,
                         json={"limit_usd": limit, "period": period, "mode": mode})
    assert response.status_code == 200, response.text
    return response.json()


def spent(stack, scope="project", scope_id="acme", period="month"):
    return usd_to_nano(stack.run(read_usage(stack.services.ledger, scope, scope_id, period,
                                                                      datetime.now(timezone.utc)))["cost_usd"])


def per_request_cost(stack, max_tokens=16):
    price = stack.services.catalog.resolve(MODEL)
    prompt = count_chat_prompt(MODEL, {"messages": MESSAGES})
    return worst_case_nano(price, prompt, max_tokens), cost_nano(price, Usage(prompt, max_tokens))


async def _burst(base_url: str | list[str], count: int, headers=HEADERS, max_tokens=16):
    urls = base_url if isinstance(base_url, list) else [base_url]
    clients = [AsyncOpenAI(base_url=u, api_key="x", default_headers=headers, max_retries=0, timeout=60) for u in urls]

    async def one(i):
        try:
            r = await clients[i % len(clients)].chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=max_tokens)
            return r
        except openai.APIStatusError as exc:
            return exc

    try:
        return await asyncio.gather(*[one(i) for i in range(count)])
    finally:
        for c in clients:
            await c.close()


def _check_burst(stack, results, limit_nano):
    """Every refusal a 402 of the project budget, nothing refused forwarded, and what was
    recorded within the limit and equal to what the allowed answers cost."""
    stack_received, recorded_nano, price = stack.received, spent(stack), stack.services.catalog.resolve(MODEL)
    allowed = [r for r in results if not isinstance(r, openai.APIStatusError)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert all(r.status_code == 402 for r in refused)
    assert all(r.body["type"] == "budget_exceeded" and r.body["scope"] == "project" for r in refused)
    actual = sum(cost_nano(price, Usage(r.usage.prompt_tokens, r.usage.completion_tokens)) for r in allowed)
    assert recorded_nano <= limit_nano
    assert recorded_nano == actual
    chat_calls = [r for r in stack_received if r["path"] == "/v1/chat/completions"]
    assert len(chat_calls) == len(allowed), "a refused request must never reach the upstream"
    return allowed, refused


def _check_settled(stack, spent_nano):
    """The project budget as the admin API shows it once the process's leases closed (a read
    leaves them open): nothing held any more, ``spent_nano`` spent."""
    stack.run(stack.services.ledger.close_leases())
    status = httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).json()
    assert status["reserved_usd"] == "0.00"
    assert usd_to_nano(status["spent_usd"]) == spent_nano


async def test_200_concurrent_requests_never_overspend(make_stack):
    stack = make_stack(admin_token="admin-secret")
    worst, actual = per_request_cost(stack)
    assert worst == actual  # the fake replies exactly max_tokens tokens here
    limit_nano = 57 * worst + worst // 2
    put_budget(stack, "project", "acme", nano_to_usd(limit_nano))
    results = await _burst(stack.base_url, 200)
    allowed, refused = _check_burst(stack, results, limit_nano)
    assert len(allowed) == 57 and len(refused) == 143
    _check_settled(stack, 57 * actual)


async def _burst_beside_one_in_flight(stack, count: int):
    """One slow request first (three seconds at the upstream), then, once the upstream has it,
    ``count`` at once: each of them is reserved while another of the same attribution is in
    flight, as under steady load, however slow the machine is."""
    slow = asyncio.ensure_future(_burst(stack.base_url, 1, headers={**HEADERS, "X-Fake-Latency-Ms": "3000"}))
    for _ in range(400):
        if stack.received:
            break
        await asyncio.sleep(0.025)
    assert len(stack.received) == 1, "the slow request did not reach the upstream within 10 s"
    results = await _burst(stack.base_url, count)
    return [*(await slow), *results]


async def test_concurrent_requests_draw_from_budget_leases_and_are_recorded_exactly(make_stack):
    stack = make_stack(admin_token="admin-secret")
    worst, actual = per_request_cost(stack)
    put_budget(stack, "project", "acme", nano_to_usd(10_000 * worst))
    results = await _burst_beside_one_in_flight(stack, 199)
    allowed, refused = _check_burst(stack, results, 10_000 * worst)
    assert len(allowed) == 200 and not refused
    assert stack.services.ledger.leases_granted > 0
    # Reading a budget through the proxy first gives back what its leases did not lend.
    _check_settled(stack, 200 * actual)


async def test_with_leases_a_burst_still_gets_exactly_what_the_budget_pays_for(make_stack):
    stack = make_stack(admin_token="admin-secret", budget_lease_requests=4)
    worst, actual = per_request_cost(stack)
    assert worst == actual
    # Room for 150: leases of 4 worst cases while they are at most a quarter of the room left
    # (down to 16 worst cases of room), then every request on its own.
    limit_nano = 150 * worst + worst // 2
    put_budget(stack, "project", "acme", nano_to_usd(limit_nano))
    results = await _burst_beside_one_in_flight(stack, 199)
    allowed, refused = _check_burst(stack, results, limit_nano)
    assert len(allowed) == 150 and len(refused) == 50
    assert stack.services.ledger.leases_granted > 0


def _start_proxy_process(port: int, upstream: str, redis_url: str, prefix: str, data_dir: str) -> subprocess.Popen:
    env = {**os.environ, "REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": prefix, "FAREBOX_ADMIN_TOKEN": "admin-secret",
           "FAREBOX_DATA_DIR": data_dir}
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port), "--upstream", upstream,
                             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("proxy process did not become ready")


async def test_two_proxy_processes_sharing_one_redis_never_overspend(make_stack, redis_url, key_prefix, tmp_path):
    stack = make_stack(admin_token="admin-secret")
    worst, _ = per_request_cost(stack)
    limit_nano = 40 * worst + 7
    put_budget(stack, "project", "acme", nano_to_usd(limit_nano))
    ports = [free_port(), free_port()]
    procs = [_start_proxy_process(p, f"{stack.upstream_url}/v1", redis_url, key_prefix, str(tmp_path / f"d{p}"))
             for p in ports]
    try:
        results = await _burst([f"http://127.0.0.1:{p}/v1" for p in ports], 200)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    allowed, refused = _check_burst(stack, results, limit_nano)
    assert len(allowed) == 40 and len(refused) == 160


def test_402_body_and_retry_after(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    put_budget(stack, "project", "acme", "0.000001", period="day")
    response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS,
                          json={"model": MODEL, "messages": MESSAGES, "max_tokens": 100})
    assert response.status_code == 402
    err = response.json()["error"]
    worst, _ = per_request_cost(stack, 100)
    now = datetime.now(timezone.utc)
    tomorrow = datetime.fromtimestamp((now.timestamp() // 86400 + 1) * 86400, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert err == {
        "message": f"Budget exceeded for project 'acme': daily limit $0.000001, spent $0.00, this request may cost up "
                   f"to ${nano_to_usd(worst)}; resets {tomorrow}",
        "type": "budget_exceeded", "code": "budget_exceeded", "param": None, "scope": "project", "scope_id": "acme",
        "period": "day", "limit_usd": "0.000001", "spent_usd": "0.00", "reserved_usd": "0.00",
        "request_max_cost_usd": nano_to_usd(worst), "resets_at": tomorrow,
    }
    assert 0 < int(response.headers["Retry-After"]) <= 86400
    assert stack.received == []


def test_total_budget_402_has_no_retry_after(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    put_budget(stack, "project", "acme", "0.000001", period="total")
    response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS,
                          json={"model": MODEL, "messages": MESSAGES, "max_tokens": 100})
    assert response.status_code == 402
    assert response.json()["error"]["resets_at"] is None
    assert "Retry-After" not in response.headers


def test_clamping_lowers_max_tokens_to_what_the_budget_pays_for(make_stack):
    stack = make_stack(admin_token="admin-secret", min_output_tokens=256)
    price = stack.services.catalog.resolve(MODEL)
    prompt = count_chat_prompt(MODEL, {"messages": MESSAGES})
    limit = worst_case_nano(price, prompt, 300)  # room for 300 output tokens, no more
    put_budget(stack, "project", "acme", nano_to_usd(limit))
    raw = OpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0) \
        .chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES,
                                                   extra_headers={"X-Fake-Reply-Tokens": "1000"})
    reply = raw.parse()
    assert stack.received[-1]["body"]["max_completion_tokens"] == 300
    assert raw.headers["X-Farebox-Max-Tokens-Clamped"] == "300"
    assert reply.usage.completion_tokens == 300
    assert spent(stack) <= limit
    # Now less than the minimum output is left: refused.
    second = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json={"model": MODEL, "messages": MESSAGES})
    assert second.status_code == 402
    assert len(stack.received) == 1


def test_clamping_can_be_turned_off(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    price = stack.services.catalog.resolve(MODEL)
    prompt = count_chat_prompt(MODEL, {"messages": MESSAGES})
    put_budget(stack, "project", "acme", nano_to_usd(worst_case_nano(price, prompt, 300)))
    response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json={"model": MODEL, "messages": MESSAGES})
    assert response.status_code == 402
    assert stack.received == []


def test_allowed_response_carries_the_remaining_budget(make_stack):
    stack = make_stack(admin_token="admin-secret")
    put_budget(stack, "project", "acme", "5")
    worst, actual = per_request_cost(stack)
    raw = OpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0) \
        .chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=16)
    assert raw.headers["X-Farebox-Budget-Remaining-USD"] == nano_to_usd(usd_to_nano("5") - worst)


def test_requests_one_after_another_draw_from_a_lease_and_see_the_remaining_budget_exactly(make_stack):
    stack = make_stack(admin_token="admin-secret")
    put_budget(stack, "project", "acme", "5")
    _, actual = per_request_cost(stack, max_tokens=4)  # the upstream answers 4 of the 16 tokens
    client = OpenAI(base_url=stack.base_url, api_key="x", default_headers={**HEADERS, "X-Fake-Reply-Tokens": "4"},
                    max_retries=0)
    remaining = [client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=16)
                 .headers["X-Farebox-Budget-Remaining-USD"] for _ in range(8)]
    # Back to back, the second asks for a lease and the rest draw from it; each still says what
    # a reservation of its own would have left once its actual cost is spent: that of those
    # before it and its own.
    assert stack.services.ledger.leases_granted >= 1
    assert remaining == [nano_to_usd(usd_to_nano("5") - (n + 1) * actual) for n in range(8)]
    assert len(stack.received) == 8
    _check_settled(stack, 8 * actual)


def test_agent_and_session_budgets_block_only_their_own_requests(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    put_budget(stack, "agent", "acme/planner", "0")
    put_budget(stack, "session", "acme/run-9", "0")
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16}
    url = f"{stack.base_url}/chat/completions"
    blocked_agent = httpx.post(url, headers={"X-Project-Id": "acme", "X-Agent-Id": "planner"}, json=body)
    assert blocked_agent.status_code == 402 and blocked_agent.json()["error"]["scope"] == "agent"
    assert blocked_agent.json()["error"]["scope_id"] == "acme/planner"
    other_agent = httpx.post(url, headers={"X-Project-Id": "acme", "X-Agent-Id": "writer"}, json=body)
    assert other_agent.status_code == 200
    blocked_session = httpx.post(url, headers={"X-Project-Id": "acme", "X-Agent-Id": "writer", "X-Session-Id": "run-9"},
                                 json=body)
    assert blocked_session.status_code == 402 and blocked_session.json()["error"]["scope"] == "session"
    other_project = httpx.post(url, headers={"X-Project-Id": "other", "X-Agent-Id": "planner"}, json=body)
    assert other_project.status_code == 200
    # DELETE lifts the block.
    assert httpx.delete(f"{stack.url}/admin/budgets/agent/acme/planner", headers=ADMIN).status_code == 200
    assert httpx.post(url, headers={"X-Project-Id": "acme", "X-Agent-Id": "planner"}, json=body).status_code == 200


def test_soft_budgets_never_refuse(make_stack):
    stack = make_stack(admin_token="admin-secret")
    put_budget(stack, "project", "acme", "0", mode="soft")
    for _ in range(3):
        response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS,
                              json={"model": MODEL, "messages": MESSAGES, "max_tokens": 16})
        assert response.status_code == 200
    status = httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).json()
    assert usd_to_nano(status["spent_usd"]) > 0


def test_upstream_error_releases_the_reservation(make_stack):
    stack = make_stack(admin_token="admin-secret")
    put_budget(stack, "project", "acme", "5")
    response = httpx.post(f"{stack.base_url}/chat/completions", headers={**HEADERS, "X-Fake-Status": "500"},
                          json={"model": MODEL, "messages": MESSAGES, "max_tokens": 16})
    assert response.status_code == 500
    status = httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).json()
    assert status["reserved_usd"] == "0.00" and status["spent_usd"] == "0.00"


def test_overrun_is_recorded_in_full(make_stack):
    stack = make_stack(admin_token="admin-secret")
    put_budget(stack, "project", "acme", "5")
    response = httpx.post(f"{stack.base_url}/chat/completions", headers={**HEADERS, "X-Fake-Ignore-Max-Tokens": "1"},
                          json={"model": MODEL, "messages": MESSAGES, "max_tokens": 16})
    assert response.status_code == 200
    usage = response.json()["usage"]
    assert usage["completion_tokens"] > 16
    price = stack.services.catalog.resolve(MODEL)
    assert spent(stack) == cost_nano(price, Usage(usage["prompt_tokens"], usage["completion_tokens"]))
    assert "farebox_reservation_overruns_total 1.0" in httpx.get(f"{stack.url}/metrics").text


def test_key_budget_blocks_only_requests_with_that_key(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    result = subprocess.run([sys.executable, "-m", "proxy", "key-id", "--project", "acme"], input="sk-team-one\n",
                            capture_output=True, text=True, timeout=60)
    budget_id = result.stdout.strip()
    assert budget_id.startswith("acme/k") and len(budget_id) == len("acme/") + 16
    put_budget(stack, "key", budget_id, "0")
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16}
    url = f"{stack.base_url}/chat/completions"
    blocked = httpx.post(url, headers={**HEADERS, "Authorization": "Bearer sk-team-one"}, json=body)
    assert blocked.status_code == 402
    assert blocked.json()["error"]["scope"] == "key" and blocked.json()["error"]["scope_id"] == budget_id
    assert httpx.post(url, headers={**HEADERS, "Authorization": "Bearer sk-team-two"}, json=body).status_code == 200
    stack.run(stack.services.settled())  # the record goes to Redis just after the answer
    events = stack.run(stack.services.ledger.redis.xrange(f"{stack.services.ledger.keys.prefix}:{{acme}}:events"))
    assert events and all(b"sk-team" not in value for _, fields in events for value in fields.values())
