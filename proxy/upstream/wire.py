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
    """Keep-alive connections to the origin of ``base_url``; ``request`` sends one request."""

    __slots__ = ("scheme", "host", "port", "prefix", "_host_line", "_ssl", "_connect_timeout", "read_timeout",
                 "_idle", "_all", "_sweeper", "_loop", "_closed")

    def __init__(self, base_url: str, *, connect_timeout_s: float = 10.0, read_timeout_s: float = 600.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
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
        self._idle: deque[Connection] = deque()   # oldest on the left; reuse takes the newest
        self._all: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def idle_count(self) -> int:
        return sum(1 for conn in self._idle if not conn.closed)

    async def request(self, method: str, target: str, headers: dict[str, str], body: bytes | None = None) -> Response:
        """Send ``method target`` (``target`` below the base URL's path, query included) and
        return the response once its head has arrived, its body unread. The caller must end it
        with ``Response.release()`` or ``Response.close()``."""
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        if method == "HEAD":
            raise ValueError("HEAD requests are not supported")
        payload = self._message(method, target, headers, body)
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport.is_closing():  # type: ignore[union-attr]
                continue
            response = Response(conn)
            try:
                return await conn.exchange(payload, response)
            except ConnectionLost:
                if response.got_bytes:
                    raise
                break  # the server had closed this idle connection: one more try on a new one
        conn = await self._connect()
        return await conn.exchange(payload, Response(conn))

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

    async def _connect(self) -> Connection:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        conn = Connection(self, loop)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(lambda: conn, self.host, self.port, ssl=self._ssl,
                                             server_hostname=self.host if self._ssl is not None else None)
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection to {self.host}:{self.port} within {self._connect_timeout} s") from exc
        if not conn.closed:
            self._all.add(conn)
        return conn

    def put_back(self, conn: Connection) -> None:
        """Keep a connection whose response was read to the end, for the next request."""
        if self._closed:
            conn.close()
            return
        loop = conn.loop
        conn.idle_since = loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_at(conn.idle_since + IDLE_TIMEOUT_S, self._sweep)

    def forget(self, conn: Connection) -> None:
        self._all.discard(conn)

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
        for conn in list(self._all):
            conn.close()
        if self._all:
            await asyncio.sleep(0)  # let the transports report their close
