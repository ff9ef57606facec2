"""The long-lived parts a request handler uses, built once per application.

``Services`` bundles settings, price catalog, ledger, upstream and spool; its methods are the
few steps that need more than one of them (pricing a model with the configured fallback,
settling with the spool as the safety net when Redis is unreachable).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pricing.catalog import Catalog, ModelPrice
from proxy.control.alerts import AlertDispatcher
from proxy.errors import LedgerUnavailable, UnknownModel
from proxy.domain import Attribution, RateHold, RateLimit, SettleOutcome, UsageEvent
from proxy.keyauth import KeyAuth, KeyResolver
from proxy.ledger.ledger import Ledger
from proxy.ledger.spool import Spool
from proxy.metrics import Metrics
from proxy.settings import Settings
from proxy.upstream.relay import Upstream
from proxy.upstream.routing import Upstreams

__all__ = ["Services"]

log = logging.getLogger("farebox")

SPOOL_REPLAY_INTERVAL_S = 2.0


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    ledger: Ledger
    upstream: Upstream          # the OpenAI family's default (``upstreams.default("openai")``)
    spool: Spool
    metrics: Metrics
    redis_description: str = ""
    alerts: AlertDispatcher | None = None
    upstreams: Upstreams | None = None   # every upstream; None: ``upstream`` serves every family
    auth: KeyAuth | None = None          # farebox keys; None: made from the settings and the ledger
    _replay_task: asyncio.Task | None = field(default=None, repr=False)
    _background: set[asyncio.Task] = field(default_factory=set, repr=False)
    _recording: set[asyncio.Future] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if self.auth is None:
            resolver = KeyResolver(self.ledger, fail_open=self.settings.fail_mode == "open")
            self.auth = KeyAuth(self.settings, resolver, self.upstream_for)

    def attribute(self, headers: Mapping[str, str], family: str, model: str
                  ) -> Coroutine[Any, Any, tuple[Attribution, RateLimit | None]]:
        """Who a request to a metered endpoint of API ``family`` for ``model`` is charged to: its
        farebox key's project, agent and id, or its headers (``proxy.keyauth``); 401/403 refuse it.
        With it, its farebox key's rate limit, if any."""
        assert self.auth is not None
        return self.auth.attribute(headers, family, model)

    def rate_limits(self, who: Attribution, key_limit: RateLimit | None
                    ) -> Coroutine[Any, Any, tuple[RateLimit, ...]]:
        """The rate limits a request of ``who`` counts on: its project's (read from Redis once
        per change of the limits, ``LedgerUnavailable`` when it cannot be), then its key's."""
        assert self.auth is not None
        return self.auth.rate_limits(who, key_limit)

    def price(self, model: str) -> ModelPrice:
        found = self.catalog.resolve(model)
        if found is None:
            raise UnknownModel(
                f"Unknown model '{model}': farebox has no price for it, so it cannot be metered. "
                "Add it to a price file (price_files), map it with model_aliases, or set unknown_model_price.",
                param="model")
        return found

    def upstream_for(self, family: str, model: str | None) -> Upstream:
        """The upstream a request of API ``family`` for ``model`` goes to (the family's default
        for a request that names no model)."""
        if self.upstreams is None:
            return self.upstream
        return self.upstreams.pick(family, model) if model is not None else self.upstreams.default(family)

    def in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` (finishing a recording) apart from the request that asked for it;
        ``close`` waits for it, so nothing started is lost at shutdown."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    async def settled(self) -> None:
        """Wait for the recordings started so far: written to Redis, or spooled."""
        recording = set(self._recording)
        await self.ledger.settled()
        if recording:
            await asyncio.wait(recording)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _background_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording in the background failed", exc_info=task.exception())

    async def settle(self, event: UsageEvent) -> SettleOutcome | None:
        """Record usage and release its reservation; spool it if Redis cannot take it now."""
        return await self.record(event)

    def record_soon(self, event: UsageEvent, rate: RateHold | None = None) -> None:
        """``record``, finished apart from the request that asked for it (spool, alerts);
        ``settled`` and ``close`` wait for it, so nothing started is lost at shutdown. Queued
        now: a reservation made after this call sees it. ``rate``: what the request counted on its
        rate limits, corrected to the tokens it used."""
        written = self.ledger.queue_settle(event, rate)
        self._recording.add(written)
        written.add_done_callback(partial(self._recorded_soon, event))

    def _recorded_soon(self, event: UsageEvent, written: asyncio.Future[SettleOutcome]) -> None:
        self._recording.discard(written)
        if written.cancelled():
            return
        exc = written.exception()
        if isinstance(exc, LedgerUnavailable):
            self.in_background(self._spooled(event, exc))
        elif exc is not None:
            log.error("recording %s failed", event.request_id, exc_info=exc)
        else:
            self._recorded_outcome(event, written.result())

    def record(self, event: UsageEvent, rate: RateHold | None = None) -> Coroutine[Any, Any, SettleOutcome | None]:
        """``settle``, queued now (a reservation made after this call sees it); the coroutine
        finishes it: the spool when Redis cannot take it, the alerts it crossed. ``rate`` as for
        ``record_soon``."""
        return self._recorded(event, self.ledger.queue_settle(event, rate))

    async def _recorded(self, event: UsageEvent, written: Awaitable[SettleOutcome]) -> SettleOutcome | None:
        try:
            outcome = await written
        except LedgerUnavailable as exc:
            await self._spooled(event, exc)
            return None
        self._recorded_outcome(event, outcome)
        return outcome

    async def _spooled(self, event: UsageEvent, exc: LedgerUnavailable) -> None:
        self.metrics.redis_errors.inc()
        await self.spool.append(event)
        self.metrics.spooled.inc()
        log.warning("redis unavailable while recording %s (%s); usage spooled to %s",
                    event.request_id, exc.message, self.spool.path)
        self.start_replay()

    def _recorded_outcome(self, event: UsageEvent, outcome: SettleOutcome) -> None:
        if outcome.overrun_nano > 0:
            self.metrics.reservation_overruns.inc()
            log.warning("request %s cost %d nano-USD more than its reservation (an upstream ignored the output bound)",
                        event.request_id, outcome.overrun_nano)
        self._alert(outcome)

    def _alert(self, outcome: SettleOutcome) -> None:
        """Hand the alert thresholds a settle crossed to the dispatcher, which never waits."""
        if self.alerts is not None:
            for crossing in outcome.alerts:
                self.alerts.submit(crossing)

    async def release(self, request_id: str, who: Attribution) -> None:
        """Drop a reservation without charging (upstream error, request never completed)."""
        try:
            await self.ledger.release(request_id, who)
        except LedgerUnavailable:
            self.metrics.redis_errors.inc()  # the reservation expires at its deadline instead

    def start_replay(self) -> None:
        if self._replay_task is None or self._replay_task.done():
            self._replay_task = asyncio.get_running_loop().create_task(self._replay_until_empty())

    async def _replay_until_empty(self) -> None:
        while await self.spool.pending():
            try:
                replayed = await self.spool.replay(self.ledger, on_settled=self._alert)
            except LedgerUnavailable:
                await asyncio.sleep(SPOOL_REPLAY_INTERVAL_S)
                continue
            if replayed:
                log.info("replayed %d spooled usage events into redis", replayed)

    async def close(self) -> None:
        await self.ledger.close_leases()  # what budget leases did not lend goes back
        await self.settled()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._replay_task is not None:
            self._replay_task.cancel()
            try:
                await self._replay_task
            except (asyncio.CancelledError, Exception):
                pass
