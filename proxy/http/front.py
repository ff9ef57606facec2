"""farebox's own HTTP/1.1 server, in front of aiohttp.

Every connection starts here. A request in the well-formed common shape, the one SDKs send:

    POST <a metered path>[?query] HTTP/1.1, printable-ASCII header fields, one Content-Length,
    a head of at most 8 KB, no Transfer-Encoding, Expect or Upgrade

(the paths given to ``FrontServer``: ``proxy.apis.registry.METERED``'s) is read, answered and
kept alive here: the handler (``proxy.flow.serve_metered`` bound to the services) runs on the parsed head and the whole body, and the answer
is written straight to the socket. aiohttp's per-request machinery (its request and response
objects, middleware and router) was about a third of farebox's CPU per request.

Any other whole head (another path or method, a chunked body, ``Expect: 100-continue``,
HTTP/1.0, an unusual or non-ASCII head, a body over ``max_body_bytes``) hands the connection
over to aiohttp, at a request boundary and with the bytes received so far untouched; aiohttp
then serves that connection to its end, exactly as it would have from its first byte. So does
a head over 8 KB. A head with bare-LF line ends is answered 400 here, a request line naming
another HTTP version than 1.x 505, both closing the connection.

Deadlines (``Limits``): a head must arrive whole within ``head_timeout_s`` of its first byte,
and a body within ``body_timeout_s`` of its head (else 408, and the connection is closed); a
connection without a request is closed after ``idle_timeout_s``. Beyond ``max_connections``
open connections (this server's and aiohttp's together), a new connection is closed at once.

The request id, the checks on a head, error bodies, 500s and the access log are the ``Edge``'s
(``proxy.http.edge``), shared with aiohttp's side. Heads are read in ``proxy.http.front_head``,
answers written in ``proxy.http.front_exchange``; ``proxy.http.site.FrontSite`` wires this
server to an aiohttp application.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from proxy.errors import FareboxError, RequestTimeout
from proxy.http.edge import BODY_TIMEOUT_S, Edge
from proxy.http.front_exchange import FrontExchange
from proxy.http.front_head import CHAT_PATH, HAND_OVER, Refusal, Request, head_pattern, read_head
from proxy.ratelimited import RateLimitedLog

if TYPE_CHECKING:
    from proxy.flow import Exchange

__all__ = ["FrontServer", "Connection", "Limits", "give_connection"]

MAX_PENDING_BYTES = 1 << 20   # bytes received ahead of the request in flight before reading pauses


@dataclass(frozen=True, slots=True)
class Limits:
    """How long and how many (see the module docstring); ``sweep_s``: how often deadlines are checked."""

    idle_timeout_s: float = 75.0
    head_timeout_s: float = 10.0
    body_timeout_s: float = BODY_TIMEOUT_S
    max_connections: int = 10_000
    sweep_s: float = 1.0


Handler = Callable[["Exchange"], Awaitable[None]]


class FrontServer:
    """farebox's own server (see the module docstring): ``handler`` answers each request read
    here, ``edge`` does what both servers do alike, ``hand_over()`` makes the protocol (aiohttp's)
    that takes a connection over; ``open_elsewhere()`` counts the connections it holds."""

    def __init__(self, handler: Handler, edge: Edge, hand_over: Callable[[], asyncio.Protocol], *,
                 max_body_bytes: int, limits: Limits = Limits(),
                 open_elsewhere: Callable[[], int] = lambda: 0, paths: Iterable[str] = (CHAT_PATH,)) -> None:
        self.handler, self.edge, self.hand_over = handler, edge, hand_over
        self.heads = head_pattern(paths)  # the POST paths answered here
        self.max_body, self.limits, self.open_elsewhere = max_body_bytes, limits, open_elsewhere
        self.connections: set[Connection] = set()
        self.handed_over = 0  # connections aiohttp took over
        self.refused = 0      # connections closed at once, over max_connections
        self.closing = False
        self._refusals = RateLimitedLog(edge.log, held_note=" (%d more left out of the log)")
        self._listener: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def listen(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(lambda: Connection(self), host, port,
                                                  reuse_address=True, reuse_port=reuse_port or None)
        self._sweeper = loop.create_task(self._sweep())

    @property
    def port(self) -> int | None:
        if self._listener is None or not self._listener.sockets:
            return None
        return self._listener.sockets[0].getsockname()[1]

    def admit(self) -> bool:
        """Whether a new connection may stay open."""
        if self.closing:
            return False
        if len(self.connections) + self.open_elsewhere() < self.limits.max_connections:
            return True
        self.refused += 1
        self._refusals.warning("connection closed at once: %d connections are open (the limit)",
                               self.limits.max_connections)
        return False

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.limits.sweep_s)
            now = loop.time()
            for conn in [c for c in self.connections if c.exchange is None and c.deadline < now]:
                conn.time_out()

    async def stop(self, timeout: float) -> None:
        """Stop listening, close idle connections now, let requests in flight finish (up to ``timeout``)."""
        self.closing = True
        if self._listener is not None:
            self._listener.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
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


def give_connection(transport: asyncio.BaseTransport, protocol: asyncio.Protocol, pending: bytes) -> None:
    """Hand ``transport`` to ``protocol`` (aiohttp's, from its public protocol factory) as if it
    had just connected and received ``pending``: asyncio's own protocol calls, no aiohttp internal."""
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if pending:
        protocol.data_received(pending)


class Connection(asyncio.Protocol):
    """One client connection while farebox answers it itself."""

    __slots__ = ("server", "loop", "transport", "buf", "scan_from", "waiting", "exchange", "task", "deadline",
                 "reading_paused", "writing_paused", "drained", "lost")

    def __init__(self, server: FrontServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.scan_from = 0
        self.waiting: Request | None = None     # a head read, its body not all here yet
        self.exchange: FrontExchange | None = None  # the request being answered
        self.task: asyncio.Task[None] | None = None
        self.deadline = 0.0  # loop time by which the head, body or next request must have come
        self.reading_paused = self.writing_paused = self.lost = False
        self.drained: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass
        if not self.server.admit():
            transport.close()
            return
        self.deadline = self.loop.time() + self.server.limits.idle_timeout_s
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:
            if not self.buf and self.waiting is None:  # a head begins
                self.deadline = self.loop.time() + self.server.limits.head_timeout_s
            self.buf += data
            self._next()
            return
        self.buf += data
        if len(self.buf) > MAX_PENDING_BYTES and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        return False  # close our side too (after any answer already written)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        self._wake(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake(None)

    # reading requests

    def _next(self) -> None:
        """Answer, wait for, refuse or hand over what the buffer starts with."""
        buf = self.buf
        request = self.waiting
        if request is None:
            if not buf:
                return
            found = read_head(buf, self.scan_from, self.server.max_body, self.server.heads)
            if found is HAND_OVER:
                self._hand_over()
                return
            if isinstance(found, int):
                self.scan_from = found
                return
            if isinstance(found, Refusal):
                self._refuse(found.error, found.method, found.path, None)
                return
            assert isinstance(found, Request)
            request = found
            self.scan_from = 0
            if len(buf) < request.end:
                self.waiting = request
                self.deadline = self.loop.time() + self.server.limits.body_timeout_s
                return
        elif len(buf) < request.end:
            return
        self.waiting = None
        body = bytes(buf[request.body_start:request.end])
        del buf[:request.end]
        ex = self.exchange = FrontExchange(self, self.server.edge.new_request_id(), request.path, request.query,
                                           request.headers, body, request.keep_alive, time.perf_counter())
        self.task = self.loop.create_task(self._serve(ex))

    async def _serve(self, ex: FrontExchange) -> None:
        server = self.server
        edge = server.edge
        try:
            edge.check_head(ex.headers)
            await server.handler(ex)
        except FareboxError as exc:
            ex.fail(exc)
        except asyncio.CancelledError:
            ex.cut()
            raise
        except Exception:  # a bug: logged, answered 500 as on aiohttp's side, never left hanging
            ex.fail(edge.crashed(ex.request_id))
        finally:
            edge.access("POST", ex.path, ex.status if ex.started else 499, ex.headers, ex.request_id, ex.since,
                        ex.answer_id)
            self._finished(ex)

    def _finished(self, ex: FrontExchange) -> None:
        self.exchange = self.task = None
        if self.lost:
            return
        if not ex.answered or not ex.keep_alive or self.server.closing:
            self.close()
            return
        limits = self.server.limits
        self.deadline = self.loop.time() + (limits.head_timeout_s if self.buf else limits.idle_timeout_s)
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._next()

    def _refuse(self, error: FareboxError, method: str, path: str, headers: CIMultiDict[str] | None) -> None:
        """Answer ``error`` and close: the rest of what was sent cannot be read as requests."""
        since = time.perf_counter()
        ex = FrontExchange(self, self.server.edge.new_request_id(), path, "", headers or CIMultiDict(), b"", False,
                           since)
        ex.fail(error)
        self.server.edge.access(method, path, error.status, headers, ex.request_id, since)
        self.buf.clear()
        self.close()

    def time_out(self) -> None:
        """The deadline passed: 408 for a body still missing, else just close."""
        if self.waiting is not None:
            self._refuse(RequestTimeout("The request body did not arrive in time."), "POST", self.waiting.path,
                         self.waiting.headers)
        else:
            self.close()

    def _hand_over(self) -> None:
        """aiohttp serves this connection from here on, starting with the bytes still unread."""
        transport = self.transport
        assert transport is not None
        self.server.connections.discard(self)
        self.server.handed_over += 1
        pending, self.buf = bytes(self.buf), bytearray()
        give_connection(transport, self.server.hand_over(), pending)
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
        self.server.connections.discard(self)
