"""``farebox serve``: run the application until interrupted."""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

from proxy.app import create_app
from proxy.settings import Settings

__all__ = ["serve", "configure_logging"]


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level)
    log = logging.getLogger("farebox")
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    app = create_app(settings)
    log.info("farebox listening on http://%s:%d (upstream %s)", settings.host, settings.port, settings.upstream)
    web.run_app(app, host=settings.host, port=settings.port, access_log=None, print=None, loop=loop,
                handle_signals=True, shutdown_timeout=10)
    return 0
