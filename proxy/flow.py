"""The request flow of every metered endpoint, whatever its API. ``serve`` reads as the flow, top
to bottom:

parse → attribute → price & estimate → reserve → forward → measure → settle & record → respond.

It knows no API's bodies: what depends on them (parsing, the prompt count, the forwarded body,
where usage sits, what a stream's events say) it asks the request's ``ApiShape``
(``proxy/apis/``). ``serve_chat`` is chat completions' entry point.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

from multidict import CIMultiDict

from pricing.catalog import ModelPrice
from pricing.cost import cost_nano
from pricing.money import nano_to_usd
from proxy.apis import ApiRequest, ApiShape, Measured
from proxy.apis.chat import CHAT
from proxy.attribute import attribute
from proxy.budgets import Grant, reserve_budget
from proxy.domain import Attribution, UsageEvent
from proxy.errors import BudgetExceeded, FareboxError, LedgerUnavailable
from proxy.services import Services
from proxy.upstream.relay import response_headers
from proxy.upstream.sse import SSESplitter

__all__ = ["Exchange", "serve", "serve_chat"]

log = logging.getLogger("farebox")


def _budget_headers(grant: Grant | None) -> list[tuple[str, str]]:
    if grant is None or grant.remaining is None:
        return []
    view = grant.remaining
    remaining = max(0, view.limit_nano - view.spent_nano - view.reserved_nano)
    headers = [("X-Farebox-Budget-Remaining-USD", nano_to_usd(remaining))]
    if grant.clamped and grant.output_bound is not None:
        headers.append(("X-Farebox-Max-Tokens-Clamped", str(grant.output_bound)))
    return headers


class Exchange(Protocol):
    """One client request to a metered endpoint, as the server in front of ``serve_chat`` hands it
    over: its id, headers and whole body, and the ways to answer it. ``proxy.http.front`` serves
    well-formed requests itself; ``proxy.http.routes`` adapts aiohttp's for the rest."""

    request_id: str
    headers: Mapping[str, str]
    body: bytes

    def reply(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        """Answer with a whole body."""

    async def start(self, status: int, headers: CIMultiDict[str]) -> None:
        """Begin a streamed answer (its body follows in ``write`` calls)."""

    async def write(self, data: bytes) -> None:
        """Send part of a streamed body; ConnectionError once the client is gone."""

    async def finish(self) -> None:
        """End a streamed body."""

    def cut(self) -> None:
        """Close the client's connection without ending the stream, so it cannot pass for whole."""


def serve_chat(fb: Services, ex: Exchange) -> Coroutine[Any, Any, None]:
    """Serve a chat completions request (``serve`` with the chat shape)."""
    return serve(fb, ex, CHAT)


async def serve(fb: Services, ex: Exchange, shape: ApiShape) -> None:
    """Serve one request to ``shape``'s endpoint, from its body to its answer."""
    settings = fb.settings
    request_id = ex.request_id
    started = time.perf_counter()

    request = shape.parse(ex.body)                                            # 1. parse
    who = attribute(ex.headers, settings)                                     # 2. attribute
    price = fb.price(request.model)                                           # 3. price & estimate
    prompt_tokens = await shape.count_prompt(request, price)
    grant = await _reserve(fb, shape, request_id, who, price, prompt_tokens, request)  # 4. reserve

    bound = grant.output_bound if grant is not None and grant.enforce_bound else None
    body = shape.forward_body(ex.body, request, bound)                        # 5. forward
    meter = _Call(fb, ex, shape, who, request, price, prompt_tokens, grant, started)
    try:
        async with fb.upstream.send("POST", shape.upstream_path, ex.headers, body) as upstream:
            meter.forwarded_at = time.perf_counter()
            is_sse = upstream.content_type == "text/event-stream"
            if upstream.status >= 400 or not (request.stream and is_sse):
                payload = await fb.upstream.read(upstream)
                return await meter.finish_whole(upstream, payload)               # 6–8
            return await meter.relay_stream(upstream)                            # 6–8 as bytes arrive
    except FareboxError as exc:  # no answer from the upstream (502, 504): counted here, nothing charged
        fb.metrics.request(shape.name, exc.status, price.name, who.project)
        raise
    finally:
        await meter.release_if_unsettled()


async def _reserve(fb: Services, shape: ApiShape, request_id: str, who: Attribution, price: ModelPrice,
                   prompt_tokens: int, request: ApiRequest) -> Grant | None:
    try:
        return await reserve_budget(fb.ledger, fb.settings, request_id, who, price, prompt_tokens, request)
    except BudgetExceeded as exc:
        fb.metrics.rejection(exc.extra.get("scope") or "unknown", who.project)
        fb.metrics.request(shape.name, exc.status, price.name, who.project)
        raise
    except LedgerUnavailable as exc:
        fb.metrics.redis_errors.inc()
        if fb.settings.fail_mode == "closed":
            fb.metrics.request(shape.name, exc.status, price.name, who.project)
            raise
        log.warning("redis unavailable: request %s forwarded without a budget check (fail_mode open)", request_id)
        return None


class _Call:
    """One forwarded request: measures what came back, settles it, answers the client."""

    __slots__ = ("fb", "ex", "shape", "request_id", "who", "request", "price", "priced_model", "prompt_tokens",
                 "grant", "started", "forwarded_at", "settled")

    def __init__(self, fb: Services, ex: Exchange, shape: ApiShape, who: Attribution, request: ApiRequest,
                 price: ModelPrice, prompt_tokens: int, grant: Grant | None, started: float) -> None:
        self.fb, self.ex, self.shape, self.request_id = fb, ex, shape, ex.request_id
        self.who, self.request = who, request
        self.price, self.priced_model = price, price.name
        self.prompt_tokens, self.grant, self.started = prompt_tokens, grant, started
        self.forwarded_at = started
        self.settled = False

    async def finish_whole(self, upstream: Any, payload: bytes) -> None:
        """A complete (non-stream, or error) upstream answer."""
        extra = [("X-Request-Id", self.request_id)]
        if upstream.status >= 400:
            # Passed through as the upstream sent it; nothing is charged.
            await self.release_if_unsettled()
            self.fb.metrics.request(self.shape.name, upstream.status, self.priced_model, self.who.project)
            self.fb.metrics.upstream_latency.observe(time.perf_counter() - self.forwarded_at)
            self.ex.reply(upstream.status, response_headers(upstream.headers, extra), payload)
            return
        upstream_done = time.perf_counter()
        measured = self.shape.measure_body(payload, self.request, self.prompt_tokens)
        # Queued for Redis before the answer goes out (the client's next reservation comes
        # after it); the answer does not wait for Redis to confirm it.
        cost = self._record(measured, upstream.status, upstream_done)
        extra.append(("X-Farebox-Cost-USD", nano_to_usd(cost)))
        extra.extend(_budget_headers(self.grant))
        self.ex.reply(upstream.status, response_headers(upstream.headers, extra), payload)
        self._observe_overhead(upstream_done)

    async def relay_stream(self, upstream: Any) -> None:
        """Forward each event as it completes, unless the shape's meter keeps it from the client."""
        extra = [("X-Request-Id", self.request_id), *_budget_headers(self.grant)]
        ex = self.ex
        await ex.start(upstream.status, response_headers(upstream.headers, extra))
        splitter = SSESplitter()
        meter = self.shape.stream_meter(self.request)
        take = meter.take
        status = upstream.status
        client_gone = upstream_cut = False
        try:
            async for data in self.fb.upstream.iter_chunks(upstream):
                out = [event for event in splitter.feed(data) if take(event)]
                if out:
                    try:
                        await ex.write(b"".join(out) if len(out) > 1 else out[0])
                    except ConnectionError:
                        client_gone = True
                        break
            if not client_gone:
                rest = splitter.rest()
                if rest:
                    await ex.write(rest)
                await ex.finish()
        except ConnectionError:
            client_gone = True
        except FareboxError as exc:  # the upstream failed mid-stream: the client gets what arrived
            status, upstream_cut = exc.status, True
            log.warning("upstream stream for %s ended early: %s", self.request_id, exc.message)
        upstream_done = time.perf_counter()
        measured = meter.result(self.prompt_tokens)
        # Recorded once the last byte is out, without holding the connection: the client's next
        # request on it does not wait for Redis to confirm this one.
        self._record(measured, 499 if client_gone else status, upstream_done)
        self._observe_overhead(upstream_done)
        if upstream_cut:
            # Cut the client's stream too (no final chunk), so it cannot mistake it for a whole one.
            ex.cut()

    def _record(self, measured: Measured, status: int, upstream_done: float) -> int:
        """Queue the request's settle (confirmed in the background: spooled if Redis cannot
        take it) and count it; its cost in nano-USD."""
        fb = self.fb
        cost = cost_nano(self.price, measured.usage)
        usage = measured.usage
        request = self.request
        endpoint = self.shape.name
        event = UsageEvent(
            request_id=self.request_id, ts=time.time(), attribution=self.who, model=request.model,
            priced_model=self.priced_model, endpoint=endpoint, upstream=fb.upstream.base_url, status=status,
            stream=request.stream, estimated=measured.estimated, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens,
            cache_creation_tokens=usage.cache_creation_tokens, reasoning_tokens=usage.reasoning_tokens,
            cost_nano=cost, latency_ms=int((upstream_done - self.forwarded_at) * 1000),
            clamped_max_tokens=self.grant.output_bound if self.grant is not None and self.grant.clamped else None,
        )
        self.settled = True
        fb.record_soon(event)
        m = fb.metrics
        m.request(endpoint, status, self.priced_model, self.who.project)
        m.usage(self.priced_model, self.who.project, usage, cost, estimated=measured.estimated)
        if self.grant is not None and self.grant.clamped:
            m.clamped.inc()
        m.upstream_latency.observe(upstream_done - self.forwarded_at)
        return cost

    def _observe_overhead(self, upstream_done: float) -> None:
        now = time.perf_counter()
        spent_outside = (self.forwarded_at - self.started) + (now - upstream_done)
        self.fb.metrics.overhead.observe(spent_outside)

    async def release_if_unsettled(self) -> None:
        if not self.settled and self.grant is not None:
            self.settled = True
            await self.fb.release(self.request_id, self.who)
