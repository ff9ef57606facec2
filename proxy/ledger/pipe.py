"""One Redis connection that every request shares, its commands pipelined: the hot path.

Each metered request runs two scripts (reserve before forwarding, settle after). Sent through
redis-py's asyncio client they cost about half a millisecond of CPU together, most of it in
the client's layers (pool checkout, retry wrapper, per-argument encoding, a pure-Python reply
parser), not in Redis. ``RedisPipe`` sends those commands on one connection instead: the first
command of an event-loop turn is written at once (it is on the wire before its caller goes on,
as with redis-py), the others of the same turn together at its end, and Redis answers in
order, so each reply goes to the oldest waiting caller. Everything else (budgets, reports,
the spool) keeps using redis-py.

What callers see matches redis-py's: an error reply raises ``redis.exceptions.ResponseError``
(``NoScriptError`` for NOSCRIPT), a lost or refused connection ``ConnectionError``, a reply
slower than ``timeout_s`` ``TimeoutError``; a command whose connection failed is sent once
more on a new connection after a short pause, so every script sent here must change nothing
when it runs twice (``scripts.py`` says how each does).
Plain ``redis://`` and ``unix://`` URLs are served; for anything else (TLS, ...) ``from_url``
returns None and the ledger stays on redis-py.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Awaitable, Iterable
from urllib.parse import parse_qs, unquote, urlsplit

from redis.exceptions import NoScriptError, ResponseError

__all__ = ["RedisPipe", "pack_command", "pack_args", "pack_strs"]

RETRY_PAUSE_S = 0.05
_CRLF = b"\r\n"


def pack_args(args: Iterable[Any]) -> bytes:
    """``args`` as Redis protocol bulk strings, without the array header: the pieces that
    ``pack_command`` frames, and that callers may pack once and send many times."""
    out = []
    append = out.append
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def pack_strs(args: tuple[str, ...]) -> bytes:
    """``pack_args`` for strings only, the per-request case: formatted as one text and
    encoded once (about a third faster); text that is not all ASCII takes ``pack_args``."""
    text = "".join([f"${len(a)}\r\n{a}\r\n" for a in args])
    data = text.encode()
    return data if len(data) == len(text) else pack_args(args)


def pack_command(args: tuple[Any, ...]) -> bytes:
    """``args`` in the Redis protocol (an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + pack_args(args)


class _Incomplete(Exception):
    """The buffer ends inside a reply."""


def _error(message: str) -> ResponseError:
    return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One reply (RESP2) starting at ``pos``: its value and the position after it."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 58:  # ':' integer
        return int(buf[pos + 1:end]), end + 2
    if kind == 36:  # '$' bulk string
        size = int(buf[pos + 1:end])
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            raise _Incomplete
        return bytes(buf[end + 2:stop]), stop + 2
    if kind == 42:  # '*' array
        count = int(buf[pos + 1:end])
        if count < 0:
            return None, end + 2
        items = []
        pos = end + 2
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 43:  # '+' simple string
        return bytes(buf[pos + 1:end]), end + 2
    if kind == 45:  # '-' error
        return _error(buf[pos + 1:end].decode(errors="replace")), end + 2
    raise ConnectionError(f"unexpected reply from Redis: {bytes(buf[pos:end])[:80]!r}")


class _Protocol(asyncio.Protocol):
    """The connection: writes coalesced per loop turn, replies handed out in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future] = collections.deque()
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False
        self.buffer = bytearray()
        self.closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, packed: list[bytes]) -> list[asyncio.Future]:
        """Queue commands; the first of a loop turn is written at once (so it is on its way
        before the caller goes on), the rest of the turn's together at the turn's end."""
        if self.closed is not None or self.transport is None:
            raise ConnectionError(f"Redis connection closed: {self.closed}")
        futures = [self.loop.create_future() for _ in packed]
        self.waiting.extend(futures)
        if self.flush_scheduled:
            self.outgoing.extend(packed)
        else:
            self.transport.write(b"".join(packed) if len(packed) > 1 else packed[0])
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        return futures

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.outgoing and self.transport is not None and self.closed is None:
            data = b"".join(self.outgoing) if len(self.outgoing) > 1 else self.outgoing[0]
            self.outgoing.clear()
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                value, pos = _parse(buf, pos)
                if not self.waiting:
                    raise ConnectionError("Redis sent a reply nobody asked for")
                future = self.waiting.popleft()
                if not future.done():  # a caller that gave up still has its reply read here
                    future.set_result(value)
        except _Incomplete:
            pass
        except (ConnectionError, ValueError) as exc:
            self.abort(ConnectionError(f"Redis protocol error: {exc}"))
            return
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"Redis connection lost: {exc}" if exc else "Redis closed the connection"))

    def abort(self, exc: Exception) -> None:
        self._fail(exc)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        if self.closed is None:
            self.closed = exc
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)

    def oldest(self) -> asyncio.Future | None:
        return self.waiting[0] if self.waiting else None


class RedisPipe:
    """Commands from many coroutines on one connection (reconnected when it fails)."""

    def __init__(self, *, path: str | None = None, host: str = "127.0.0.1", port: int = 6379, db: int = 0,
                 username: str | None = None, password: str | None = None, connect_timeout_s: float = 2.0,
                 timeout_s: float = 10.0) -> None:
        self.path, self.host, self.port, self.db = path, host, port, db
        self.username, self.password = username, password
        self.connect_timeout_s, self.timeout_s = connect_timeout_s, timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._scripts: list[bytes] = []

    def load_on_connect(self, *sources: str) -> None:
        """Load these Lua scripts on every new connection before anything else is sent on it,
        so an ``EVALSHA`` of theirs finds them even right after Redis restarted."""
        for source in sources:
            command = pack_command(("SCRIPT", "LOAD", source))
            if command not in self._scripts:
                self._scripts.append(command)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "RedisPipe | None":
        """A pipe for a ``redis://`` or ``unix://`` URL; None for what it does not speak (TLS)."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        db_text = query.get("db") or (parts.path.lstrip("/") if parts.scheme == "redis" else "") or "0"
        try:
            db = int(db_text)
        except ValueError:
            return None
        credentials = {"username": unquote(parts.username) if parts.username else None,
                       "password": unquote(parts.password) if parts.password else None}
        if parts.scheme == "unix":
            return cls(path=unquote(parts.path), db=db, **credentials, **options)
        if parts.scheme == "redis" and parts.hostname:
            return cls(host=parts.hostname, port=parts.port or 6379, db=db, **credentials, **options)
        return None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            if self.path is not None:
                _, protocol = await loop.create_unix_connection(lambda: _Protocol(loop), self.path)
            else:
                _, protocol = await loop.create_connection(lambda: _Protocol(loop), self.host, self.port)
        setup = []
        if self.password is not None:
            setup.append(pack_command(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)))
        if self.db:
            setup.append(pack_command(("SELECT", self.db)))
        setup += self._scripts
        if setup:
            replies = await asyncio.wait_for(asyncio.gather(*protocol.send(setup)), self.connect_timeout_s)
            for reply in replies:
                if isinstance(reply, Exception):
                    protocol.abort(ConnectionError(str(reply)))
                    raise ConnectionError(f"Redis refused the connection setup: {reply}")
        return protocol

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.closed is None:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            protocol = await asyncio.shield(connecting)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to Redis: {exc}") from exc
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        self._protocol = protocol
        return protocol

    def is_open(self) -> bool:
        """True while there is an open connection (``send_now`` sends on it)."""
        return self._protocol is not None and self._protocol.closed is None

    def _arm_watchdog(self) -> None:
        protocol = self._protocol
        if self._watchdog is None and protocol is not None and protocol.oldest() is not None:
            self._watchdog = asyncio.get_running_loop().call_later(self.timeout_s, self._check, protocol.oldest())

    def _check(self, watched: asyncio.Future | None) -> None:
        """``timeout_s`` after a reply started to be awaited: if it is still the oldest one
        awaited, Redis did not answer in time and the connection is given up (its callers get
        ``TimeoutError``). Otherwise watch the reply that is oldest now."""
        self._watchdog = None
        protocol = self._protocol
        if protocol is None or protocol.closed is not None:
            return
        if protocol.oldest() is watched:
            protocol.abort(TimeoutError(f"Redis did not answer within {self.timeout_s:g}s"))
            return
        self._arm_watchdog()

    async def _send(self, packed: list[bytes]) -> list[Any]:
        protocol = await self._connection()
        futures = protocol.send(packed)
        self._arm_watchdog()
        return list(await asyncio.gather(*futures))

    def send_now(self, packed: list[bytes]) -> Awaitable[list[Any]] | None:
        """Put ``packed`` commands on the connection before returning, so that any command sent
        after this call reaches Redis after them; their replies as ``execute_packed`` gives
        them. None when there is no open connection right now (use ``execute_packed``)."""
        protocol = self._protocol
        if protocol is None or protocol.closed is not None:
            return None
        futures = protocol.send(packed)
        self._arm_watchdog()
        return self._replies(futures, packed)

    async def _replies(self, futures: list[asyncio.Future], packed: list[bytes]) -> list[Any]:
        try:
            return list(await asyncio.gather(*futures))
        except ConnectionError:
            await asyncio.sleep(RETRY_PAUSE_S)
            return await self._send(packed)

    async def execute_packed(self, *packed: bytes) -> list[Any]:
        """Send commands already in the Redis protocol (``pack_command``) together; their replies
        in order. Error replies come back as ``ResponseError`` values, not raised; a connection
        that fails is retried once."""
        commands = list(packed)
        try:
            return await self._send(commands)
        except ConnectionError:
            await asyncio.sleep(RETRY_PAUSE_S)
            return await self._send(commands)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol._fail(ConnectionError("Redis pipe closed"))
            protocol.transport.close()
