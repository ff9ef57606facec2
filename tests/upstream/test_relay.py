"""The upstream client on its own: error mapping, header filtering, auth choice (aioresponses)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses
from multidict import CIMultiDict

from proxy.errors import UpstreamTimeout, UpstreamUnreachable
from proxy.upstream.relay import Upstream, response_headers, upstream_errors

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


def test_response_headers_drop_hop_by_hop_ones_whatever_their_case_and_keep_the_rest_in_order():
    upstream = CIMultiDict([("connection", "keep-alive"), ("Set-Cookie", "a=1"), ("TRANSFER-ENCODING", "chunked"),
                            ("Content-Type", "application/json"), ("Set-Cookie", "b=2"), ("Keep-Alive", "timeout=5"),
                            ("openai-processing-ms", "12")])
    out = response_headers(upstream, [("X-Request-Id", "fb1"), ("X-Farebox-Cost-USD", "0.000123")])
    assert list(out.items()) == [("Set-Cookie", "a=1"), ("Content-Type", "application/json"), ("Set-Cookie", "b=2"),
                                 ("openai-processing-ms", "12"), ("X-Request-Id", "fb1"),
                                 ("X-Farebox-Cost-USD", "0.000123")]


def test_upstream_errors_maps_client_errors_and_lets_others_through():
    with pytest.raises(UpstreamUnreachable) as info:
        with upstream_errors(BASE):
            raise aiohttp.ClientPayloadError("Response payload is not completed")
    assert isinstance(info.value.__cause__, aiohttp.ClientPayloadError)
    with pytest.raises(UpstreamTimeout):
        with upstream_errors(BASE):
            raise asyncio.TimeoutError()
    with pytest.raises(ValueError):
        with upstream_errors(BASE):
            raise ValueError("not the upstream's")


@pytest.fixture
async def served(aiohttp_server):
    """An Upstream in front of a real local server that answers 201 with a small JSON body."""
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=201, body=b'{"ok": true}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    server = await aiohttp_server(app)
    client = Upstream(str(server.make_url("/v1")))
    await client.start()
    yield client
    await client.close()


async def test_send_yields_the_response_and_its_body(served):
    async with served.send("POST", "/chat/completions", {}, b"{}") as response:
        assert response.status == 201
        assert await served.read(response) == b'{"ok": true}'
    assert response.closed


async def test_an_error_inside_send_is_not_mapped_and_closes_the_response(served):
    with pytest.raises(ValueError):
        async with served.send("POST", "/chat/completions", {}, b"{}") as response:
            raise ValueError("the caller's own")
    assert response.closed
    assert response.connection is None
