"""A lean HTTP/1.1 client for one upstream origin: pooled keep-alive connections, each an
asyncio ``Protocol`` whose responses are parsed by httptools (llhttp).

It does what forwarding to an OpenAI-compatible provider needs and no more: http and https,
a base URL with a path prefix, one request at a time per connection (head and body in one
write), responses framed by Content-Length, chunked encoding or the connection's close,
gzip and deflate bodies decoded (a body in any other encoding refused: ``decoding``), 1xx
answers skipped, idle connections kept for reuse. It does not do HTTP/2, pipelining, proxies,
redirects, cookies, ``Expect: 100-continue``, upgrades, trailers or HEAD requests.

Here: ``Pool`` (the connections to one origin, the request's bytes); ``connection`` (one
connection and its parser), ``response`` (a response and its body), ``decoding`` (content
encodings), ``errors`` (what it raises, mapped to farebox's errors in ``proxy.upstream.relay``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import urlsplit

from proxy.upstream.connection import HIGH_WATER, TIMER_SLACK_S, Connection
from proxy.upstream.errors import (
    ConnectionLost,
    ConnectTimeout,
    ProtocolError,
    ReadTimeout,
    UndecodableBody,
    WireError,
    WireTimeout,
)
from proxy.upstream.response import Response

__all__ = [
    "Pool", "Response", "WireError", "ConnectionLost", "ProtocolError", "UndecodableBody", "WireTimeout",
    "ConnectTimeout", "ReadTimeout", "IDLE_TIMEOUT_S", "HIGH_WATER",
]

IDLE_TIMEOUT_S = 60.0        # an unused pooled connection is closed after this long
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NEEDS_LENGTH = frozenset({"POST", "PUT", "PATCH"})


class Pool:
    """Keep-alive connections to the origin of ``base_url``, at most ``max_connections`` open at
    once; ``request`` sends one request. A request that finds no idle connection and the cap
    reached waits for one (first come, first served); the wait counts against the connect
    timeout."""

    __slots__ = ("scheme", "host", "port", "prefix", "_host_line", "_ssl", "_connect_timeout", "read_timeout",
                 "max_connections", "_idle", "_all", "_waiters", "_sweeper", "_loop", "_closed")

    def __init__(self, base_url: str, *, connect_timeout_s: float = 10.0, read_timeout_s: float = 600.0,
                 max_connections: int = 1000) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or _DEFAULT_PORTS[parts.scheme]
        self.prefix = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != _DEFAULT_PORTS[parts.scheme]:
            host = f"{host}:{self.port}"
        self._host_line = f"Host: {host}"
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._connect_timeout = connect_timeout_s
        self.read_timeout = read_timeout_s
        self.max_connections = max_connections
        self._idle: deque[Connection] = deque()   # oldest on the left; reuse takes the newest
        self._all: set[Connection] = set()         # open or opening: what counts against the cap
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def idle_count(self) -> int:
        return sum(1 for conn in self._idle if not conn.closed)

    @property
    def open_count(self) -> int:
        """Connections open or being opened."""
        return len(self._all)

    async def request(self, method: str, target: str, headers: dict[str, str], body: bytes | None = None) -> Response:
        """Send ``method target`` (``target`` below the base URL's path, query included) and
        return the response once its head has arrived, its body unread. The caller must end it
        with ``Response.release()`` or ``Response.close()``. A ``WireError`` raised after the
        request was written carries its ``Response`` (``errors``)."""
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        if method == "HEAD":
            raise ValueError("HEAD requests are not supported")
        payload = self._message(method, target, headers, body)
        conn = self._idle_connection()
        if conn is not None:
            response = Response(conn)
            try:
                return await conn.exchange(payload, response)
            except ConnectionLost:
                if response.got_bytes:
                    raise
                # the server had closed this idle connection: one more try on a new one
        conn = await self._new_connection()
        return await conn.exchange(payload, Response(conn))

    def _idle_connection(self) -> Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.transport.is_closing():  # type: ignore[union-attr]
                return conn
        return None

    async def _new_connection(self) -> Connection:
        """A new connection, or one freed while this request waited for it under the cap."""
        if len(self._all) < self.max_connections and not self._waiters:
            return await self._connect(self._connect_timeout)
        loop = self._loop
        assert loop is not None  # a connection was made before the cap could be reached
        deadline = loop.time() + self._connect_timeout
        first = True
        while True:
            if not first and len(self._all) < self.max_connections:   # woken for a free place
                return await self._connect(max(0.0, deadline - loop.time()))
            waiter: asyncio.Future[Connection | None] = loop.create_future()
            if first:
                self._waiters.append(waiter)
            else:  # woken, but the place was taken or the connection closed: stay at the front
                self._waiters.appendleft(waiter)
            first = False
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await waiter
            except BaseException as exc:
                self._give_up(waiter)
                if isinstance(exc, TimeoutError):
                    raise ConnectTimeout(f"no free connection to {self.host}:{self.port} within "
                                         f"{self._connect_timeout} s ({self.max_connections} in use)") from exc
                raise
            if conn is not None and not conn.closed and not conn.transport.is_closing():  # type: ignore[union-attr]
                return conn

    def _give_up(self, waiter: asyncio.Future[Connection | None]) -> None:
        """A request stops waiting: what it was handed, if anything, goes to the next one."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            conn = waiter.result()   # handed over (and out of the queue) as it gave up
            if conn is None:
                self._wake_next(None)
            else:
                self.put_back(conn)
            return
        waiter.cancel()
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def _wake_next(self, conn: Connection | None) -> bool:
        """Hand ``conn`` (None: a free slot) to the first request still waiting; False if none is."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _message(self, method: str, target: str, headers: dict[str, str], body: bytes | None) -> bytes:
        lines = [f"{method} {self.prefix}{target} HTTP/1.1", self._host_line]
        lines.extend([f"{name}: {value}" for name, value in headers.items()])
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        elif method in _NEEDS_LENGTH:
            lines.append("Content-Length: 0")
        lines.append("")
        lines.append("")
        text = "\r\n".join(lines)
        breaks = len(lines) - 1
        if text.count("\n") != breaks or text.count("\r") != breaks:
            raise ValueError("a request header contains a line break")
        head = text.encode("utf-8", "surrogateescape")
        return head + body if body else head

    async def _connect(self, timeout_s: float) -> Connection:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        conn = Connection(self, loop)
        self._all.add(conn)
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(lambda: conn, self.host, self.port, ssl=self._ssl,
                                             server_hostname=self.host if self._ssl is not None else None)
        except BaseException as exc:
            conn.close()
            self.forget(conn)
            if isinstance(exc, TimeoutError):
                raise ConnectTimeout(f"no connection to {self.host}:{self.port} within {self._connect_timeout} s") from exc
            raise
        if conn.closed:  # the upstream closed it as soon as it was made: nothing was sent
            raise ConnectionLost(f"{self.host}:{self.port} closed the connection as soon as it was made")
        return conn

    def put_back(self, conn: Connection) -> None:
        """Keep a connection whose response was read to the end, for the next request (the
        first one waiting for a connection, if any)."""
        if self._closed:
            conn.close()
            return
        if self._waiters and self._wake_next(conn):
            return
        loop = conn.loop
        conn.idle_since = loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_at(conn.idle_since + IDLE_TIMEOUT_S, self._sweep)

    def forget(self, conn: Connection) -> None:
        """A connection closed (or was never made): its place under the cap goes to a waiting request."""
        if conn in self._all:
            self._all.discard(conn)
            if self._waiters:
                self._wake_next(None)

    def _sweep(self) -> None:
        """Close connections idle for ``IDLE_TIMEOUT_S``; come back for the next one due."""
        self._sweeper = None
        idle = self._idle
        loop = self._loop
        assert loop is not None
        now = loop.time() + TIMER_SLACK_S
        while idle and (idle[0].closed or idle[0].idle_since + IDLE_TIMEOUT_S <= now):
            idle.popleft().close()
        if idle:
            self._sweeper = loop.call_at(idle[0].idle_since + IDLE_TIMEOUT_S, self._sweep)

    async def close(self) -> None:
        """Close every connection, idle or in use."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionLost("the connection pool was closed"))
        for conn in list(self._all):
            conn.close()
        if self._all:
            await asyncio.sleep(0)  # let the transports report their close
