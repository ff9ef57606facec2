"""Real servers for end-to-end tests: the fake upstream and farebox, on 127.0.0.1.

Both run on an event loop in a background thread, so tests can drive them with the sync
OpenAI SDK, the async one, or plain HTTP, and can reach the proxy's ledger directly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from proxy.http.app import create_app
from proxy.http.appkeys import SERVICES
from proxy.ledger.events import read_events
from proxy.fake_upstream import RECEIVED, create_fake_app
from proxy.http.site import FrontSite, new_runner
from proxy.services import Services
from proxy.settings import Settings

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="servers", daemon=True)
        self._thread.start()
        self._runners: list[web.AppRunner] = []
        self.fronts: list[FrontSite] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _serve(self, app: web.Application, front: bool) -> str:
        runner = new_runner(app) if front else web.AppRunner(app, access_log=None)
        await runner.setup()
        site = FrontSite(runner, "127.0.0.1", 0) if front else web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        if isinstance(site, FrontSite):
            self.fronts.append(site)
        self._runners.append(runner)
        port = site.port if isinstance(site, FrontSite) else runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def serve(self, app: web.Application, *, front: bool = False) -> str:
        """Serve ``app`` on a free port; ``front``: behind farebox's own server, as ``farebox serve`` does."""
        return self.run(self._serve(app, front))

    def close(self) -> None:
        async def cleanup() -> None:
            for front in self.fronts:
                await front.stop()
            for runner in reversed(self._runners):
                await runner.cleanup()
        try:
            self.run(cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@dataclass
class Stack:
    """A fake upstream with farebox in front of it."""

    threads: LoopThread
    upstream_url: str
    upstream_app: web.Application
    url: str
    app: web.Application
    front: FrontSite

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    @property
    def received(self) -> list[dict[str, Any]]:
        """Requests the upstream received so far."""
        return list(self.upstream_app[RECEIVED])

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.threads.run(coro)

    def events(self, project: str = "acme") -> list[dict[str, str]]:
        """The usage events recorded for ``project`` so far, oldest first (fields as text)."""
        ledger = self.services.ledger
        return [entry.fields for entry in self.run(read_events(ledger, [project], (0, 0), 10_000))]


def start_stack(threads: LoopThread, settings: dict[str, Any], upstream_options: dict[str, Any] | None = None,
                *, clock: Any = None) -> Stack:
    upstream_app = create_fake_app(**(upstream_options or {}))
    upstream_url = threads.serve(upstream_app)
    settings = {"upstream": f"{upstream_url}/v1", "anthropic_upstream": upstream_url, **settings}
    app = create_app(Settings(**settings)) if clock is None else create_app(Settings(**settings), clock=clock)
    url = threads.serve(app, front=True)
    return Stack(threads, upstream_url, upstream_app, url, app, threads.fronts[-1])
