"""A bare aiohttp pass-through, the floor under any aiohttp proxy: ``python -m bench.relay PORT UPSTREAM``.

No metering, no Redis, no parsing: read the body, forward it through one pooled client
session, copy the status, headers and body back (streams as they arrive). The benchmark runs
it as the target ``aiohttp-relay`` so that what farebox's metering costs can be told apart
from what receiving and forwarding HTTP in Python costs on the same machine.
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

_SKIP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def relay(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP}
    async with request.app[SESSION].post(request.app[UPSTREAM] + request.path_qs.removeprefix("/v1"),
                                         data=body, headers=headers) as upstream:
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _SKIP and k.lower() != "content-encoding"}
        if upstream.content_type == "text/event-stream":
            response = web.StreamResponse(status=upstream.status, headers=out)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        return web.Response(status=upstream.status, body=await upstream.read(), headers=out)


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main(argv: list[str]) -> None:
    port, upstream = int(argv[0]), argv[1].rstrip("/")

    async def session(app: web.Application):
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        yield
        await app[SESSION].close()

    app = web.Application()
    app[UPSTREAM] = upstream
    app.cleanup_ctx.append(session)
    app.add_routes([web.get("/readyz", ready), web.post("/v1/{tail:.*}", relay)])
    try:
        import uvloop  # noqa: PLC0415
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main(sys.argv[1:])
