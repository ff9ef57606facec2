"""One keep-alive connection to the upstream: an asyncio ``Protocol`` that feeds what arrives to
httptools (llhttp), whose callbacks fill in the current ``Response``."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httptools
from multidict import CIMultiDict

from proxy.upstream.decoding import DECODED, PLAIN
from proxy.upstream.errors import ConnectionLost, ProtocolError, ReadTimeout, UndecodableBody, WireError
from proxy.upstream.response import Response

if TYPE_CHECKING:
    from proxy.upstream.wire import Pool

__all__ = ["Connection", "HIGH_WATER", "TIMER_SLACK_S"]

HIGH_WATER = 256 * 1024      # unread body bytes above which the socket is not read until the reader takes them
TIMER_SLACK_S = 0.001        # a timer may fire this early (the loop's clock resolution)


class Connection(asyncio.Protocol):
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
        """Write the request; the response once its head has arrived. A ``WireError`` from here on
        carries ``response``: the request was written."""
        self.response = response
        try:
            response.sent_at = time.perf_counter()
            self.transport.write(payload)  # type: ignore[union-attr]
            while response.status == 0:
                if response.error is not None:
                    raise response.error
                await response.wait()
        except WireError as exc:
            exc.response = response
            self.close()
            raise
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
        if self.loop.time() + TIMER_SLACK_S >= due:
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
        if not response.got_bytes:
            response.got_bytes = True
            response.first_byte_at = time.perf_counter()
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
            encoding = encoding.strip().lower()
            if encoding in DECODED:
                response.encoding = encoding
            elif encoding not in PLAIN:  # refused before anything of it is read or passed on
                response.fail(UndecodableBody(encoding, status))
                return
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
