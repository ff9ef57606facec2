"""The edge both servers share: the same 500 for a bug, with its request id, on farebox's own
server and on aiohttp's side; one access-log line per request on each, never a credential."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time

import pytest

from proxy.http.edge import ACCESS_LOGGER, Edge
from tests.http.wire import BODY, request

SECRET = "sk-test-credential-4f9d2a"


def chunked(body: bytes = BODY, headers: list[tuple[str, str]] | None = None) -> bytes:
    """A chat request with a chunked body: aiohttp serves it, not farebox's own server."""
    return request(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body), length=False,
                   headers=[("Transfer-Encoding", "chunked"), *(headers or [])])


class ExplodingUpstream:
    """An upstream service that fails on any use, as a bug would."""

    def __getattr__(self, name: str):
        raise RuntimeError("upstream exploded")


@pytest.fixture
def stack(make_stack):
    return make_stack()


def internal_error(request_id: str) -> dict:
    return {"error": {"message": f"Internal error: farebox failed while answering this request (request "
                                f"{request_id}); see its log.",
                      "type": "server_error", "code": "internal_error", "param": None}}


def failure_logs(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "farebox" and r.exc_info is not None]


@pytest.mark.parametrize("server,data", [
    ("farebox's own server", request()),
    ("aiohttp", chunked()),
])
def test_an_internal_error_is_the_same_openai_shaped_500_on_both_servers(stack, wire, caplog, server, data):
    stack.services.upstream, stack.services.upstreams = ExplodingUpstream(), None

    wire.send(data)
    status, headers, body = wire.response()

    request_id = headers["x-request-id"]
    assert (status, headers["content-type"], json.loads(body)) == (500, "application/json", internal_error(request_id))
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert stack.front.handed_over == (0 if server == "farebox's own server" else 1)
    logged = failure_logs(caplog)
    assert [r.getMessage() for r in logged] == [f"request {request_id} failed"]
    assert logged[0].exc_info[1].args == ("upstream exploded",)


def access_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]


def wait_for_lines(caplog, count: int) -> list[str]:
    """The access-log lines once ``count`` were written: farebox's own server writes its line
    just after the answer, so it can reach the client first."""
    deadline = time.monotonic() + 10
    while len(access_lines(caplog)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return access_lines(caplog)


LINE = re.compile(r"(?P<method>\S+) (?P<path>\S+) (?P<status>\d{3}) project=(?P<project>\S+) "
                  r"request_id=(?P<id>[0-9a-f]{32})(?: upstream_request_id=(?P<upstream>\S+))? duration_ms=\d+\.\d")


@pytest.mark.parametrize("server,data,path", [
    ("farebox's own server", request(target="/v1/chat/completions?key=" + SECRET,
                                     headers=[("Authorization", f"Bearer {SECRET}")]), "/v1/chat/completions"),
    ("aiohttp", chunked(headers=[("Authorization", f"Bearer {SECRET}")]), "/v1/chat/completions"),
])
def test_each_request_is_one_access_log_line_without_its_credential(stack, wire, caplog, server, data, path):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    wire.send(data)
    first = wire.response()
    wire.send(data)
    second = wire.response()
    lines = wait_for_lines(caplog, 2)

    assert [first[0], second[0]] == [200, 200]
    assert len(lines) == 2
    for line, (_, headers, _) in zip(lines, [first, second]):
        fields = LINE.fullmatch(line)
        assert fields is not None, line
        assert (fields["method"], fields["path"], fields["status"], fields["project"], fields["id"],
                fields["upstream"]) == ("POST", path, "200", "acme", headers["x-request-id"],
                                        headers["x-upstream-request-id"])
        assert fields["upstream"].startswith("req_fb")  # the fake upstream's id, as the client got it
    assert not any(SECRET in r.getMessage() or SECRET in str(r.args) for r in caplog.records)
    assert stack.front.handed_over == (0 if server == "farebox's own server" else 1)


def test_a_request_naming_no_project_is_logged_with_a_dash(stack, wire, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    wire.send(b"GET /healthz?probe=1 HTTP/1.1\r\nHost: farebox\r\nAuthorization: Bearer " + SECRET.encode() + b"\r\n\r\n")
    status, headers, _ = wire.response()

    assert status == 200
    [line] = wait_for_lines(caplog, 1)
    assert LINE.fullmatch(line)
    assert line.startswith(f"GET /healthz 200 project=- request_id={headers['x-request-id']} duration_ms=")


def test_an_error_answered_by_the_own_server_is_logged_with_its_status(stack, wire, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    wire.send(request(b'{"model": '))
    status, headers, _ = wire.response()

    assert status == 400
    [line] = wait_for_lines(caplog, 1)
    assert line.startswith(f"POST /v1/chat/completions 400 project=acme request_id={headers['x-request-id']} "
                           "duration_ms=")


class Unreadable(dict):
    def get(self, key, default=None):
        raise AssertionError("the access log read the request although the logger is off")


def test_the_access_log_formats_nothing_when_its_logger_does_not_take_info():
    logger = logging.getLogger("tests.access.off")
    logger.setLevel(logging.WARNING)

    Edge(access_log=logger).access("POST", "/v1/chat/completions", 200, Unreadable(), "0" * 32, 0.0)


def test_an_invalid_project_id_is_not_written_to_the_access_log_as_sent():
    logger = logging.getLogger("tests.access.on")
    logger.setLevel(logging.INFO)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    try:
        Edge(access_log=logger).access("GET", "/x\n y", 404, {"X-Project-Id": "a b\nINFO forged"}, None,
                                       time.perf_counter())
    finally:
        logger.removeHandler(handler)

    assert len(records) == 1
    assert records[0].startswith("GET /x\\n y 404 project=(invalid) request_id=- duration_ms=")


def test_farebox_s_own_server_loads_neither_the_application_nor_the_request_flow():
    script = ("import sys\nimport proxy.http.front\n"
              "print(sorted(m for m in ('proxy.http.app', 'proxy.flow', 'aiohttp.web') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert (result.returncode, result.stdout, result.stderr) == (0, "[]\n", "")


class UpstreamFailingMidStream:
    """The real upstream service, except that reading a streamed answer fails as a bug would."""

    def __init__(self, upstream) -> None:
        self._upstream = upstream

    def __getattr__(self, name: str):
        return getattr(self._upstream, name)

    async def iter_chunks(self, response):
        raise RuntimeError("stream reader exploded")
        yield b""  # an async generator, as the real one


STREAM = json.dumps({**json.loads(BODY), "stream": True}).encode()


@pytest.mark.parametrize("server,data", [
    ("farebox's own server", request(STREAM)),
    ("aiohttp", chunked(STREAM)),
])
def test_an_internal_error_after_a_stream_began_cuts_it_on_both_servers(stack, wire, caplog, server, data):
    stack.services.upstream, stack.services.upstreams = UpstreamFailingMidStream(stack.services.upstream), None

    wire.send(data)
    with pytest.raises(ConnectionError, match="closed inside a chunked body"):
        wire.response()  # the head came (200, chunked), then the connection closed without the last chunk

    assert wire.status_line == "HTTP/1.1 200 OK"
    logged = failure_logs(caplog)
    assert len(logged) == 1 and logged[0].exc_info[1].args == ("stream reader exploded",)
