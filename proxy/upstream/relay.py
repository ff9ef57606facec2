"""The upstream: one pool of keep-alive connections, header filtering and error mapping.

What differs between providers at the transport (base URL, credentials, the encodings asked
for) is the upstream's kind (``proxy.upstream.kinds``). What does not lives here: which headers
never cross the proxy, and how the HTTP client's errors become farebox's 502/504. The errors
of ``proxy.upstream.wire`` (and the ``OSError`` of a connection that cannot be made) are mapped
here and nowhere else, and so is the difference between a request that never reached the
upstream (nothing to pay) and one that did (``Call.sent``: the provider may bill it, whatever
came back).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.domain import FAREBOX_KEY_MARK, farebox_credential
from proxy.errors import FareboxError, UpstreamTimeout, UpstreamUnreachable
from proxy.ratelimited import RateLimitedLog
from proxy.upstream.kinds import OpenAIKind, UpstreamKind
from proxy.upstream.wire import ConnectTimeout, Pool, Response, UndecodableBody, WireError, WireTimeout

__all__ = ["Upstream", "Call", "HOP_BY_HOP", "CREDENTIAL_HEADERS", "response_headers", "upstream_errors"]

log = logging.getLogger("farebox")

# RFC 9110 §7.6.1 connection-specific headers, plus those farebox sets itself.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
    "host", "content-length", "accept-encoding", "content-encoding",
})

# Headers that carry a client's credential; one holding a farebox key (``fbk_...``) never crosses.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})


def _may_hold_farebox_key(headers: Mapping[str, str]) -> bool:
    """Whether a credential header might hold a farebox key: three lookups in a case-insensitive
    mapping (what both servers hand over), else True (the full check then looks)."""
    if isinstance(headers, (CIMultiDict, CIMultiDictProxy)):
        get = headers.get
        return (FAREBOX_KEY_MARK in get("Authorization", "") or FAREBOX_KEY_MARK in get("x-api-key", "")
                or FAREBOX_KEY_MARK in get("api-key", ""))
    return True


# What talking to the upstream can raise: the client's own errors, and OSError from the loop
# (refused, unreachable, DNS, TLS); TimeoutError is an OSError, WireTimeout a WireError.
_TRANSPORT_ERRORS = (WireError, OSError)


def _mapped_error(base_url: str, exc: WireError | OSError) -> FareboxError:
    """farebox's error for a failure talking to the upstream: 504 for a timeout, else 502."""
    if isinstance(exc, ConnectTimeout):
        return UpstreamTimeout(f"No connection to the upstream {base_url}: {exc}.")
    if isinstance(exc, (WireTimeout, TimeoutError)):
        return UpstreamTimeout(f"The upstream {base_url} did not answer in time.")
    if isinstance(exc, UndecodableBody):
        return UpstreamUnreachable(f"The upstream {base_url} answered in Content-Encoding '{exc.encoding}', which "
                                   "farebox cannot decode (and did not ask for); nothing was passed on.",
                                   code="unsupported_content_encoding")
    return UpstreamUnreachable(f"Could not reach the upstream {base_url}: {exc.__class__.__name__}: {exc}")


class upstream_errors:  # noqa: N801 - used like a function: ``with upstream_errors(url):``
    """Turn failures talking to the upstream into farebox's errors; let everything else through."""

    __slots__ = ("base_url",)

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if isinstance(exc, _TRANSPORT_ERRORS):
            raise _mapped_error(self.base_url, exc) from exc
        return False


def response_headers(headers: Mapping[str, str], extra: Iterable[tuple[str, str]] = ()) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones, plus farebox's own.

    ``X-Request-Id`` is farebox's id (the usage event's ``request_id``); the provider's own
    ``X-Request-Id``, the id its support can look up, is passed on as ``X-Upstream-Request-Id``."""
    out: CIMultiDict[str] = CIMultiDict(headers)
    for name in HOP_BY_HOP:  # case-insensitive lookups, in C: cheaper than lowering every name
        if name in out:
            del out[name]
    if "X-Request-Id" in out:  # farebox's own id takes the name; the provider's is kept beside it
        out["X-Upstream-Request-Id"] = out.popall("X-Request-Id")[0]
    for key, value in extra:
        out[key] = value
    return out


class Upstream:
    """A provider endpoint reached through one pool of keep-alive connections."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 600.0,
                 connect_timeout_s: float = 10.0, max_connections: int = 1000, drop_headers: Iterable[str] = (),
                 kind: UpstreamKind | None = None, name: str | None = None) -> None:
        self.kind = kind if kind is not None else OpenAIKind(base_url, api_key)
        self.base_url = self.kind.base_url
        self.name = name if name is not None else self.kind.name  # as events and metrics name it
        self._timeout_s, self._connect_timeout_s = timeout_s, connect_timeout_s
        self.max_connections = max_connections
        self._drop = HOP_BY_HOP | {h.lower() for h in drop_headers}
        self._pool: Pool | None = None
        self.failures = RateLimitedLog(log)   # warnings for failed calls, rate-limited per kind

    async def start(self) -> None:
        self._pool = Pool(self.base_url, connect_timeout_s=self._connect_timeout_s, read_timeout_s=self._timeout_s,
                          max_connections=self.max_connections)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def request_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The client's headers as forwarded: hop-by-hop and farebox's own removed (a farebox key
        among them), auth chosen."""
        out = {k: v for k, v in headers.items() if k.lower() not in self._drop}
        if _may_hold_farebox_key(headers):
            for name in [k for k, v in out.items() if k.lower() in CREDENTIAL_HEADERS and farebox_credential(v) is not None]:
                del out[name]
        kind = self.kind
        kind.authenticate(out)
        out["Accept-Encoding"] = kind.accept_encoding  # usage is read from the body: only what farebox decodes
        return out

    def send(self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None,
             query: str = "", model: str | None = None) -> Call:
        """Send one request: ``async with upstream.send(...) as response`` yields the response with
        its body still unread, and gives the connection back to the pool afterwards if the body
        was read to the end (otherwise the connection is closed). ``path`` is below the base
        URL's path as the OpenAI or Anthropic API names it; ``query`` is the raw query string,
        without its ``?``; ``model`` the model the request names, if any (Azure's deployment).
        The kind turns these into the request target."""
        assert self._pool is not None, "Upstream.start() was not awaited"
        target = self.kind.target(path, query, model)
        return Call(self._pool, self.base_url, method, target, self.request_headers(headers), body)

    async def read(self, response: Response) -> bytes:
        """The whole response body."""
        with upstream_errors(self.base_url):
            return await response.read()

    async def iter_chunks(self, response: Response) -> AsyncIterator[bytes]:
        """The response body as it arrives; a dropped connection ends it with an error."""
        read_chunk = response.read_chunk
        with upstream_errors(self.base_url):
            while chunk := await read_chunk():
                yield chunk

    def describe(self) -> dict[str, Any]:
        return self.kind.describe()


class Call:
    """One request and its response, as ``Upstream.send`` hands it out (an async context manager
    written out as a class: it runs on every request, and a generator-based one costs more).

    After a failure it still tells what happened: whether the request was written (``sent``),
    the status of a head that came back (``status``), the body bytes that arrived (``received``),
    and when (``sent_at``, ``first_byte_at``)."""

    __slots__ = ("_pool", "_base_url", "_method", "_target", "_headers", "_body", "_response", "_refused_status")

    def __init__(self, pool: Pool, base_url: str, method: str, target: str, headers: dict[str, str],
                 body: bytes | None) -> None:
        self._pool, self._base_url = pool, base_url
        self._method, self._target, self._headers, self._body = method, target, headers, body
        self._response: Response | None = None
        self._refused_status = 0

    async def __aenter__(self) -> Response:
        try:
            self._response = await self._pool.request(self._method, self._target, self._headers, self._body)
        except _TRANSPORT_ERRORS as exc:
            if isinstance(exc, WireError) and exc.response is not None:
                self._response = exc.response   # written: what came back of it stays readable here
                if isinstance(exc, UndecodableBody):
                    self._refused_status = exc.status
            raise _mapped_error(self._base_url, exc) from exc
        return self._response

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        response = self._response
        if response is not None:
            if kind is None:
                response.release()
            else:
                response.close()  # the body may be half read: never put this connection back
        return False

    @property
    def sent(self) -> bool:
        """The request was written to the upstream: it may have been served (and billed)."""
        return self._response is not None

    @property
    def status(self) -> int:
        """The status of the response whose head arrived (0: none did)."""
        response = self._response
        if response is None:
            return 0
        return response.status or self._refused_status

    @property
    def sent_at(self) -> float:
        """``time.perf_counter()`` when the request was written (0.0: it was not)."""
        return self._response.sent_at if self._response is not None else 0.0

    @property
    def first_byte_at(self) -> float:
        """``time.perf_counter()`` when the response's first byte arrived (0.0: none did)."""
        return self._response.first_byte_at if self._response is not None else 0.0

    def received(self) -> bytes:
        """The body bytes that arrived and were not read: what is left of a body cut short
        (nothing of a body in an encoding farebox does not decode)."""
        if self._response is None or self._refused_status:
            return b""
        return self._response.received()
