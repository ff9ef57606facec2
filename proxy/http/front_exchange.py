"""Writing answers on farebox's own server (``proxy.http.front``): response heads and the
``proxy.flow.Exchange`` of a request it answers itself."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from proxy.errors import FareboxError

if TYPE_CHECKING:
    from proxy.http.front import Connection

__all__ = ["FrontExchange", "response_head"]

_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode()
    return line


class _Clock:
    """The Date header's value, formatted at most once a second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second, self.value = 0, ""

    def date(self) -> str:
        now = int(time.time())
        if now != self.second:
            self.second, self.value = now, formatdate(now, usegmt=True)
        return self.value


_clock = _Clock()


def response_head(status: int, headers: CIMultiDict[str] | dict[str, str], framing: str, keep_alive: bool) -> bytes:
    """A response head: status line, the given fields, Date unless given, then ``framing``
    (the Content-Length or Transfer-Encoding field) and Connection: close when closing."""
    lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
    fields = "".join(lines)
    if fields.count("\n") != len(lines) or fields.count("\r") != len(lines):
        raise ValueError(f"a response header holds a line break: {fields!r}")
    lines = [fields]
    if "Date" not in headers:
        lines.append(f"Date: {_clock.date()}\r\n")
    lines.append(framing)
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return _status_line(status) + "".join(lines).encode("utf-8", "surrogateescape")


class FrontExchange:
    """``proxy.flow.Exchange`` for a request farebox's own server answers itself."""

    __slots__ = ("conn", "request_id", "path", "query", "headers", "body", "keep_alive", "started", "answered", "status", "since",
                 "answer_id")

    def __init__(self, conn: Connection, request_id: str, path: str, query: str, headers: CIMultiDict[str],
                 body: bytes, keep_alive: bool, since: float) -> None:
        self.conn, self.request_id, self.headers, self.body = conn, request_id, headers, body
        self.path, self.query = path, query  # the query string without its "?"
        self.keep_alive = keep_alive
        self.started = self.answered = False
        self.status = 0      # the status sent, for the access log
        self.since = since   # time.perf_counter() when the request was read
        self.answer_id: str | None = None  # the provider's request id, for the access log

    def reply(self, status: int, headers: CIMultiDict[str] | dict[str, str], body: bytes) -> None:
        self.keep_alive = self.keep_alive and not self.conn.server.closing
        head = response_head(status, headers, f"Content-Length: {len(body)}\r\n", self.keep_alive)
        self.started = self.answered = True
        self.status = status
        self.answer_id = headers.get("X-Upstream-Request-Id")
        try:
            self.conn.write(head + body)
        except ConnectionError:
            pass  # nobody is left to answer; what was done is recorded all the same

    async def start(self, status: int, headers: CIMultiDict[str]) -> None:
        self.keep_alive = self.keep_alive and not self.conn.server.closing
        self.started = True
        self.status = status
        self.answer_id = headers.get("X-Upstream-Request-Id")
        try:
            self.conn.write(response_head(status, headers, "Transfer-Encoding: chunked\r\n", self.keep_alive))
        except ConnectionError:
            pass  # the first write of the body says so

    async def write(self, data: bytes) -> None:
        if data:
            self.conn.write(b"%x\r\n%b\r\n" % (len(data), data))
            if self.conn.writing_paused:
                await self.conn.drain()

    async def finish(self) -> None:
        self.conn.write(b"0\r\n\r\n")
        self.answered = True

    def cut(self) -> None:
        self.keep_alive = False
        self.conn.close()

    def fail(self, exc: FareboxError) -> None:
        """Answer with farebox's error body; once an answer has begun, cut it instead."""
        if self.answered:
            return
        if self.started:
            self.cut()
            return
        status, headers, body = self.conn.server.edge.render(exc, self.request_id, self.path)
        self.reply(status, headers, body)
