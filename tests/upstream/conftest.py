"""Fixtures for the upstream client: raw servers that speak HTTP/1.1 by hand, and aiohttp servers, on
127.0.0.1."""

from __future__ import annotations

import pytest
from aiohttp import web

from proxy.upstream.relay import Upstream
from tests.upstream.clients import started
from tests.upstream.servers import Handler, RawServer


@pytest.fixture
async def raw_server():
    """Factory: ``await raw_server(handler)`` starts a RawServer; all are closed after the test."""
    started: list[RawServer] = []

    async def start(handler: Handler) -> RawServer:
        server = await RawServer(handler).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


@pytest.fixture
async def aiohttp_upstream(aiohttp_server):
    """Factory: an Upstream in front of a real aiohttp server running ``handler`` on every path."""
    clients: list[Upstream] = []

    async def make(handler, **options) -> Upstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = await aiohttp_server(app)
        client = await started(str(server.make_url("/v1")), **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
