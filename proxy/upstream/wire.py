"""A lean HTTP/1.1 client for one upstream origin: pooled keep-alive connections, each an
asyncio ``Protocol`` whose responses are parsed by httptools (llhttp).

It does what forwarding to an OpenAI-compatible provider needs and no more: http and https,
a base URL with a path prefix, one request at a time per connection (head and body in one
write), responses framed by Content-Length, chunked encoding or the connection's close,
gzip and deflate bodies decoded (other encodings passed on as they are), 1xx answers skipped,
idle connections kept for reuse. It does not do HTTP/2, pipelining, proxies, redirects,
cookies, ``Expect: 100-continue``, upgrades, trailers or HEAD requests.

Errors it raises (``proxy.upstream.relay`` turns them into farebox's 502/504):

    WireError                  the exchange with the upstream failed
    ├── ConnectionLost         the connection closed before the response was complete
    ├── ProtocolError          what came back is not an HTTP/1.1 response farebox can read
    └── WireTimeout            nothing came in time
        ├── ConnectTimeout     no connection within the connect timeout
        └── ReadTimeout        no byte of the response for the read timeout

and ``OSError`` as the loop raises it when a connection cannot be made (refused, unreachable,
a name that does not resolve, a TLS handshake that fails).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

__all__ = [
    "Pool", "Response", "WireError", "ConnectionLost", "ProtocolError", "WireTimeout", "ConnectTimeout",
    "ReadTimeout", "IDLE_TIMEOUT_S", "HIGH_WATER",
]

IDLE_TIMEOUT_S = 60.0        # an unused pooled connection is closed after this long
HIGH_WATER = 256 * 1024      # unread body bytes above which the socket is not read until the reader takes them
_TIMER_SLACK_S = 0.001       # a timer may fire this early (the loop's clock resolution)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NEEDS_LENGTH = frozenset({"POST", "PUT", "PATCH"})


class WireError(Exception):
    """The exchange with the upstream failed."""


class ConnectionLost(WireError):
    """The connection closed (or was reset) before the response was complete."""


class ProtocolError(WireError):
    """What came back is not an HTTP/1.1 response that can be read."""


class WireTimeout(WireError):
    """Nothing came in time."""


class ConnectTimeout(WireTimeout):
    """No connection to the upstream within the connect timeout."""


class ReadTimeout(WireTimeout):
    """No byte of the response arrived for the read timeout."""


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
        self._idle: deque[_Connection] = deque()   # oldest on the left; reuse takes the newest
        self._all: set[_Connection] = set()
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

    async def _connect(self) -> _Connection:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        conn = _Connection(self, loop)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(lambda: conn, self.host, self.port, ssl=self._ssl,
                                             server_hostname=self.host if self._ssl is not None else None)
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection to {self.host}:{self.port} within {self._connect_timeout} s") from exc
        if not conn.closed:
            self._all.add(conn)
        return conn

    def put_back(self, conn: _Connection) -> None:
        """Keep a connection whose response was read to the end, for the next request."""
        if self._closed:
            conn.close()
            return
        loop = conn.loop
        conn.idle_since = loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_at(conn.idle_since + IDLE_TIMEOUT_S, self._sweep)

    def forget(self, conn: _Connection) -> None:
        self._all.discard(conn)

    def _sweep(self) -> None:
        """Close connections idle for ``IDLE_TIMEOUT_S``; come back for the next one due."""
        self._sweeper = None
        idle = self._idle
        loop = self._loop
        assert loop is not None
        now = loop.time() + _TIMER_SLACK_S
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


class _Connection(asyncio.Protocol):
    """One connection: feeds what arrives to the parser, which fills the current Response."""

    __slots__ = ("pool", "loop", "transport", "parser", "response", "closed", "paused", "idle_since",
                 "last_io", "timer")

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool, self.loop = pool, loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.paused = False
        self.idle_since = 0.0
        self.last_io = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- driving one exchange --

    async def exchange(self, payload: bytes, response: Response) -> Response:
        self.response = response
        try:
            self.transport.write(payload)  # type: ignore[union-attr]
            while response.status == 0:
                if response.error is not None:
                    raise response.error
                await response.wait()
        except BaseException:
            self.close()
            raise
        return response

    def watch(self) -> None:
        """A reader starts waiting: count from now, and make sure a timer looks at it."""
        self.last_io = now = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_at(now + self.pool.read_timeout, self._check_timeout)

    def _check_timeout(self) -> None:
        """One timer per wait, not per chunk: it re-arms itself while bytes keep coming."""
        self.timer = None
        response = self.response
        if response is None or response.waiter is None:
            return  # nobody is waiting: the next wait arms a new timer
        due = self.last_io + self.pool.read_timeout
        if self.loop.time() + _TIMER_SLACK_S >= due:
            response.fail(ReadTimeout(f"no data from the upstream for {self.pool.read_timeout} s"))
            self.close()
        else:
            self.timer = self.loop.call_at(due, self._check_timeout)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: this connection cannot be trusted again
            self.close()
            return
        self.last_io = self.loop.time()
        response.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if response.complete:  # bytes after the whole response: it stands, the connection does not
                response.keep_alive = False
            else:
                response.fail(ProtocolError(f"malformed response: {exc}"))
                self.close()
        except httptools.HttpParserUpgrade:
            response.fail(ProtocolError("the upstream switched protocols"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        response = self.response
        if response is not None and not response.complete and response.error is None:
            if exc is None and response.until_close and response.status:
                response.keep_alive = False
                response.finish()
            else:
                lost = ConnectionLost(f"{exc.__class__.__name__}: {exc}" if exc is not None else
                                      "the upstream closed the connection before the response was complete")
                lost.__cause__ = exc
                response.fail(lost)

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        if self.response.complete:  # type: ignore[union-attr]
            raise _Unsolicited()  # stops the parser; data_received sees it as a parser error

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.raw_headers.append((name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        parser = self.parser
        status = parser.get_status_code()
        raw = response.raw_headers
        if status < 200:  # 1xx: informational, the real answer follows
            raw.clear()
            response.interim = True
            return
        headers = CIMultiDict([(n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                               for n, v in raw])
        response.raw_headers = []
        response.headers = headers
        content_type = headers.get("Content-Type")
        response.content_type = (content_type.partition(";")[0].strip().lower() if content_type
                                 else "application/octet-stream")
        encoding = headers.get("Content-Encoding")
        if encoding is not None:
            response.encoding = encoding.strip().lower()
        if "Content-Length" not in headers and "chunked" not in headers.get("Transfer-Encoding", "").lower():
            response.until_close = True  # unless the parser finds it has no body (204, 304): ends at the close
        response.keep_alive = parser.should_keep_alive()
        response.status = status
        response.wake()

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response.chunks.append(body)
        response.buffered += len(body)
        if response.waiter is not None:
            response.wake()
        if response.buffered > HIGH_WATER and not response.whole and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        if response.interim:
            response.interim = False
            return
        response.finish()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if not self.closed:
                self.transport.resume_reading()  # type: ignore[union-attr]


class _Unsolicited(Exception):
    """A second response began on a connection that was asked for one."""


class Response:
    """A response whose head has arrived; its body is read with ``read`` or ``read_chunk``."""

    __slots__ = ("status", "headers", "content_type", "keep_alive", "chunks", "buffered", "waiter", "complete",
                 "error", "got_bytes", "until_close", "interim", "whole", "encoding", "raw_headers", "_conn",
                 "_decoder", "_drained")

    def __init__(self, conn: _Connection) -> None:
        self._conn: _Connection | None = conn
        self.status = 0
        self.headers: CIMultiDict[str] = _NO_HEADERS
        self.content_type = ""
        self.keep_alive = False
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []   # the reader takes them all at once: a list does
        self.buffered = 0
        self.waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.error: BaseException | None = None
        self.got_bytes = False
        self.until_close = False
        self.interim = False
        self.whole = False
        self.encoding: str | None = None
        self._decoder: Any = None
        self._drained = False   # the reader was told the body ended

    # -- filled by the connection --

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def finish(self) -> None:
        self.complete = True
        self.wake()

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.keep_alive = False
        self.wake()

    async def wait(self) -> None:
        conn = self._conn
        if conn is None:
            raise ConnectionLost("the response was already closed")
        waiter = self.waiter = conn.loop.create_future()
        conn.watch()
        await waiter

    # -- read by the caller --

    async def read(self) -> bytes:
        """The whole body (decoded)."""
        if not self.complete:
            self.whole = True  # no pausing: everything is wanted now
            if self._conn is not None:
                self._conn.resume()
            while not self.complete:
                if self.error is not None:
                    raise self.error
                await self.wait()
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.encoding is not None:
            data = self._decode(data) + self._decode_end()
        self._drained = True
        return data

    async def read_chunk(self) -> bytes:
        """The body bytes received since the last call, as soon as there are some; b"" at the end."""
        chunks = self.chunks
        while True:
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                conn = self._conn
                if conn is not None and conn.paused:
                    conn.resume()
                if self.encoding is not None:
                    data = self._decode(data)
                    if not data:
                        continue
                return data
            if self.error is not None:
                raise self.error
            if self.complete:
                if self._drained:
                    return b""
                self._drained = True
                return self._decode_end() if self.encoding is not None else b""
            await self.wait()

    def release(self) -> None:
        """Done with this response: its connection goes back to the pool if the body was read to
        the end and the upstream keeps the connection open; otherwise it is closed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.response = None
        if self.complete and not self.chunks and self.keep_alive and not conn.closed and not conn.paused:
            conn.pool.put_back(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Done with this response, read or not: its connection is closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.response = None
            conn.close()

    @property
    def closed(self) -> bool:
        return self._conn is None

    # -- content encodings --

    def _decode(self, data: bytes) -> bytes:
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = _decompressor(self.encoding, data)  # type: ignore[arg-type]
        if decoder is False:
            return data
        try:
            return decoder.decompress(data)
        except zlib.error as exc:
            raise ProtocolError(f"cannot decode the {self.encoding} body: {exc}") from exc

    def _decode_end(self) -> bytes:
        decoder = self._decoder
        if not decoder:
            return b""
        try:
            return decoder.flush()
        except zlib.error as exc:
            raise ProtocolError(f"cannot decode the {self.encoding} body: {exc}") from exc


_NO_HEADERS: CIMultiDict[str] = CIMultiDict()


def _decompressor(encoding: str, first: bytes) -> Any:
    """A zlib decompressor for gzip or deflate (with or without its zlib wrapper, as servers
    send both), or False for any other encoding, whose bytes are passed on as they are."""
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        wrapped = bool(first) and first[0] & 0x0F == 8 and first[0] >> 4 <= 7
        return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    return False
