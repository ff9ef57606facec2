"""farebox's own server's deadlines and connection cap, on the wire, with short limits: a slow
client cannot hold a connection forever, nor can too many connections be opened."""

from __future__ import annotations

import json
import socket
import time

import pytest

from proxy.http.appkeys import EDGE
from proxy.http.front import Limits
from proxy.http.site import FrontSite
from tests.http.wire import BODY, Wire, request

SHORT = Limits(head_timeout_s=0.3, body_timeout_s=0.3, idle_timeout_s=30.0, sweep_s=0.05)
TRICKLE_FOR_S = 10.0  # how long a test keeps trickling before it gives up on the server closing


@pytest.fixture
def stack(make_stack):
    return make_stack()


def site_with(stack, limits: Limits) -> FrontSite:
    site = FrontSite(stack.front.runner, "127.0.0.1", 0, limits=limits, shutdown_timeout=1.0)
    stack.run(site.start())
    return site


@pytest.fixture
def short_site(stack):
    site = site_with(stack, SHORT)
    yield site
    stack.run(site.stop())


def trickle_until_closed(wire: Wire, data: bytes, *, or_answered: bool = False) -> bytes:
    """Send ``data`` one byte every 0.1 s; what the server sent back once it closed (or, with
    ``or_answered``, once a whole answer came), or the test gave up."""
    wire.sock.settimeout(0.1)
    received = b""
    give_up = time.monotonic() + TRICKLE_FOR_S
    for byte in data:
        if time.monotonic() > give_up:
            break
        try:
            wire.send(bytes([byte]))
            chunk = wire.sock.recv(65536)
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return received
        if not chunk:
            return received
        received += chunk
        if or_answered and b"\r\n\r\n" in received:
            head, body = received.split(b"\r\n\r\n", 1)
            if len(body) >= int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):
                return received
    raise AssertionError(f"the server kept a trickling client for {TRICKLE_FOR_S} s (got {received!r})")


@pytest.mark.parametrize("head", [
    request(headers=[("X-Padding", "p" * 200)]),
    b"GET /healthz HTTP/1.1\r\nHost: farebox\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n",
])
def test_a_head_trickling_in_is_cut_off_at_its_deadline(stack, short_site, head):
    wire = Wire(f"http://127.0.0.1:{short_site.port}")
    try:
        assert trickle_until_closed(wire, head) == b""
    finally:
        wire.close()
    assert stack.received == []


def test_a_body_trickling_in_gets_408_at_its_deadline_and_nothing_is_forwarded(stack, short_site):
    wire = Wire(f"http://127.0.0.1:{short_site.port}")
    data = request(BODY + b" " * 200)
    head_end = data.index(b"\r\n\r\n") + 4
    try:
        wire.send(data[:head_end])
        answer = trickle_until_closed(wire, data[head_end:])
    finally:
        wire.close()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and head.endswith(b"\r\nConnection: close")
    assert json.loads(body) == {"error": {"message": "The request body did not arrive in time.",
                                          "type": "invalid_request_error", "param": None, "code": "request_timeout"}}
    assert stack.received == []


def test_a_request_that_arrives_in_time_is_answered_with_short_deadlines(stack, short_site):
    wire = Wire(f"http://127.0.0.1:{short_site.port}")
    try:
        wire.send(request())
        assert wire.response()[0] == 200
        time.sleep(0.5)  # longer than the head deadline, but idle: the connection stays
        wire.send(request())
        assert wire.response()[0] == 200
    finally:
        wire.close()


def test_connections_beyond_the_cap_are_closed_at_once(stack):
    site = site_with(stack, Limits(max_connections=2))
    url = f"http://127.0.0.1:{site.port}"
    first, second = Wire(url), Wire(url)
    try:
        for wire in (first, second):
            wire.send(request())
            assert wire.response()[0] == 200
        third = Wire(url)
        try:
            assert third.closed_by_server()
        finally:
            third.close()
        assert site.server.refused == 1
        second.close()
        deadline = time.monotonic() + 10
        while len(site.server.connections) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        fourth = Wire(url)  # room again
        try:
            fourth.send(request())
            assert fourth.response()[0] == 200
        finally:
            fourth.close()
    finally:
        first.close()
        second.close()
        stack.run(site.stop())


def test_a_chunked_body_trickling_in_to_aiohttp_gets_408_at_its_deadline(stack):
    stack.app[EDGE].body_timeout_s = 0.3
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    data = request(chunked, length=False, headers=[("Transfer-Encoding", "chunked")])
    head_end = data.index(b"\r\n\r\n") + 4
    wire = Wire(stack.url)
    try:
        wire.send(data[:head_end])
        answer = trickle_until_closed(wire, data[head_end:], or_answered=True)  # aiohttp closes after lingering
    finally:
        wire.close()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and head.endswith(b"\r\nConnection: close")
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert stack.front.handed_over == 1
    assert stack.received == []
