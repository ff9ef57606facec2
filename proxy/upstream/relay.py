"""The upstream: one pooled aiohttp session, header filtering and error mapping.

Everything transport-specific about the provider lives here: its base URL, how the
Authorization header is chosen, which headers never cross the proxy, and how aiohttp's
errors become farebox's 502/504. ``aiohttp.ClientError`` is mapped here and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any

import aiohttp
from multidict import CIMultiDict

from proxy.errors import UpstreamTimeout, UpstreamUnreachable

__all__ = ["Upstream", "HOP_BY_HOP", "response_headers", "upstream_errors"]

# RFC 9110 §7.6.1 connection-specific headers, plus those farebox sets itself.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
    "host", "content-length", "accept-encoding", "content-encoding",
})


class upstream_errors:  # noqa: N801 - used like a function: ``with upstream_errors(url):``
    """Turn aiohttp/asyncio failures talking to the upstream into farebox's errors."""

    __slots__ = ("base_url",)

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            raise UpstreamTimeout(f"The upstream {self.base_url} did not answer in time.") from exc
        if isinstance(exc, aiohttp.ClientError):
            raise UpstreamUnreachable(
                f"Could not reach the upstream {self.base_url}: {exc.__class__.__name__}: {exc}") from exc
        return False


def response_headers(headers: Mapping[str, str], extra: Iterable[tuple[str, str]] = ()) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones, plus farebox's own."""
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
    """A provider endpoint reached through one pooled client session."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 600.0,
                 connect_timeout_s: float = 10.0, drop_headers: Iterable[str] = ()) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=timeout_s)
        self._drop = HOP_BY_HOP | {h.lower() for h in drop_headers}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def request_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The client's headers as forwarded: hop-by-hop and farebox's own removed, auth chosen."""
        out = {k: v for k, v in headers.items() if k.lower() not in self._drop}
        if self._api_key is not None:
            for name in [k for k in out if k.lower() == "authorization"]:
                del out[name]
            out["Authorization"] = f"Bearer {self._api_key}"
        out["Accept-Encoding"] = "identity"  # usage is read from the body: ask for it plain
        return out

    def send(self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None,
             query: str = "") -> _Exchange:
        """Send one request: ``async with upstream.send(...) as response`` yields the response with
        its body still unread, and gives the connection back to the pool afterwards."""
        assert self._session is not None, "Upstream.start() was not awaited"
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        return _Exchange(self._session, self.base_url, method, url, self.request_headers(headers), body)

    async def read(self, response: aiohttp.ClientResponse) -> bytes:
        with upstream_errors(self.base_url):
            return await response.read()

    async def iter_chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The response body as it arrives; a dropped connection ends it with an error."""
        with upstream_errors(self.base_url):
            async for chunk in response.content.iter_any():
                yield chunk

    def describe(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "auth": "replaced" if self._api_key else "passthrough"}


class _Exchange:
    """One request and its response, as ``Upstream.send`` hands it out (an async context manager
    written out as a class: it runs on every request, and a generator-based one costs more)."""

    __slots__ = ("_session", "_base_url", "_method", "_url", "_headers", "_body", "_response")

    def __init__(self, session: aiohttp.ClientSession, base_url: str, method: str, url: str, headers: dict[str, str],
                 body: bytes | None) -> None:
        self._session, self._base_url = session, base_url
        self._method, self._url, self._headers, self._body = method, url, headers, body
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        with upstream_errors(self._base_url):
            self._response = await self._session.request(self._method, self._url, headers=self._headers,
                                                         data=self._body)
        return self._response

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        assert self._response is not None
        if kind is None:
            self._response.release()
        else:
            self._response.close()  # the body may be half read: never put this connection back
        return False
