"""farebox's own HTTP/1.1 server for chat completions, in front of aiohttp.

Every connection starts here. A request in the well-formed common shape, the one SDKs send:

    POST /v1/chat/completions HTTP/1.1, printable-ASCII header fields, one Content-Length,
    a head of at most 8 KB, no Transfer-Encoding, Expect or Upgrade

is read, answered and kept alive here: ``proxy.flow.serve_chat`` runs on the parsed head and
the whole body, and the answer is written straight to the socket. aiohttp's per-request
machinery (its request and response objects, middleware and router) was about a third of
farebox's CPU per request.

Any other request (another path or method, a chunked body, ``Expect: 100-continue``, HTTP/1.0,
an unusual, non-ASCII or oversized head) hands the connection over to aiohttp, at a request
boundary and with the bytes received so far untouched; aiohttp then serves that connection
to its end, exactly as it would have from its first byte. So does a body larger than
``max_body_bytes``: aiohttp answers it 413 and drains it before closing.

``FrontSite`` is the aiohttp site that listens with this server; ``serve`` and the tests use it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from email.utils import formatdate
from http import HTTPStatus

from aiohttp import web
from multidict import CIMultiDict

from proxy.http.appkeys import SERVICES
from proxy.http.app import new_request_id
from proxy.errors import FareboxError, error_response_parts
from proxy.flow import serve_chat
from proxy.services import Services

__all__ = ["FrontSite", "IDLE_TIMEOUT_S", "MAX_HEAD_BYTES", "MAX_FIELDS"]

log = logging.getLogger("farebox")

IDLE_TIMEOUT_S = 75.0         # a kept-alive connection with no request in flight is closed after this long
IDLE_SWEEP_S = 5.0            # how often idle connections are looked for
MAX_HEAD_BYTES = 8190         # a longer head (request line and fields) is aiohttp's to judge
MAX_FIELDS = 128              # as aiohttp's own limit; more fields go to aiohttp too
MAX_PENDING_BYTES = 1 << 20   # bytes received ahead of the request in flight before reading pauses

_PREFIX = b"POST /v1/chat/completions"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_VALUE = r"(?:[!-~]+(?:[ \t]+[!-~]+)*)?"
_FIELD = re.compile(rf"({_TOKEN}):[ \t]*({_VALUE})[ \t]*\r\n")
_HEAD = re.compile(rf"(POST /v1/chat/completions(?:\?[!-~]*)? HTTP/1\.1\r\n)(?:{_TOKEN}:[ \t]*{_VALUE}[ \t]*\r\n)*")
_HANDED_OVER = frozenset({"Transfer-Encoding", "Expect", "Upgrade"})


class _Request:
    """A head read and checked, waiting for (or with) its body."""

    __slots__ = ("headers", "keep_alive", "body_start", "end")

    def __init__(self, headers: CIMultiDict[str], keep_alive: bool, body_start: int, end: int) -> None:
        self.headers, self.keep_alive, self.body_start, self.end = headers, keep_alive, body_start, end


_HAND_OVER = object()  # not a request this server answers: aiohttp takes the connection


def _read_head(buf: bytes | bytearray, scan_from: int, max_body: int) -> _Request | int | object:
    """What the bytes at the start of ``buf`` are: a ``_Request`` to answer, ``_HAND_OVER``, or
    not enough yet: an int, where to resume looking for the head's end."""
    if len(buf) <= len(_PREFIX):
        return 0 if _PREFIX.startswith(buf) else _HAND_OVER
    if not buf.startswith(_PREFIX) or buf[len(_PREFIX)] not in b" ?":
        return _HAND_OVER
    end = buf.find(b"\r\n\r\n", scan_from)
    if end < 0:
        return _HAND_OVER if len(buf) > MAX_HEAD_BYTES else max(0, len(buf) - 3)
    if end + 2 > MAX_HEAD_BYTES:
        return _HAND_OVER
    head = bytes(buf[:end + 2])
    if not head.isascii():
        return _HAND_OVER
    text = head.decode("ascii")
    matched = _HEAD.fullmatch(text)
    if matched is None:
        return _HAND_OVER
    fields = _FIELD.findall(text, matched.end(1))
    if len(fields) > MAX_FIELDS:
        return _HAND_OVER
    headers = CIMultiDict(fields)
    for name in _HANDED_OVER:
        if name in headers:
            return _HAND_OVER
    lengths = headers.getall("Content-Length", ())
    if len(lengths) != 1 or not lengths[0].isdigit() or int(lengths[0]) > max_body:
        return _HAND_OVER
    keep_alive = True
    connection = headers.get("Connection")
    if connection is not None:
        options = {option.strip().lower() for option in connection.split(",")}
        if "upgrade" in options:
            return _HAND_OVER
        keep_alive = "close" not in options
    return _Request(headers, keep_alive, end + 4, end + 4 + int(lengths[0]))


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


def _head(status: int, headers: CIMultiDict[str], framing: str, keep_alive: bool) -> bytes:
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


class _Front:
    """What the connections share: the services, aiohttp's protocol factory, who is connected."""

    def __init__(self, services: Services, hand_over: web.Server) -> None:
        self.services = services
        self.max_body = services.settings.max_body_bytes
        self.hand_over = hand_over
        self.connections: set[_Connection] = set()
        self.handed_over = 0  # connections aiohttp took over
        self.closing = False
        self.sweeper: asyncio.Task[None] | None = None

    async def sweep_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(IDLE_SWEEP_S)
            cutoff = loop.time() - IDLE_TIMEOUT_S
            for conn in [c for c in self.connections if c.exchange is None and c.idle_since < cutoff]:
                conn.close()

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections now; let requests in flight finish (up to ``timeout``)."""
        self.closing = True
        if self.sweeper is not None:
            self.sweeper.cancel()
        busy = []
        for conn in list(self.connections):
            if conn.task is None:
                conn.close()
            else:
                busy.append(conn.task)
        if busy:
            _, late = await asyncio.wait(busy, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for conn in list(self.connections):
            conn.close()


class _Connection(asyncio.Protocol):
    """One client connection while farebox answers it itself."""

    __slots__ = ("front", "loop", "transport", "buf", "scan_from", "waiting", "exchange", "task", "idle_since",
                 "reading_paused", "writing_paused", "drained", "lost")

    def __init__(self, front: _Front) -> None:
        self.front = front
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.scan_from = 0
        self.waiting: _Request | None = None   # a head read, its body not all here yet
        self.exchange: _Exchange | None = None  # the request being answered
        self.task: asyncio.Task[None] | None = None
        self.idle_since = 0.0
        self.reading_paused = self.writing_paused = self.lost = False
        self.drained: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass
        self.idle_since = self.loop.time()
        if self.front.closing:
            transport.close()
            return
        self.front.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.exchange is None:
            self.idle_since = self.loop.time()  # a slow request is not an idle connection
            self._next()
        elif len(self.buf) > MAX_PENDING_BYTES and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        return False  # close our side too (after any answer already written)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.front.connections.discard(self)
        self._wake(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake(None)

    # reading requests

    def _next(self) -> None:
        """Answer, wait for, or hand over what the buffer starts with."""
        buf = self.buf
        request = self.waiting
        if request is None:
            if not buf:
                return
            found = _read_head(buf, self.scan_from, self.front.max_body)
            if found is _HAND_OVER:
                self._hand_over()
                return
            if isinstance(found, int):
                self.scan_from = found
                return
            assert isinstance(found, _Request)
            request = found
            self.scan_from = 0
        if len(buf) < request.end:
            self.waiting = request
            return
        self.waiting = None
        body = bytes(buf[request.body_start:request.end])
        del buf[:request.end]
        self._answer(request, body)

    def _answer(self, request: _Request, body: bytes) -> None:
        ex = self.exchange = _Exchange(self, new_request_id(), request.headers, body, request.keep_alive)
        self.task = self.loop.create_task(self._serve(ex))

    async def _serve(self, ex: _Exchange) -> None:
        try:
            await serve_chat(self.front.services, ex)
        except FareboxError as exc:
            ex.fail(exc)
        except asyncio.CancelledError:
            ex.cut()
            raise
        except Exception:  # a bug: logged, answered 500 like any other error, never left hanging
            log.exception("request %s failed", ex.request_id)
            ex.fail(FareboxError("farebox failed while answering this request; see its log."))
        finally:
            self._finished(ex)

    def _finished(self, ex: _Exchange) -> None:
        self.exchange = self.task = None
        if self.lost:
            return
        if not ex.answered or not ex.keep_alive or self.front.closing:
            self.close()
            return
        self.idle_since = self.loop.time()
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._next()

    def _hand_over(self) -> None:
        """aiohttp serves this connection from here on, starting with the bytes still unread."""
        transport = self.transport
        assert transport is not None
        self.front.connections.discard(self)
        self.front.handed_over += 1
        pending, self.buf = bytes(self.buf), bytearray()
        protocol = self.front.hand_over()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if pending:
            protocol.data_received(pending)
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    # writing answers

    def write(self, data: bytes) -> None:
        """Send ``data``, or raise ConnectionResetError when the client is gone."""
        if self.lost or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self.transport.write(data)  # type: ignore[union-attr]

    async def drain(self) -> None:
        if self.writing_paused and not self.lost:
            self.drained = self.loop.create_future()
            await self.drained
        if self.lost:
            raise ConnectionResetError("the client closed the connection")

    def _wake(self, exc: Exception | None) -> None:
        waiter, self.drained = self.drained, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.front.connections.discard(self)


class _Exchange:
    """``proxy.flow.Exchange`` for a request this server answers itself."""

    __slots__ = ("conn", "request_id", "headers", "body", "keep_alive", "started", "answered")

    def __init__(self, conn: _Connection, request_id: str, headers: CIMultiDict[str], body: bytes,
                 keep_alive: bool) -> None:
        self.conn, self.request_id, self.headers, self.body = conn, request_id, headers, body
        self.keep_alive = keep_alive
        self.started = self.answered = False

    def reply(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.keep_alive = self.keep_alive and not self.conn.front.closing
        head = _head(status, headers, f"Content-Length: {len(body)}\r\n", self.keep_alive)
        self.started = self.answered = True
        try:
            self.conn.write(head + body)
        except ConnectionError:
            pass  # nobody is left to answer; what was done is recorded all the same

    async def start(self, status: int, headers: CIMultiDict[str]) -> None:
        self.keep_alive = self.keep_alive and not self.conn.front.closing
        self.started = True
        try:
            self.conn.write(_head(status, headers, "Transfer-Encoding: chunked\r\n", self.keep_alive))
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
        status, headers, body = error_response_parts(exc, self.request_id)
        self.reply(status, CIMultiDict(headers), body)


class FrontSite(web.BaseSite):
    """An aiohttp site listening on host:port with farebox's server in front (see the module
    docstring). Stopping it stops listening, closes idle connections and lets requests in
    flight finish, up to ``shutdown_timeout``."""

    __slots__ = ("_host", "_port", "_reuse_port", "_shutdown_timeout", "_front")

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, reuse_port: bool = False,
                 shutdown_timeout: float = 10.0) -> None:
        super().__init__(runner)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._shutdown_timeout = shutdown_timeout
        self._front: _Front | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def handed_over(self) -> int:
        """How many connections this site handed over to aiohttp so far."""
        return self._front.handed_over if self._front is not None else 0

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return self._port

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        assert isinstance(runner, web.AppRunner) and runner.server is not None
        front = self._front = _Front(runner.app[SERVICES], runner.server)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(front), self._host, self._port,
                                                reuse_address=True, reuse_port=self._reuse_port or None)
        front.sweeper = loop.create_task(front.sweep_idle())

    async def stop(self) -> None:
        await super().stop()
        if self._front is not None:
            await self._front.shutdown(self._shutdown_timeout)
