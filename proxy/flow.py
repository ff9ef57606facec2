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
from proxy.apis.registry import METERED
from proxy.budgets import Grant, reserve_budget
from proxy.domain import Attribution, RateLimit, UsageEvent
from proxy.errors import BudgetExceeded, FareboxError, LedgerUnavailable, RateLimited
from proxy.services import Services
from proxy.upstream.relay import Call, Upstream, response_headers
from proxy.upstream.sse import SSESplitter

__all__ = ["Exchange", "serve", "serve_chat", "serve_metered"]

log = logging.getLogger("farebox")


def _budget_headers(grant: Grant | None, cost_nano: int | None = None) -> list[tuple[str, str]]:
    """What the tightest hard budget has left: after this request's actual cost when it is known
    (``cost_nano``: a whole answer), else after its worst case (a stream, whose headers go out
    before its body), as the reservation saw the budget."""
    if grant is None or grant.remaining is None:
        return []
    view = grant.remaining
    if cost_nano is None:
        remaining = view.limit_nano - view.spent_nano - view.reserved_nano
    else:  # this request's hold released, its cost spent
        remaining = view.limit_nano - view.spent_nano - cost_nano - (view.reserved_nano - grant.reserved_nano)
    headers = [("X-Farebox-Budget-Remaining-USD", nano_to_usd(max(0, remaining)))]
    if grant.clamped and grant.output_bound is not None:
        headers.append(("X-Farebox-Max-Tokens-Clamped", str(grant.output_bound)))
    return headers


class Exchange(Protocol):
    """One client request to a metered endpoint, as the server in front of ``serve_chat`` hands it
    over: its id, headers and whole body, and the ways to answer it. ``proxy.http.front`` serves
    well-formed requests itself; ``proxy.http.routes`` adapts aiohttp's for the rest."""

    request_id: str
    path: str                   # as the client asked for it, without the query string
    query: str                  # the raw query string (without its "?"), forwarded as it came
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


def serve_metered(fb: Services, ex: Exchange) -> Coroutine[Any, Any, None]:
    """Serve a request to one of the metered paths (``proxy.apis.registry.METERED``)."""
    return serve(fb, ex, METERED[ex.path])


async def serve(fb: Services, ex: Exchange, shape: ApiShape) -> None:
    """Serve one request to ``shape``'s endpoint, from its body to its answer."""
    request_id = ex.request_id
    started = time.perf_counter()

    request = shape.parse(ex.body, ex.headers)                                # 1. parse
    who, key_limit = await fb.attribute(ex.headers, shape.family, request.model)  # 2. attribute
    price = fb.price(request.model)                                           # 3. price & estimate
    prompt_tokens = await shape.count_prompt(request, price)
    grant = await _reserve(fb, shape, request_id, who, price, prompt_tokens, request, key_limit)  # 4. reserve

    try:
        bound = grant.output_bound if grant is not None and grant.enforce_bound else None
        body = shape.forward_body(ex.body, request, bound)                    # 5. forward
        target = fb.upstream_for(shape.family, request.model)
        call = target.send("POST", shape.upstream_path, ex.headers, body, query=ex.query, model=request.model)
        meter = _Call(fb, ex, shape, who, request, price, prompt_tokens, grant, started, target, call)
    except BaseException:  # nothing was sent: the hold goes now (it would be renewed while held)
        if grant is not None:
            await fb.release(request_id, who)
        raise
    try:
        async with call as upstream:
            is_sse = upstream.content_type == "text/event-stream"
            if upstream.status >= 400 or not (request.stream and is_sse):
                payload = await target.read(upstream)
                return await meter.finish_whole(upstream, payload)               # 6–8
            return await meter.relay_stream(upstream)                            # 6–8 as bytes arrive
    except FareboxError as exc:  # no whole answer from the upstream (502, 504)
        if not meter.settled:
            meter.upstream_failed(exc)
        raise
    finally:
        await meter.release_if_unsettled()


async def _reserve(fb: Services, shape: ApiShape, request_id: str, who: Attribution, price: ModelPrice,
                   prompt_tokens: int, request: ApiRequest, key_limit: RateLimit | None) -> Grant | None:
    try:
        limits = await fb.rate_limits(who, key_limit)
        return await reserve_budget(fb.ledger, fb.settings, request_id, who, price, prompt_tokens, request,
                                    limits=limits)
    except (BudgetExceeded, RateLimited) as exc:
        if isinstance(exc, BudgetExceeded):
            fb.metrics.rejection(exc.extra.get("scope") or "unknown", who.project)
        else:
            fb.metrics.rate_limited(exc.extra["scope"], exc.extra["limit"], who.project)
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
    """One forwarded request: measures what came back, settles it, answers the client.

    Its times (``time.perf_counter()``): ``started`` (the request arrived), ``asked_at`` (a
    connection to the upstream was asked for), the call's ``sent_at`` and ``first_byte_at``,
    and the answer's last byte (``upstream_done``). Upstream latency is sent -> last byte, time
    to first byte sent -> first byte, farebox's overhead what lies outside asked -> last byte."""

    __slots__ = ("fb", "ex", "shape", "request_id", "who", "request", "price", "priced_model", "prompt_tokens",
                 "grant", "started", "target", "call", "asked_at", "settled")

    def __init__(self, fb: Services, ex: Exchange, shape: ApiShape, who: Attribution, request: ApiRequest,
                 price: ModelPrice, prompt_tokens: int, grant: Grant | None, started: float, target: Upstream,
                 call: Call) -> None:
        self.fb, self.ex, self.shape, self.request_id = fb, ex, shape, ex.request_id
        self.who, self.request = who, request
        self.price, self.priced_model = price, price.name
        self.prompt_tokens, self.grant, self.started = prompt_tokens, grant, started
        self.target, self.call = target, call  # the upstream it went to, and the call there
        self.settled = False
        self.asked_at = time.perf_counter()

    async def finish_whole(self, upstream: Any, payload: bytes) -> None:
        """A complete (non-stream, or error) upstream answer."""
        extra = [("X-Request-Id", self.request_id)]
        upstream_done = time.perf_counter()
        if upstream.status >= 400:
            # Passed through as the upstream sent it; nothing is charged.
            await self.release_if_unsettled()
            self._count(upstream.status)
            self._observe_upstream(upstream_done)
            self.ex.reply(upstream.status, response_headers(upstream.headers, extra), payload)
            return
        measured = self.shape.measure_body(payload, self.request, self.prompt_tokens)
        # Queued for Redis before the answer goes out (the client's next reservation comes
        # after it); the answer does not wait for Redis to confirm it.
        cost = self._record(measured, upstream.status, upstream_done)
        extra.append(("X-Farebox-Cost-USD", nano_to_usd(cost)))
        extra.extend(_budget_headers(self.grant, cost))
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
            async for data in self.target.iter_chunks(upstream):
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
            self.target.failures.note(
                f"stream {exc.code}", "upstream stream for request %s ended early: %s (recorded as received)",
                self.request_id, exc.message)
        upstream_done = time.perf_counter()
        measured = meter.result(self.prompt_tokens)
        # Recorded once the last byte is out, without holding the connection: the client's next
        # request on it does not wait for Redis to confirm this one.
        self._record(measured, 499 if client_gone else status, upstream_done)
        self._observe_overhead(upstream_done)
        if upstream_cut:
            # Cut the client's stream too (no final chunk), so it cannot mistake it for a whole one.
            ex.cut()

    def upstream_failed(self, exc: FareboxError) -> None:
        """No whole answer came back (``exc``: the 502 or 504 the client gets). A request that
        reached the upstream is recorded, estimated from what arrived: the provider may well
        have billed it. One that never did, or that an error answer refused, costs nothing
        (``release_if_unsettled`` gives its hold back)."""
        call, fb = self.call, self.fb
        upstream_done = time.perf_counter()
        if call.sent and call.status < 400:
            measured = self.shape.measure_body(call.received(), self.request, self.prompt_tokens)
            self._record(Measured(measured.usage, estimated=True), exc.status, upstream_done)
            self._observe_overhead(upstream_done)
            self.target.failures.note(f"broken {exc.code}", "upstream answer to request %s broke off after the "
                                      "request was sent: %s (answered %d, recorded as estimated)",
                                      self.request_id, exc.message, exc.status)
            return
        if call.sent:  # an error answer (which a provider does not bill) that broke off
            self._count(exc.status)
            self._observe_upstream(upstream_done)
            self.target.failures.note(f"refused {exc.code}", "upstream error answer (%d) to request %s broke off: "
                                      "%s (answered %d, nothing charged)", call.status, self.request_id,
                                      exc.message, exc.status)
            return
        fb.metrics.request(self.shape.name, exc.status, self.priced_model, self.who.project)
        self.target.failures.note(f"unsent {exc.code}", "upstream not reached for request %s: %s "
                                  "(answered %d, nothing charged)", self.request_id, exc.message, exc.status)

    def _record(self, measured: Measured, status: int, upstream_done: float) -> int:
        """Queue the request's settle (confirmed in the background: spooled if Redis cannot
        take it) and count it; its cost in nano-USD."""
        fb = self.fb
        cost = cost_nano(self.price, measured.usage)
        usage = measured.usage
        request = self.request
        endpoint = self.shape.name
        sent_at, first_byte_at = self.call.sent_at, self.call.first_byte_at
        event = UsageEvent(
            request_id=self.request_id, ts=time.time(), attribution=self.who, model=request.model,
            priced_model=self.priced_model, endpoint=endpoint, upstream=self.target.name, status=status,
            stream=request.stream, estimated=measured.estimated, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens,
            cache_creation_tokens=usage.cache_creation_tokens, reasoning_tokens=usage.reasoning_tokens,
            cost_nano=cost, latency_ms=int((upstream_done - sent_at) * 1000),
            clamped_max_tokens=self.grant.output_bound if self.grant is not None and self.grant.clamped else None,
            ttfb_ms=int((first_byte_at - sent_at) * 1000) if first_byte_at else None,
            cache_creation_1h_tokens=usage.cache_creation_1h_tokens, web_search_calls=usage.web_search_calls,
            output_bound=self.grant.output_bound if self.grant is not None else None,
            reserved_nano=self.grant.reserved_nano if self.grant is not None else None,
        )
        self.settled = True
        fb.record_soon(event, self.grant.rate_hold if self.grant is not None else None)
        m = fb.metrics
        self._count(status)
        m.usage(self.priced_model, self.who.project, usage, cost, estimated=measured.estimated)
        if self.grant is not None and self.grant.clamped:
            m.clamped.inc()
        self._observe_upstream(upstream_done)
        return cost

    def _count(self, status: int) -> None:
        """A request that reached its upstream, answered with ``status``."""
        m = self.fb.metrics
        m.request(self.shape.name, status, self.priced_model, self.who.project)
        m.upstream_request(self.target.name, status)

    def _observe_upstream(self, upstream_done: float) -> None:
        """The upstream call's times, for a request that was sent."""
        call, m = self.call, self.fb.metrics
        sent_at, first_byte_at = call.sent_at, call.first_byte_at
        m.upstream_connect.observe(sent_at - self.asked_at)
        m.upstream_latency.observe(upstream_done - sent_at)
        if first_byte_at:
            m.upstream_ttfb.observe(first_byte_at - sent_at)

    def _observe_overhead(self, upstream_done: float) -> None:
        now = time.perf_counter()
        self.fb.metrics.overhead.observe((self.asked_at - self.started) + (now - upstream_done))

    async def release_if_unsettled(self) -> None:
        if not self.settled and self.grant is not None:
            self.settled = True
            await self.fb.release(self.request_id, self.who)
