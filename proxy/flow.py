"""Data-plane endpoints. ``serve_chat`` reads as the request flow, top to bottom:

parse → attribute → price & estimate → reserve → forward → measure → settle & record → respond.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from multidict import CIMultiDict

from pricing.catalog import ModelPrice
from pricing.cost import cost_nano
from pricing.money import nano_to_usd
from proxy.budgets import Grant, reserve_budget
from proxy.errors import BudgetExceeded, FareboxError, LedgerUnavailable
from proxy.domain import Attribution, UsageEvent
from proxy.pipeline.attribute import attribute
from proxy.pipeline.measure import Measured, StreamMeter, choices_text, estimate_usage, usage_from_object
from proxy.pipeline.parse import ChatRequest, parse_chat
from proxy.services import Services
from proxy.tokens import count_chat_prompt_async
from proxy.upstream.relay import response_headers
from proxy.upstream.sse import SSESplitter

__all__ = ["Exchange", "serve_chat"]

log = logging.getLogger("farebox")

ENDPOINT_CHAT = "chat.completions"


def _forward_body(raw: bytes, chat: ChatRequest, grant: Grant | None) -> bytes:
    """The body sent upstream: the client's bytes unless farebox must change something."""
    changed = False
    body = chat.body
    if chat.stream and not chat.client_wants_usage:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        changed = True
    if grant is not None and grant.enforce_bound and grant.output_bound is not None:
        body[chat.max_output_field] = grant.output_bound
        changed = True
    return orjson.dumps(body) if changed else raw


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


async def serve_chat(fb: Services, ex: Exchange) -> None:
    settings = fb.settings
    request_id = ex.request_id
    started = time.perf_counter()

    chat = parse_chat(ex.body)                                                # 1. parse
    who = attribute(ex.headers, settings)                                     # 2. attribute
    price = fb.price(chat.model)                                              # 3. price & estimate
    prompt_tokens = await count_chat_prompt_async(chat.model, chat.body)
    grant = await _reserve(fb, request_id, who, price, prompt_tokens, chat)   # 4. reserve

    body = _forward_body(ex.body, chat, grant)                                # 5. forward
    meter = _Call(fb, ex, who, chat, price, prompt_tokens, grant, started)
    try:
        async with fb.upstream.send("POST", "/chat/completions", ex.headers, body) as upstream:
            meter.forwarded_at = time.perf_counter()
            is_sse = upstream.content_type == "text/event-stream"
            if upstream.status >= 400 or not (chat.stream and is_sse):
                payload = await fb.upstream.read(upstream)
                return await meter.finish_whole(upstream, payload)               # 6–8
            return await meter.relay_stream(upstream)                            # 6–8 as bytes arrive
    except FareboxError as exc:  # no answer from the upstream (502, 504): counted here, nothing charged
        fb.metrics.request(ENDPOINT_CHAT, exc.status, price.name, who.project)
        raise
    finally:
        await meter.release_if_unsettled()


async def _reserve(fb: Services, request_id: str, who: Attribution, price: ModelPrice, prompt_tokens: int,
                   chat: ChatRequest) -> Grant | None:
    try:
        return await reserve_budget(fb.ledger, fb.settings, request_id, who, price, prompt_tokens, chat)
    except BudgetExceeded as exc:
        fb.metrics.rejection(exc.extra.get("scope") or "unknown", who.project)
        fb.metrics.request(ENDPOINT_CHAT, exc.status, price.name, who.project)
        raise
    except LedgerUnavailable as exc:
        fb.metrics.redis_errors.inc()
        if fb.settings.fail_mode == "closed":
            fb.metrics.request(ENDPOINT_CHAT, exc.status, price.name, who.project)
            raise
        log.warning("redis unavailable: request %s forwarded without a budget check (fail_mode open)", request_id)
        return None


class _Call:
    """One forwarded request: measures what came back, settles it, answers the client."""

    __slots__ = ("fb", "ex", "request_id", "who", "chat", "price", "priced_model", "prompt_tokens", "grant",
                 "started", "forwarded_at", "settled")

    def __init__(self, fb: Services, ex: Exchange, who: Attribution, chat: ChatRequest,
                 price: ModelPrice, prompt_tokens: int, grant: Grant | None, started: float) -> None:
        self.fb, self.ex, self.request_id, self.who, self.chat = fb, ex, ex.request_id, who, chat
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
            self.fb.metrics.request(ENDPOINT_CHAT, upstream.status, self.priced_model, self.who.project)
            self.fb.metrics.upstream_latency.observe(time.perf_counter() - self.forwarded_at)
            self.ex.reply(upstream.status, response_headers(upstream.headers, extra), payload)
            return
        upstream_done = time.perf_counter()
        measured = self._measure_body(payload)
        # Queued for Redis before the answer goes out (the client's next reservation comes
        # after it); the answer does not wait for Redis to confirm it.
        cost = self._record(measured, upstream.status, upstream_done)
        extra.append(("X-Farebox-Cost-USD", nano_to_usd(cost)))
        extra.extend(_budget_headers(self.grant))
        self.ex.reply(upstream.status, response_headers(upstream.headers, extra), payload)
        self._observe_overhead(upstream_done)

    def _measure_body(self, payload: bytes) -> Measured:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            usage = usage_from_object(obj.get("usage"))
            if usage is not None:
                return Measured(usage, estimated=False)
            text, calls = choices_text(obj.get("choices"))
        else:
            text, calls = "", []
        return Measured(estimate_usage(self.chat.model, self.prompt_tokens, text, calls), estimated=True)

    async def relay_stream(self, upstream: Any) -> None:
        """Forward each event as it completes; drop the usage chunk the client did not ask for."""
        extra = [("X-Request-Id", self.request_id), *_budget_headers(self.grant)]
        ex = self.ex
        await ex.start(upstream.status, response_headers(upstream.headers, extra))
        strip_usage = not self.chat.client_wants_usage
        splitter = SSESplitter()
        meter = StreamMeter()
        status = upstream.status
        client_gone = upstream_cut = False
        try:
            async for data in self.fb.upstream.iter_chunks(upstream):
                out = [event for event in splitter.feed(data) if meter.take(event, strip_usage)]
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
        measured = meter.result(self.chat.model, self.prompt_tokens)
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
        event = UsageEvent(
            request_id=self.request_id, ts=time.time(), attribution=self.who, model=self.chat.model,
            priced_model=self.priced_model, endpoint=ENDPOINT_CHAT, upstream=fb.upstream.base_url, status=status,
            stream=self.chat.stream, estimated=measured.estimated, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens,
            cache_creation_tokens=usage.cache_creation_tokens, reasoning_tokens=usage.reasoning_tokens,
            cost_nano=cost, latency_ms=int((upstream_done - self.forwarded_at) * 1000),
            clamped_max_tokens=self.grant.output_bound if self.grant is not None and self.grant.clamped else None,
        )
        self.settled = True
        fb.record_soon(event)
        m = fb.metrics
        m.request(ENDPOINT_CHAT, status, self.priced_model, self.who.project)
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
