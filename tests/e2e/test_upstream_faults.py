"""Upstreams that break after the request reached them, against farebox with the OpenAI SDK or
plain HTTP: the client gets its 502/504, and the request is recorded (estimated, the prompt
counted at reservation) because a provider may well have billed it. A request that never
reached the upstream costs nothing. Each upstream here is a raw asyncio server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import httpx
import openai
import orjson
import pytest

from pricing.cost import Usage, cost_nano
from pricing.money import usd_to_nano
from proxy.apis.chat_prompt import count_chat_prompt
from proxy.ledger.reports import read_usage
from proxy.ratelimited import RateLimitedLog
from tests.harness import LoopThread
from tests.processes import free_port
from tests.upstream.servers import RawServer, answer

HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "planner"}
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say something."}]
BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": 32}
ADMIN = {"Authorization": "Bearer admin-secret"}


def completion(text: str = "Hello there.", prompt_tokens: int = 11, completion_tokens: int = 3) -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-raw", "object": "chat.completion", "created": 1, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


async def cut_body(server: RawServer, n, reader, writer) -> None:
    """Half of a whole answer, then the connection closes."""
    await server.next_request(reader)
    body = completion()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body[:len(body) // 2])
    await writer.drain()
    writer.close()


async def head_then_hang(server: RawServer, n, reader, writer) -> None:
    """The answer's head, then nothing."""
    await server.next_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
    await writer.drain()
    await server.stop.wait()


async def cut_error_answer(server: RawServer, n, reader, writer) -> None:
    """A 500 whose body is cut short: an error answer, which a provider does not bill."""
    await server.next_request(reader)
    writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"error\": ")
    await writer.drain()
    writer.close()


async def whole_body_short_of_its_length(server: RawServer, n, reader, writer) -> None:
    """A whole answer, usage included, under a Content-Length that promised more; then the close."""
    await server.next_request(reader)
    body = completion(prompt_tokens=11, completion_tokens=3)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (len(body) + 50) + body)
    await writer.drain()
    writer.close()


@pytest.fixture
def raw_upstream():
    """Factory: ``raw_upstream(handler)`` starts a raw server on its own loop thread; its URL."""
    threads = LoopThread()
    servers: list[RawServer] = []

    def start(handler) -> RawServer:
        server = threads.run(RawServer(handler).start())
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            threads.run(server.close())
        threads.close()


def report(stack) -> dict:
    return stack.run(read_usage(stack.services.ledger, "project", "acme", "day", datetime.now(timezone.utc)))


def settled(stack) -> dict:
    stack.run(stack.services.settled())
    return report(stack)


def events(stack, key_prefix) -> list[dict[bytes, bytes]]:
    stack.run(stack.services.settled())   # a record is queued before the answer, written just after
    return [fields for _, fields in stack.run(stack.services.ledger.redis.xrange(f"{key_prefix}:{{acme}}:events"))]


def prompt_cost(stack) -> tuple[int, int]:
    prompt = count_chat_prompt(MODEL, {"messages": MESSAGES})
    return prompt, cost_nano(stack.services.catalog.resolve(MODEL), Usage(prompt, 0))


def put_budget(stack, limit_usd: str) -> None:
    response = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                         json={"limit_usd": limit_usd, "period": "day", "mode": "hard"})
    assert response.status_code == 200, response.text


def budget(stack) -> dict:
    stack.run(stack.services.ledger.close_leases())
    return httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).json()


@pytest.mark.parametrize(("handler", "status", "kind"), [
    (cut_body, 502, "upstream_unreachable"),
    (head_then_hang, 504, "upstream_timeout"),
], ids=["cut-body", "head-then-hang"])
def test_an_answer_broken_after_the_request_was_sent_is_recorded_estimated_and_charged_its_prompt(
        make_stack, raw_upstream, key_prefix, caplog, handler, status, kind):
    server = raw_upstream(handler)
    stack = make_stack(upstream=server.url, upstream_timeout_s=0.3, admin_token="admin-secret")
    put_budget(stack, "1")
    client = openai.OpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0)
    with caplog.at_level(logging.WARNING, logger="farebox"), pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=32)
    assert failed.value.status_code == status
    assert failed.value.body["type"] == kind
    (line,) = [r.getMessage() for r in caplog.records if r.name == "farebox"]
    request_id = failed.value.response.headers["X-Request-Id"]
    assert line.startswith(f"upstream answer to request {request_id} broke off after the request was sent: ")
    assert line.endswith(f"(answered {status}, recorded as estimated)")
    prompt, cost = prompt_cost(stack)
    assert len(server.requests) == 1
    (event,) = events(stack, key_prefix)
    assert event[b"status"] == str(status).encode()
    assert event[b"estimated"] == b"1"
    assert int(event[b"prompt_tokens"]) == prompt
    assert int(event[b"completion_tokens"]) == 0
    assert int(event[b"cost_nano"]) == cost > 0
    got = report(stack)
    assert (got["requests"], got["estimated_requests"], usd_to_nano(got["cost_usd"])) == (1, 1, cost)
    standing = budget(stack)
    assert (usd_to_nano(standing["spent_usd"]), standing["reserved_usd"]) == (cost, "0.00")


def test_usage_that_arrived_before_the_body_broke_is_used_and_still_marked_estimated(make_stack, raw_upstream,
                                                                                     key_prefix):
    stack = make_stack(upstream=raw_upstream(whole_body_short_of_its_length).url)
    response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY, timeout=30)
    assert response.status_code == 502
    (event,) = events(stack, key_prefix)
    price = stack.services.catalog.resolve(MODEL)
    assert (event[b"status"], event[b"estimated"], event[b"prompt_tokens"], event[b"completion_tokens"]) == (
        b"502", b"1", b"11", b"3")
    assert int(event[b"cost_nano"]) == cost_nano(price, Usage(11, 3))


def test_an_upstream_that_cannot_be_reached_charges_nothing_and_releases_the_hold(make_stack):
    stack = make_stack(upstream=f"http://127.0.0.1:{free_port()}/v1", admin_token="admin-secret")
    put_budget(stack, "1")
    response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY, timeout=30)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_unreachable"
    assert settled(stack)["requests"] == 0
    standing = budget(stack)
    assert (standing["spent_usd"], standing["reserved_usd"]) == ("0.00", "0.00")


def test_an_error_answer_cut_short_charges_nothing(make_stack, raw_upstream, caplog):
    server = raw_upstream(cut_error_answer)
    stack = make_stack(upstream=server.url, admin_token="admin-secret")
    put_budget(stack, "1")
    with caplog.at_level(logging.WARNING, logger="farebox"):
        response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY, timeout=30)
    assert response.status_code == 502
    (line,) = [r.getMessage() for r in caplog.records if r.name == "farebox"]
    assert line.startswith(f"upstream error answer (500) to request {response.headers['X-Request-Id']} broke off: ")
    assert line.endswith("(answered 502, nothing charged)")
    assert len(server.requests) == 1
    assert settled(stack)["requests"] == 0
    standing = budget(stack)
    assert (standing["spent_usd"], standing["reserved_usd"]) == ("0.00", "0.00")


def test_an_unreachable_upstream_logs_one_warning_per_failure_kind_at_most_once_a_second(make_stack, caplog):
    port = free_port()
    stack = make_stack(upstream=f"http://127.0.0.1:{port}/v1")
    now = [100.0]
    stack.services.upstream.failures = RateLimitedLog(logging.getLogger("farebox"), clock=lambda: now[0])

    def fail() -> str:
        response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY, timeout=30)
        assert response.status_code == 502
        return response.headers["X-Request-Id"]

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "farebox"]

    with caplog.at_level(logging.WARNING, logger="farebox"):
        first = fail()
        for _ in range(4):
            now[0] += 0.2
            fail()
        assert len(logged()) == 1
        now[0] += 0.5   # a second after the first line
        last = fail()
    first_line, second_line = logged()
    reason = f"Could not reach the upstream http://127.0.0.1:{port}/v1: ConnectionRefusedError: "
    assert first_line.startswith(f"upstream not reached for request {first}: {reason}")
    assert first_line.endswith(" (answered 502, nothing charged)")
    assert second_line.startswith(f"upstream not reached for request {last}: {reason}")
    assert second_line.endswith(" (answered 502, nothing charged) (4 more like it not logged since the last one)")


def test_a_cap_of_two_connections_serves_six_concurrent_slow_requests_on_two_connections(make_stack, raw_upstream):
    state = {"open": 0, "peak": 0}

    async def slow(server: RawServer, n, reader, writer) -> None:
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        try:
            while await server.next_request(reader) is not None:
                await asyncio.sleep(0.1)
                writer.write(answer(completion(), "Content-Type: application/json"))
                await writer.drain()
        finally:
            state["open"] -= 1

    server = raw_upstream(slow)
    stack = make_stack(upstream=server.url, upstream_max_connections=2)

    async def six() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as http:
            answers = await asyncio.gather(*[http.post(f"{stack.base_url}/chat/completions", headers=HEADERS,
                                                       json=BODY) for _ in range(6)])
        return [r.status_code for r in answers]

    assert asyncio.run(six()) == [200] * 6
    assert len(server.requests) == 6
    assert server.connections == 2
    assert state["peak"] == 2
    assert settled(stack)["requests"] == 6


def test_a_request_that_finds_no_free_connection_within_the_connect_timeout_is_504_and_costs_nothing(
        make_stack, raw_upstream):
    async def never(server: RawServer, n, reader, writer) -> None:
        await server.next_request(reader)
        await server.stop.wait()

    server = raw_upstream(never)
    stack = make_stack(upstream=server.url, upstream_max_connections=1, upstream_connect_timeout_s=0.3,
                       upstream_timeout_s=60, admin_token="admin-secret")
    put_budget(stack, "1")

    async def second_while_first_holds_the_connection() -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as http:
            first = asyncio.ensure_future(http.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY))
            while not server.requests:
                await asyncio.sleep(0.01)
            second = await http.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY)
            first.cancel()
            return second

    second = asyncio.run(second_while_first_holds_the_connection())
    assert second.status_code == 504
    assert second.json()["error"]["message"] == (
        f"No connection to the upstream {server.url}: no free connection to 127.0.0.1:{server.port} "
        "within 0.3 s (1 in use).")
    assert len(server.requests) == 1 and server.connections == 1
    assert settled(stack)["requests"] == 0
