"""Wiring farebox's own server (``proxy.http.front``) to the aiohttp application behind it.

``new_runner`` makes the application's runner with farebox's settings for aiohttp's side (no
aiohttp access log: the ``Edge`` writes it; malformed requests logged by ``ProtocolLog``).
``FrontSite`` listens on host:port with a ``FrontServer`` whose handler is
``proxy.flow.serve_metered`` on the application's services, whose edge is the application's, and
which hands connections over to the runner's aiohttp server. Start it after ``runner.setup()``,
stop it before ``runner.cleanup()``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from aiohttp import web

from proxy.apis.registry import METERED
from proxy.flow import serve_metered
from proxy.http.appkeys import EDGE, SERVICES
from proxy.http.edge import ProtocolLog
from proxy.http.front import FrontServer, Limits

__all__ = ["FrontSite", "new_runner"]


def new_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The runner for ``app`` (``kwargs``: more of ``web.AppRunner``'s)."""
    return web.AppRunner(app, access_log=None, logger=ProtocolLog(logging.getLogger("farebox")), **kwargs)


class FrontSite:
    """host:port served by farebox's own server in front of ``runner``'s application. Stopping
    it stops listening, closes idle connections and lets requests in flight finish, up to
    ``shutdown_timeout``."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, reuse_port: bool = False,
                 shutdown_timeout: float = 10.0, limits: Limits = Limits()) -> None:
        self.runner, self.host, self.reuse_port = runner, host, reuse_port
        self.shutdown_timeout, self.limits = shutdown_timeout, limits
        self._port = port
        self.server: FrontServer | None = None

    @property
    def port(self) -> int:
        port = self.server.port if self.server is not None else None
        return port if port is not None else self._port

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def handed_over(self) -> int:
        """How many connections were handed over to aiohttp since the site last started."""
        return self.server.handed_over if self.server is not None else 0

    async def start(self) -> None:
        aiohttp_server = self.runner.server
        if aiohttp_server is None:
            raise RuntimeError("FrontSite.start() before the runner's setup()")
        app = self.runner.app
        services = app[SERVICES]
        server = FrontServer(functools.partial(serve_metered, services), app[EDGE], aiohttp_server,
                             max_body_bytes=services.settings.max_body_bytes, limits=self.limits,
                             open_elsewhere=lambda: len(aiohttp_server.connections), paths=METERED)
        await server.listen(self.host, self._port, reuse_port=self.reuse_port)
        self.server = server

    async def stop(self) -> None:
        if self.server is not None and not self.server.closing:
            await self.server.stop(self.shutdown_timeout)
