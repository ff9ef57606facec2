"""Step 4's other half: rate limits, requests and tokens per minute of a farebox key or a project.

A request counts one request and its worst case in tokens (the counted prompt plus its output
bound, as the budget check prices it) on every rate limit that applies, in the same Redis step
that holds its budgets (``reserve.lua``); its settle corrects the tokens to what it used. Limits
count in windows of one minute aligned to the epoch minute, on the clock of the farebox process
that reserves. Over a limit the request gets 429 ``rate_limit_exceeded``, with ``Retry-After``
(and ``retry-after-ms``, which the OpenAI SDKs read first) and OpenAI's ``x-ratelimit-*``
headers for the limit that refused it; 402 stays for money.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

from proxy.domain import RateAsk, RateLimit, RateRefusal, iso_utc
from proxy.errors import RateLimited

__all__ = ["rate_ask", "rate_limited", "reset_text"]

_SCOPE = {"project": "project", "key": "farebox key"}


def rate_ask(limits: tuple[RateLimit, ...], tokens: int) -> RateAsk | None:
    """What a request of ``tokens`` (its worst case) counts on ``limits``; None when none applies."""
    return RateAsk(limits=limits, tokens=tokens) if limits else None


def reset_text(seconds: float) -> str:
    """A wait as OpenAI's ``x-ratelimit-reset-*`` headers write it: ``850ms``, ``12.5s``, ``1m0s``."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def rate_limited(refusal: RateRefusal, *, now: float | None = None) -> RateLimited:
    """The 429 for a request a rate limit refused, naming the limit and when it resets."""
    limit = refusal.limit
    current = refusal.at if now is None else now
    wait = max(0.0, refusal.resets_at - current)
    label = f"{_SCOPE.get(limit.scope, limit.scope)} '{limit.id}'"
    if refusal.kind == "requests":
        value, used, asked, per = limit.rpm, refusal.used_requests, 1, "requests per minute"
    else:
        value, used, asked, per = limit.tpm, refusal.used_tokens, refusal.asked_tokens, "tokens per minute"
    assert value is not None
    if refusal.kind == "tokens" and asked > value:
        advice = (f"; this request alone may use {asked} tokens (its prompt and its output bound), more than the "
                  "limit: lower its output bound (max_tokens or the like)")
    else:
        advice = f"; try again in {reset_text(wait)}"
    held = " (requests in flight count their worst case until they finish)" if refusal.kind == "tokens" else ""
    message = (f"Rate limit reached for {label} on {per}: limit {value}, used {used}{held}, "
               f"requested {asked}{advice}.")
    headers = {"Retry-After": str(max(1, math.ceil(wait))), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))}
    reset = reset_text(wait)
    if limit.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(limit.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, limit.rpm - refusal.used_requests))
        headers["x-ratelimit-reset-requests"] = reset
    if limit.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(limit.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, limit.tpm - refusal.used_tokens))
        headers["x-ratelimit-reset-tokens"] = reset
    extra = {"scope": limit.scope, "scope_id": limit.id, "limit": refusal.kind, "limit_value": value,
             "used": used, "requested": asked,
             "resets_at": iso_utc(datetime.fromtimestamp(refusal.resets_at, timezone.utc))}
    return RateLimited(message, headers=headers, extra=extra)
