"""farebox's own server in front of aiohttp (proxy/http/front.py), on the wire: what it answers
itself, what it hands over to aiohttp (and that aiohttp then answers as before), keep-alive,
pipelining, clients that go away, idle connections and shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from proxy.http.front import Limits
from proxy.http.site import FrontSite
from tests.http.wire import BODY, Wire, events, request


@pytest.fixture
def stack(make_stack):
    return make_stack(max_body_bytes=64 * 1024)


def assert_metered(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 200, body
    assert json.loads(body)["object"] == "chat.completion"
    assert len(headers["x-request-id"]) == 32
    assert headers["x-farebox-cost-usd"]


def test_a_well_formed_request_is_answered_here_and_the_connection_kept(stack, wire):
    for _ in range(3):
        wire.send(request())
        assert_metered(*wire.response())
    assert stack.front.handed_over == 0
    assert len(events(stack)) == 3
    assert len(stack.received) == 3


def test_a_request_arriving_one_byte_at_a_time_is_answered(stack, wire):
    for byte in request():
        wire.send(bytes([byte]))
    assert_metered(*wire.response())
    assert stack.front.handed_over == 0


def test_pipelined_requests_are_answered_in_order(stack, wire):
    wire.send(request() + request(json.dumps({**json.loads(BODY), "max_tokens": 3}).encode()))
    first, second = wire.response(), wire.response()
    assert_metered(*first)
    assert_metered(*second)
    assert json.loads(second[2])["usage"]["completion_tokens"] <= 3 < json.loads(first[2])["usage"]["completion_tokens"]
    assert stack.front.handed_over == 0


def test_another_path_after_a_chat_request_hands_the_connection_to_aiohttp(stack, wire):
    wire.send(request() + b"GET /healthz HTTP/1.1\r\nHost: farebox\r\n\r\n")
    assert_metered(*wire.response())
    status, _, body = wire.response()
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert stack.front.handed_over == 1
    wire.send(request())  # aiohttp answers this connection's chat requests from now on, the same way
    assert_metered(*wire.response())
    assert len(events(stack)) == 2


@pytest.mark.parametrize("name,data", [
    ("chunked body", request(headers=[("Transfer-Encoding", "chunked")], length=False,
                             body=b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY))),
    ("HTTP/1.0", request(version="HTTP/1.0")),
    ("query string variant", request(target="/v1/chat/completions/")),
    ("head over 8 KB", request(headers=[("X-Padding-1", "p" * 4500), ("X-Padding-2", "p" * 4500)])),
])
def test_requests_outside_the_common_shape_are_served_by_aiohttp(stack, wire, name, data):
    wire.send(data)
    status, headers, body = wire.response()
    if name == "query string variant":  # aiohttp's router: no such endpoint
        assert status == 404 and json.loads(body)["error"]["code"] == "unknown_endpoint"
    else:
        assert_metered(status, headers, body)
    assert stack.front.handed_over == 1


def test_expect_100_continue_is_served_by_aiohttp(stack, wire):
    head, body = request(headers=[("Expect", "100-continue")]).split(b"\r\n\r\n", 1)
    wire.send(head + b"\r\n\r\n")
    assert wire.response()[0] == 100
    wire.send(body)
    assert_metered(*wire.response())
    assert stack.front.handed_over == 1


def test_a_folded_header_gets_aiohttps_400_and_nothing_is_forwarded_or_recorded(stack, wire):
    wire.send(request(headers=[("X-Agent-Id", "bot\r\n  continued")]))
    status, _, _ = wire.response()
    assert status == 400
    assert stack.front.handed_over == 1
    assert stack.received == [] and events(stack) == []


def test_content_length_beside_transfer_encoding_is_refused_by_aiohttp_and_nothing_is_forwarded(stack, wire):
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    wire.send(request(chunked, headers=[("Transfer-Encoding", "chunked")]))  # Content-Length too: ambiguous framing
    assert wire.response()[0] == 400
    assert stack.front.handed_over == 1
    assert stack.received == [] and events(stack) == []


def test_a_body_over_the_limit_gets_413_and_is_neither_forwarded_nor_recorded(stack, wire):
    big = b'{"model": "gpt-4o-mini", "messages": [], "x": "' + b"a" * (64 * 1024) + b'"}'
    wire.send(request(big))
    status, headers, body = wire.response()
    assert status == 413
    assert json.loads(body) == {"error": {
        "message": f"Request body of {len(big)} bytes exceeds the limit of 65536 bytes.",
        "type": "invalid_request_error", "param": None, "code": "request_too_large"}}
    assert len(headers["x-request-id"]) == 32
    assert stack.received == [] and events(stack) == []


def test_a_bad_body_answered_here_gets_the_same_400_and_nothing_is_forwarded_or_recorded(stack, wire):
    wire.send(request(b'{"model": "gpt-4o-mini", "messages": ['))
    status, headers, body = wire.response()
    assert status == 400
    error = json.loads(body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_json")
    assert headers["content-type"] == "application/json" and len(headers["x-request-id"]) == 32
    assert stack.front.handed_over == 0
    assert stack.received == [] and events(stack) == []
    wire.send(request())  # the connection is still good
    assert_metered(*wire.response())


def test_connection_close_is_honoured(stack, wire):
    wire.send(request(headers=[("Connection", "close")]))
    status, headers, body = wire.response()
    assert_metered(status, headers, body)
    assert headers["connection"] == "close"
    assert wire.closed_by_server()


def test_a_streamed_answer_is_chunked_and_recorded(stack, wire):
    body = json.dumps({**json.loads(BODY), "stream": True}).encode()
    wire.send(request(body))
    status, headers, data = wire.response()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert headers["content-type"].startswith("text/event-stream")
    assert data.rstrip().endswith(b"data: [DONE]")
    assert b'"usage":{' not in data  # the client did not ask for the usage chunk
    wire.send(request())  # kept alive after the stream
    assert_metered(*wire.response())
    assert [e[b"stream"] for e in events(stack)] == [b"1", b"0"]


def test_a_client_that_leaves_before_the_answer_is_still_recorded(stack):
    wire = Wire(stack.url)
    wire.send(request(headers=[("X-Fake-Latency-Ms", "300")]))
    wire.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not events(stack):
        time.sleep(0.05)
    assert [e[b"status"] for e in events(stack)] == [b"200"]


def test_idle_connections_are_closed(stack):
    site = FrontSite(stack.front.runner, "127.0.0.1", 0, limits=Limits(idle_timeout_s=0.2, sweep_s=0.05))
    stack.run(site.start())
    wire = Wire(f"http://127.0.0.1:{site.port}")
    try:
        wire.send(request())
        assert_metered(*wire.response())
        assert wire.closed_by_server()
    finally:
        wire.close()
        stack.run(site.stop())


def test_stopping_lets_a_request_in_flight_finish_and_closes_idle_connections(stack):
    idle, busy = Wire(stack.url), Wire(stack.url)
    try:
        idle.send(request())
        assert_metered(*idle.response())
        busy.send(request(headers=[("X-Fake-Latency-Ms", "400")]))
        time.sleep(0.1)
        stack.run(stack.front.stop())
        assert idle.closed_by_server()
        status, headers, body = busy.response()
        assert_metered(status, headers, body)
        assert headers["connection"] == "close"
    finally:
        idle.close()
        busy.close()


def test_farebox_serve_answers_and_hands_over_on_its_own_event_loop(make_stack, tmp_path, redis_url, key_prefix):
    """The same on ``farebox serve``'s loop (uvloop where installed), whose transports hand a
    connection over with their own ``set_protocol``; then SIGTERM stops it cleanly."""
    upstream = make_stack().upstream_url
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAREBOX_") and k != "REDIS_URL"}
    env.update(REDIS_URL=redis_url, FAREBOX_REDIS_PREFIX=key_prefix, FAREBOX_DATA_DIR=str(tmp_path / "serve"))
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port), "--upstream",
                             f"{upstream}/v1", "--log-level", "warning"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                wire = Wire(f"http://127.0.0.1:{port}")
                break
            except OSError:
                assert time.monotonic() < deadline, "farebox serve did not listen"
                time.sleep(0.05)
        try:
            stream = json.dumps({**json.loads(BODY), "stream": True}).encode()
            wire.send(request() + request(stream) + b"GET /readyz HTTP/1.1\r\nHost: farebox\r\n\r\n")
            assert_metered(*wire.response())
            status, headers, data = wire.response()
            assert status == 200 and data.rstrip().endswith(b"data: [DONE]")
            status, _, body = wire.response()
            assert status == 200 and json.loads(body)["status"] == "ready"
            wire.send(request())
            assert_metered(*wire.response())
        finally:
            wire.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
