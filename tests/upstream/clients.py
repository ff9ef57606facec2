"""Client-side helpers for the upstream tests: a started ``Upstream`` and one request through it."""

from __future__ import annotations


from aiohttp import web

from proxy.upstream.relay import Upstream
from tests.upstream.servers import RawServer

BASE = "http://upstream.test/v1"
JSON = "Content-Type: application/json"


async def started(url: str, **options) -> Upstream:
    """A started Upstream; its timeout short, so a client that waits for nothing fails instead of hanging."""
    client = Upstream(url, **{"timeout_s": 5.0, **options})
    await client.start()
    return client


async def post(upstream: Upstream, body: bytes = b"{}") -> tuple[int, bytes]:
    async with upstream.send("POST", "/chat/completions", {}, body) as response:
        return response.status, await upstream.read(response)


async def chunks_of(upstream: Upstream) -> list[bytes]:
    async with upstream.send("POST", "/chat/completions", {}, b"{}") as response:
        return [chunk async for chunk in upstream.iter_chunks(response)]


async def never_answer(server: RawServer, n, reader, writer) -> None:
    await server.next_request(reader)
    await server.stop.wait()


async def peer_port(request: web.Request) -> web.Response:
    """Answers with the client's port: one port, one connection."""
    return web.Response(body=str(request.transport.get_extra_info("peername")[1]).encode())
