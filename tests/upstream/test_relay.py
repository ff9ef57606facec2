"""The upstream client on its own: error mapping, header filtering, auth choice (aioresponses)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aioresponses import aioresponses

from proxy.errors import UpstreamTimeout, UpstreamUnreachable
from proxy.upstream.relay import Upstream, response_headers

BASE = "http://upstream.test/v1"


@pytest.fixture
async def upstream():
    client = Upstream(BASE, timeout_s=5, connect_timeout_s=1, drop_headers=("X-Project-Id",))
    await client.start()
    yield client
    await client.close()


async def test_connection_error_is_upstream_unreachable(upstream):
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/chat/completions", exception=aiohttp.ClientConnectionError("Connection refused"))
        with pytest.raises(UpstreamUnreachable) as info:
            async with upstream.send("POST", "/chat/completions", {}, b"{}"):
                pass
    assert info.value.status == 502
    assert info.value.body()["error"]["type"] == "upstream_unreachable"
    assert "http://upstream.test/v1" in info.value.message


async def test_server_disconnect_is_upstream_unreachable(upstream):
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/chat/completions", exception=aiohttp.ServerDisconnectedError())
        with pytest.raises(UpstreamUnreachable):
            async with upstream.send("POST", "/chat/completions", {}, b"{}"):
                pass


@pytest.mark.parametrize("exc", [asyncio.TimeoutError(), aiohttp.ServerTimeoutError("read timeout")])
async def test_timeouts_are_upstream_timeout(upstream, exc):
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/chat/completions", exception=exc)
        with pytest.raises(UpstreamTimeout) as info:
            async with upstream.send("POST", "/chat/completions", {}, b"{}"):
                pass
    assert info.value.status == 504
    assert info.value.body()["error"]["type"] == "upstream_timeout"


async def test_request_headers_drop_hop_by_hop_and_farebox_headers(upstream):
    out = upstream.request_headers({
        "Authorization": "Bearer sk-client", "Connection": "keep-alive", "Keep-Alive": "timeout=5",
        "Transfer-Encoding": "chunked", "Host": "proxy", "Content-Length": "10", "Accept-Encoding": "gzip",
        "X-Project-Id": "acme", "OpenAI-Organization": "org-1", "Content-Type": "application/json",
    })
    assert out == {"Authorization": "Bearer sk-client", "OpenAI-Organization": "org-1",
                   "Content-Type": "application/json", "Accept-Encoding": "identity"}


async def test_configured_key_replaces_the_clients():
    client = Upstream(BASE, api_key="sk-upstream")
    out = client.request_headers({"authorization": "Bearer sk-client"})
    assert out["Authorization"] == "Bearer sk-upstream"
    assert "authorization" not in out


def test_response_headers_keep_the_upstream_request_id_beside_farebox_own():
    out = response_headers({"Content-Type": "application/json", "X-Request-Id": "req_123", "Connection": "close",
                            "Content-Length": "99", "Content-Encoding": "gzip"}, [("X-Request-Id", "fb1")])
    assert dict(out) == {"Content-Type": "application/json", "X-Upstream-Request-Id": "req_123", "X-Request-Id": "fb1"}
