"""Fixtures for the upstream client: raw servers that speak HTTP/1.1 by hand, on 127.0.0.1."""

from __future__ import annotations

import pytest

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
