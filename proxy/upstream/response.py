"""One upstream response: its head, and its body as the connection fills it in.

The caller reads the body whole (``read``) or as it arrives (``read_chunk``), decoded, and ends
the response with ``release`` (its connection goes back to the pool) or ``close``.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from proxy.upstream.decoding import decompressor
from proxy.upstream.errors import ConnectionLost, ProtocolError

if TYPE_CHECKING:
    from proxy.upstream.connection import Connection

__all__ = ["Response"]

_NO_HEADERS: CIMultiDict[str] = CIMultiDict()


class Response:
    """A response whose head has arrived; its body is read with ``read`` or ``read_chunk``."""

    __slots__ = ("status", "headers", "content_type", "keep_alive", "chunks", "buffered", "waiter", "complete",
                 "error", "got_bytes", "until_close", "interim", "whole", "encoding", "raw_headers", "sent_at",
                 "first_byte_at", "_conn", "_decoder", "_drained")

    def __init__(self, conn: Connection) -> None:
        self._conn: Connection | None = conn
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
        self.encoding: str | None = None   # set for a body to decode (one of ``decoding.DECODED``)
        self._decoder: Any = None
        self._drained = False   # the reader was told the body ended
        self.sent_at = 0.0         # time.perf_counter() when the request was written
        self.first_byte_at = 0.0   # ... when the first byte of the response arrived (0: none yet)

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

    def received(self) -> bytes:
        """The body bytes that arrived and were not read yet (decoded as far as they go): what a
        failed ``read`` leaves of a body cut short."""
        chunks = self.chunks
        data = b"".join(chunks)
        if self.encoding is not None and data:
            try:
                data = self._decode(data)
            except ProtocolError:
                return b""
        return data

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
            decoder = self._decoder = decompressor(self.encoding, data)  # type: ignore[arg-type]
        try:
            return decoder.decompress(data)
        except zlib.error as exc:
            raise ProtocolError(f"cannot decode the {self.encoding} body: {exc}") from exc

    def _decode_end(self) -> bytes:
        decoder = self._decoder
        if decoder is None:
            return b""
        try:
            return decoder.flush()
        except zlib.error as exc:
            raise ProtocolError(f"cannot decode the {self.encoding} body: {exc}") from exc

