"""200 requests at once, half to the Responses API and half to Anthropic Messages, spread over two
farebox processes sharing one Redis and one hard budget: spend never passes the limit, and
exactly the requests that fit get through.

Each request's usage is made its worst case (the fake upstream reports the usage it is given:
every prompt token at the highest input price farebox reserves, the output bound in full), so a
hold turns into the same spend and the room left only ever shrinks. Then "exactly the requests
that fit" is checkable: every refused request was refused for want of room it still lacks once
everything settled, and everything allowed was recorded at its cost.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import anthropic
import httpx
import openai

from pricing.cost import worst_case_nano
from pricing.money import nano_to_usd, usd_to_nano
from proxy.apis.messages import MESSAGES
from proxy.apis.responses import RESPONSES
from tests.processes import clean_env, free_port, wait_ready

ADMIN = {"Authorization": "Bearer admin-secret"}
HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "mixed"}
RESPONSES_BODY = {"model": "gpt-4o-mini", "input": "Give me one line.", "max_output_tokens": 16}
MESSAGES_BODY = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "One line."}]}


async def worst_case(stack, shape, body: dict) -> tuple[int, int]:
    """(prompt bound, worst-case cost in nano-USD) of ``body`` as farebox reserves it."""
    price = stack.services.catalog.resolve(body["model"])
    request = shape.parse(json.dumps(body).encode())
    prompt = await shape.count_prompt(request, price)
    return prompt, worst_case_nano(price, prompt, request.max_output)


def start_farebox(stack, redis_url: str, prefix: str, data_dir: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**clean_env(), "REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": prefix, "FAREBOX_DATA_DIR": data_dir,
           "FAREBOX_ANTHROPIC_UPSTREAM": stack.upstream_url}
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port), "--upstream",
                             f"{stack.upstream_url}/v1", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_ready(port, proc)
    return proc, port


async def burst(ports: list[int], count: int, responses_usage: dict, messages_usage: dict) -> list[tuple[str, object]]:
    openais = [openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{p}/v1", api_key="sk-x", max_retries=0, timeout=60,
                                  default_headers={**HEADERS, "X-Fake-Usage": json.dumps(responses_usage)})
               for p in ports]
    anthropics = [anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{p}", api_key="sk-ant-x", max_retries=0,
                                           timeout=60,
                                           default_headers={**HEADERS, "X-Fake-Usage": json.dumps(messages_usage)})
                  for p in ports]

    async def one(i: int) -> tuple[str, object]:
        try:
            if i % 2:
                return "responses", await openais[i // 2 % 2].responses.create(**RESPONSES_BODY)
            async with anthropics[i // 2 % 2].messages.stream(**MESSAGES_BODY) as stream:
                return "messages", await stream.get_final_message()
        except (openai.APIStatusError, anthropic.APIStatusError) as exc:
            return ("responses" if i % 2 else "messages"), exc

    try:
        return await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for client in (*openais, *anthropics):
            await client.close()


async def test_a_mixed_burst_on_two_processes_gets_exactly_what_one_budget_pays_for(make_stack, redis_url, key_prefix,
                                                                                   tmp_path):
    stack = make_stack(admin_token="admin-secret")
    r_prompt, r_worst = await worst_case(stack, RESPONSES, RESPONSES_BODY)
    m_prompt, m_worst = await worst_case(stack, MESSAGES, MESSAGES_BODY)
    # Every input token at the price farebox reserves for it: plain input for gpt-4o-mini, an
    # hour-long cache write (the dearest) for Claude.
    responses_usage = {"input_tokens": r_prompt, "output_tokens": 16, "total_tokens": r_prompt + 16}
    messages_usage = {"input_tokens": 0, "cache_creation_input_tokens": m_prompt, "cache_read_input_tokens": 0,
                      "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": m_prompt},
                      "output_tokens": 16}
    limit = 35 * r_worst + 35 * m_worst + min(r_worst, m_worst) // 2
    put = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                    json={"limit_usd": nano_to_usd(limit), "period": "month", "mode": "hard"})
    assert put.status_code == 200, put.text

    procs = [start_farebox(stack, redis_url, key_prefix, str(tmp_path / f"d{i}")) for i in range(2)]
    try:
        results = await burst([port for _, port in procs], 200, responses_usage, messages_usage)
    finally:
        for proc, _ in procs:
            proc.terminate()
            proc.wait(15)

    allowed = [(api, r) for api, r in results if not isinstance(r, Exception)]
    refused = [(api, r) for api, r in results if isinstance(r, Exception)]
    assert all(r.status_code == 402 for _, r in refused)
    for api, exc in refused:  # each in its own family's error shape
        if api == "messages":
            assert exc.body["type"] == "error" and exc.body["error"]["type"] == "billing_error"
            assert exc.body["error"]["scope"] == "project"
        else:
            assert exc.body["type"] == "budget_exceeded" and exc.body["scope"] == "project"
    assert allowed and refused

    events = stack.events()
    assert len(events) == len(allowed)
    cost = {"responses": r_worst, "messages": m_worst}
    assert sorted(int(e["cost_nano"]) for e in events) == sorted(cost[api] for api, _ in allowed)
    spent = sum(int(e["cost_nano"]) for e in events)
    assert spent <= limit
    # Nothing refused would fit in what is left now that every hold has settled.
    assert limit - spent < min(cost[api] for api, _ in refused)
    forwarded = [r for r in stack.received if r["path"] in ("/v1/responses", "/v1/messages")]
    assert len(forwarded) == len(allowed), "a refused request must never reach the upstream"
    status = httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).json()
    assert usd_to_nano(status["spent_usd"]) == spent
