"""What both servers refuse on the wire before anything is forwarded or recorded: a credential or
attribution header sent twice, an HTTP version other than 1.x, a header value to forward that is
not ASCII; and how malformed requests reach the log."""

from __future__ import annotations

import json
import logging

import pytest
from aiohttp.http_exceptions import BadHttpMessage

from proxy.http.edge import ProtocolLog
from tests.http.wire import BODY, Wire, events, request


def chunked(headers: list[tuple[str, str]]) -> bytes:
    """A chat request with a chunked body: aiohttp serves it, not farebox's own server."""
    return request(b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY), length=False,
                   headers=[("Transfer-Encoding", "chunked"), *headers])


SERVERS = {"farebox's own server": lambda headers: request(headers=headers), "aiohttp": chunked}


@pytest.fixture
def stack(make_stack):
    return make_stack()


def assert_refused(stack, response, status: int, code: str, param: str | None) -> None:
    got, headers, body = response
    error = json.loads(body)["error"]
    assert (got, error["type"], error["code"], error["param"]) == (status, "invalid_request_error", code, param)
    assert len(headers["x-request-id"]) == 32
    assert stack.received == [] and events(stack) == []


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("first,second", [
    (("Authorization", "Bearer sk-first"), ("Authorization", "Bearer sk-second")),
    (("authorization", "Bearer sk-first"), ("Authorization", "Bearer sk-second")),
    (("x-api-key", "sk-first"), ("X-Api-Key", "sk-second")),
])
def test_a_credential_sent_twice_is_refused_and_nothing_is_forwarded(stack, wire, server, first, second):
    wire.send(SERVERS[server]([first, second]))

    param = "Authorization" if first[0].lower() == "authorization" else "x-api-key"
    assert_refused(stack, wire.response(), 400, "duplicate_credentials", param)
    assert stack.front.handed_over == (0 if server == "farebox's own server" else 1)


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("name", ["X-Project-Id", "X-Agent-Id", "X-Session-Id"])
def test_an_attribution_header_sent_twice_is_refused(stack, wire, server, name):
    wire.send(SERVERS[server]([(name, "acme"), (name.lower(), "other")]))

    assert_refused(stack, wire.response(), 400, "duplicate_header", name)


def test_http_2_on_the_request_line_gets_505_from_farebox_s_own_server(stack, wire):
    wire.send(request(version="HTTP/2.0"))

    assert_refused(stack, wire.response(), 505, "http_version_not_supported", None)
    assert wire.status_line == "HTTP/1.1 505 HTTP Version Not Supported"
    assert wire.closed_by_server()


def test_http_2_on_a_connection_aiohttp_serves_gets_505(stack, wire):
    wire.send(b"GET /healthz HTTP/1.1\r\nHost: farebox\r\n\r\n")
    assert wire.response()[0] == 200
    assert stack.front.handed_over == 1

    wire.send(request(version="HTTP/2.0"))

    assert_refused(stack, wire.response(), 505, "http_version_not_supported", None)
    assert wire.closed_by_server()


@pytest.mark.parametrize("target", ["/v1/chat/completions", "/healthz"])
def test_a_head_with_bare_lf_line_ends_gets_400_at_once(stack, wire, target):
    wire.sock.settimeout(5)  # it used to wait for the idle timeout (75 s) instead
    head = f"POST {target} HTTP/1.1\nHost: farebox\nX-Project-Id: acme\nContent-Length: {len(BODY)}\n\n"
    wire.send(head.encode() + BODY)

    assert_refused(stack, wire.response(), 400, "malformed_request", None)
    assert wire.closed_by_server()


def test_a_header_value_outside_ascii_is_refused_and_not_forwarded(stack, wire):
    wire.send(request(headers=[("X-Note", "caf\u00e9")]))  # latin-1 on the wire, as some clients send

    assert_refused(stack, wire.response(), 400, "invalid_header_value", "X-Note")


def test_utf8_in_a_header_value_is_refused_too(stack, wire):
    head = request(headers=[("X-Note", "NOTE")]).replace(b"NOTE", "caf\u00e9".encode())
    wire.send(head)

    assert_refused(stack, wire.response(), 400, "invalid_header_value", "X-Note")


def test_malformed_requests_are_logged_as_one_warning_line_without_traceback(stack, caplog):
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        wire = Wire(stack.url)
        try:
            wire.send(request(headers=[("X-Agent-Id", "bot\r\n  continued")]))  # a folded header
            assert wire.response()[0] == 400
        finally:
            wire.close()

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert 1 <= len(warnings) <= 3
    for record in warnings:
        assert record.getMessage().startswith("malformed request from 127.0.0.1")
        assert "\n" not in record.getMessage()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_malformed_request_warnings_are_at_most_one_a_second_with_a_count_of_those_left_out(caplog):
    caplog.set_level(logging.DEBUG, logger="tests.protocol")
    clock = Clock()
    log = ProtocolLog(logging.getLogger("tests.protocol"), interval_s=1.0, clock=clock)
    bad = BadHttpMessage("Invalid header value char\n\n  b'bot'\n     ^")

    for _ in range(5):
        log.exception("Error handling request from %s", "10.0.0.7", exc_info=bad)
    clock.now += 0.5
    log.exception("Error handling request from %s", "10.0.0.8", exc_info=bad)
    clock.now += 0.5
    log.exception("Error handling request from %s", "10.0.0.9", exc_info=bad)

    assert [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("WARNING", "malformed request from 10.0.0.7: Invalid header value char b'bot' ^", None),
        ("WARNING", "malformed request from 10.0.0.9: Invalid header value char b'bot' ^ "
                    "(5 more left out of the log)", None),
    ]


def test_other_failures_aiohttp_reports_keep_their_traceback(caplog):
    caplog.set_level(logging.DEBUG, logger="tests.protocol")
    log = ProtocolLog(logging.getLogger("tests.protocol"))
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        log.exception("Unhandled exception")

    [record] = caplog.records
    assert (record.levelname, record.getMessage(), record.exc_info[1].args) == ("ERROR", "Unhandled exception",
                                                                               ("a bug",))
