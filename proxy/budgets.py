"""Step 4, reserve: the budget check that happens before anything is forwarded.

The worst case of a request is its counted prompt at the highest input price (a long-context
tier's above its threshold) plus its output bound (the client's, e.g. chat's
``max_completion_tokens`` / ``max_tokens``, else the catalog's ``max_output_tokens``, plus the
output the body itself is billed for, e.g. a ``prediction``, times ``n``) at the highest output
price, plus the calls billed per call it may make (``hosted_calls``, e.g. web searches). A worst case above ``MAX_WORST_CASE_NANO`` cannot be priced:
400, naming the field that makes it so. The ledger reserves that amount atomically on every budget that
applies, or nothing. When it does not fit but the room left still pays for at least
``min_output_tokens`` of output, the request goes ahead with its output bound lowered to what
fits (clamping) instead of being refused; below that it gets 402.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

from pricing.catalog import ModelPrice
from pricing.cost import max_output_for_budget, worst_case_nano
from pricing.money import nano_to_usd
from proxy.apis import ApiRequest
from proxy.errors import BadRequest, BudgetExceeded
from proxy.domain import Attribution, BudgetView, RateHold, RateLimit, iso_utc
from proxy.ledger.ledger import Ledger
from proxy.rates import rate_ask, rate_limited
from proxy.settings import Settings

__all__ = ["Grant", "reserve_budget", "budget_exceeded", "MAX_WORST_CASE_NANO"]

# $100,000: far above any one request a catalog model can be asked for, and small enough that
# budget leases of many worst cases stay exact in the ledger's Lua numbers (below 2**53).
MAX_WORST_CASE_NANO = 100_000 * 10**9

# A concurrent request may take the room between a refusal and the clamped retry.
_CLAMP_ATTEMPTS = 3
_ADJECTIVE = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly", "total": "total"}


@dataclass(slots=True)
class Grant:
    """What the reserve step allowed: the amount held and the output bound to forward."""

    reserved_nano: int
    output_bound: int | None        # per choice; set on the forwarded request when `enforce_bound`
    enforce_bound: bool             # the forwarded body must carry output_bound
    clamped: bool
    remaining: BudgetView | None    # the tightest hard budget after this reservation
    rate_hold: RateHold | None = None   # what it counted on rate limits, corrected at settle


def output_bound(request: ApiRequest, price: ModelPrice, settings: Settings) -> tuple[int, bool]:
    """The per-choice output bound and whether farebox must send it (the client did not)."""
    if request.max_output is not None:
        return request.max_output, False
    if price.max_output_tokens:
        return price.max_output_tokens, False
    return settings.default_max_output_tokens, True


async def reserve_budget(ledger: Ledger, settings: Settings, request_id: str, who: Attribution,
                         price: ModelPrice, prompt_tokens: int, request: ApiRequest,
                         *, now: float | None = None, limits: tuple[RateLimit, ...] = ()) -> Grant:
    """Count the request on its rate ``limits`` (429 when one has no room) and hold its worst
    case on its budgets (402 when one has no room), clamping its output bound when allowed."""
    bound, must_send = output_bound(request, price, settings)
    # Output the body itself is billed for (chat's prediction), per choice.
    n, extra, calls = request.n, request.output_extra, request.hosted_calls
    amount = worst_case_nano(price, prompt_tokens, (bound + extra) * n, web_search_calls=calls)
    if amount > MAX_WORST_CASE_NANO:
        raise _too_large(request, price, prompt_tokens, amount)
    clamped = False
    for _ in range(_CLAMP_ATTEMPTS):
        rate = rate_ask(limits, prompt_tokens + (bound + extra) * n)
        outcome = await ledger.reserve(request_id, who, amount, deadline_s=settings.reservation_deadline_s, rate=rate)
        if outcome.ok:
            has_hard = outcome.tightest is not None
            return Grant(amount, bound, enforce_bound=clamped or (must_send and (has_hard or rate is not None)),
                         clamped=clamped, remaining=outcome.tightest, rate_hold=outcome.rate_hold)
        if outcome.rate_refused is not None:
            raise rate_limited(outcome.rate_refused)
        if not settings.clamp_max_tokens or request.bound_field is None:
            break
        fit = max_output_for_budget(price, prompt_tokens, outcome.room_nano, web_search_calls=calls) // n - extra
        if fit < settings.min_output_tokens or fit < max(1, request.min_output):
            break
        bound = min(bound, fit)
        amount = worst_case_nano(price, prompt_tokens, (bound + extra) * n, web_search_calls=calls)
        clamped = True
    raise budget_exceeded(outcome.tightest, amount, now=now,
                          fit=_Fit(price, prompt_tokens, outcome.room_nano, request, bound))


def _too_large(request: ApiRequest, price: ModelPrice, prompt_tokens: int, amount: int) -> BadRequest:
    if worst_case_nano(price, prompt_tokens, 0) > MAX_WORST_CASE_NANO:
        param = request.prompt_field
    elif worst_case_nano(price, prompt_tokens, request.output_extra * request.n) > MAX_WORST_CASE_NANO:
        param = "prediction"
    elif request.max_output is not None:
        param = request.bound_field
    else:
        param = "n"
    return BadRequest(f"This request may cost up to ${nano_to_usd(amount, places=2)}, more than farebox prices "
                      f"(${nano_to_usd(MAX_WORST_CASE_NANO, places=2)}); lower '{param}'.",
                      param=param, code="invalid_value")


def _label(view: BudgetView) -> str:
    return f"{view.scope} '{view.id}'"


def _human(nano: int) -> str:
    """Cents for amounts of a cent or more, full precision below (so $0.0004 is not $0.00)."""
    return nano_to_usd(nano, places=2) if abs(nano) >= 10_000_000 else nano_to_usd(nano)


@dataclass(frozen=True, slots=True)
class _Fit:
    """What a refused request was and the room left: enough to say which output bound would fit."""

    price: ModelPrice
    prompt_tokens: int
    room_nano: int | None
    request: ApiRequest
    bound: int              # the output bound per choice the refused request was priced with

    def hint(self) -> str:
        """``; a request with max_tokens <= 812 would fit`` (the client's own field), or nothing
        when not even one output token fits, or the request has no bound to lower."""
        field, n = self.request.bound_field, self.request.n
        if self.room_nano is None or field is None or n < 1:
            return ""
        fits = max_output_for_budget(self.price, self.prompt_tokens, self.room_nano,
                                     web_search_calls=self.request.hosted_calls) // n
        if not 1 <= fits < self.bound:
            return ""
        per_choice = f" per choice ({n} generated in all)" if n > 1 else ""
        return f"; a request with {field} <= {fits}{per_choice} would fit"


def budget_exceeded(view: BudgetView | None, amount_nano: int, *, now: float | None = None,
                    fit: _Fit | None = None) -> BudgetExceeded:
    """The 402 for a refused reservation, naming the tightest budget and, with ``fit``, the
    largest output bound that the room left would pay for."""
    if view is None:  # the ledger refused without naming a budget: should not happen
        return BudgetExceeded("Budget exceeded.", extra={"scope": None, "scope_id": None})
    resets = iso_utc(view.resets_at)
    spent = nano_to_usd(view.spent_nano)
    held = f" (plus ${_human(view.reserved_nano)} held by requests in flight)" if view.reserved_nano else ""
    message = (f"Budget exceeded for {_label(view)}: {_ADJECTIVE.get(view.period, view.period)} limit "
               f"${_human(view.limit_nano)}, spent ${_human(view.spent_nano)}{held}, this request may cost up to "
               f"${_human(amount_nano)}" + (fit.hint() if fit is not None else "")
               + (f"; resets {resets}" if resets else "; this budget never resets"))
    headers = {}
    if view.resets_at is not None:
        current = datetime.now(timezone.utc).timestamp() if now is None else now
        headers["Retry-After"] = str(max(1, math.ceil(view.resets_at.timestamp() - current)))
    extra = {
        "scope": view.scope, "scope_id": view.id, "period": view.period,
        "limit_usd": nano_to_usd(view.limit_nano), "spent_usd": spent,
        "reserved_usd": nano_to_usd(view.reserved_nano), "request_max_cost_usd": nano_to_usd(amount_nano),
        "resets_at": resets,
    }
    return BudgetExceeded(message, headers=headers, extra=extra)
