"""Usage records: compute (CPU, memory, GPU, storage, bandwidth, sandboxes) priced by the
resource price table and counted in the same budgets, rate limits and reports as LLM calls.

``POST /v1/usage-records`` with ``{"resource": "gpu", "quantity": "0.5", "execution_id": "job-7"}``
is attributed like any request (a farebox key, or the project / agent / session headers); its
cost (``pricing.resources``: quantity × unit price, rounded up to a nano-dollar) is reserved on
every budget that applies like a request's worst case (402 when a hard budget lacks room; one
request on the rate limits, 429 when one is full), then recorded through the same settle as a
request: a usage event with no tokens, endpoint ``usage-records``, model and priced model
``compute:<resource>`` (``COMPUTE_PREFIX``: every aggregate's breakdown by model counts it per
resource, and reports split LLM from compute by that name), and as its session the
``execution_id`` when given (an execution is a session: LLM calls sent with ``X-Session-Id`` set
to the same id join it). Holds of compute budget are in ``proxy.holds``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import orjson

from pricing.cost import Usage
from pricing.money import nano_to_usd
from pricing.resources import ResourcePrice, parse_quantity, parse_resource_prices, quantity_text, resource_cost_nano
from proxy.apis.body import json_type
from proxy.budgets import MAX_WORST_CASE_NANO, budget_exceeded
from proxy.domain import COMPUTE_PREFIX, ID_PATTERN, ID_RULE, Attribution, RateHold, RateLimit, UsageEvent
from proxy.errors import BadRequest, BudgetExceeded, FareboxError, InvalidId, LedgerUnavailable, RateLimited
from proxy.rates import rate_ask, rate_limited
from proxy.services import Services
from proxy.settings import Settings

__all__ = ["ENDPOINT", "UsageAsk", "ResourceTable", "record_usage", "attribute_usage", "refused", "usage_event",
           "shown_price"]

log = logging.getLogger("farebox")

ENDPOINT = "usage-records"          # the usage events' endpoint, and the metrics' label
_RECORD_FIELDS = ("resource", "quantity", "execution_id")


@dataclass(frozen=True, slots=True)
class UsageAsk:
    """A usage record's body, checked and priced."""

    price: ResourcePrice
    quantity: Decimal
    execution_id: str | None
    cost_nano: int

    @property
    def model(self) -> str:
        return COMPUTE_PREFIX + self.price.name


def shown_price(price: ResourcePrice) -> str:
    """A unit price as answers show it: ``"1.50"``, as configured, without an exponent."""
    return format(price.usd_per_unit, "f")


def _shown(value: object) -> str:
    return orjson.dumps(value).decode()[:100]


class ResourceTable:
    """The resource price table of one application (``resource_prices`` over the defaults) and
    the checks of a usage record's body."""

    __slots__ = ("prices",)

    def __init__(self, prices: Mapping[str, ResourcePrice]) -> None:
        self.prices = dict(prices)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ResourceTable":
        return cls(parse_resource_prices(settings.resource_prices))

    def parse(self, body: dict[str, Any], *, extra: tuple[str, ...] = ()) -> UsageAsk:
        """``resource``, ``quantity`` and ``execution_id`` of a usage record's ``body`` (``extra``:
        the other fields the caller reads), priced; a 400 naming the field for anything else."""
        allowed = _RECORD_FIELDS + extra
        for name in body:
            if name not in allowed:
                raise BadRequest(f"Unknown parameter '{name}': a usage record has {', '.join(allowed)}.",
                                 param=name, code="unknown_parameter")
        resource = body.get("resource")
        if resource is None:
            raise BadRequest("Missing required parameter: 'resource'.", param="resource",
                             code="missing_required_parameter")
        if not isinstance(resource, str):
            raise BadRequest(f"Invalid type for 'resource': expected a string, got {json_type(resource)}.",
                             param="resource", code="invalid_type")
        price = self.prices.get(resource)
        if price is None:
            raise BadRequest(f"Unknown resource {_shown(resource)}: farebox prices {', '.join(sorted(self.prices))} "
                             "(resource_prices adds others).", param="resource", code="unknown_resource")
        quantity = self.quantity(body)
        execution_id = body.get("execution_id")
        if execution_id is not None and (not isinstance(execution_id, str) or not ID_PATTERN.fullmatch(execution_id)):
            raise InvalidId(f"Invalid execution_id {_shown(execution_id)}: ids are {ID_RULE}.", param="execution_id")
        cost = resource_cost_nano(price, quantity)
        if cost > MAX_WORST_CASE_NANO:
            raise BadRequest(f"This usage record costs ${nano_to_usd(cost, places=2)}, more than farebox records at "
                             f"once (${nano_to_usd(MAX_WORST_CASE_NANO, places=2)}); split it.",
                             param="quantity", code="invalid_value")
        return UsageAsk(price, quantity, execution_id, cost)

    @staticmethod
    def quantity(body: dict[str, Any]) -> Decimal:
        """The body's ``quantity``: a positive decimal, read exactly."""
        value = body.get("quantity")
        if value is None:
            raise BadRequest("Missing required parameter: 'quantity'.", param="quantity",
                             code="missing_required_parameter")
        try:
            return parse_quantity(value)
        except ValueError as exc:
            raise BadRequest(f"Invalid quantity {_shown(value)}: {exc}.", param="quantity",
                             code="invalid_value") from None


async def attribute_usage(fb: Services, headers: Mapping[str, str], execution_id: str | None
                          ) -> tuple[Attribution, RateLimit | None]:
    """Who a usage record is charged to, as any request (a farebox key, else the headers; no
    provider key of farebox's is needed), its session the ``execution_id`` when given."""
    assert fb.auth is not None
    who, key_limit = await fb.auth.attribute(headers, "openai", None, upstream=False)
    return (who if execution_id is None else replace(who, session=execution_id)), key_limit


def refused(fb: Services, exc: FareboxError, model: str, project: str) -> None:
    """Count a usage record or hold refused with 402, 429 or 503."""
    if isinstance(exc, BudgetExceeded):
        fb.metrics.rejection(exc.extra.get("scope") or "unknown", project)
    elif isinstance(exc, RateLimited):
        fb.metrics.rate_limited(exc.extra["scope"], exc.extra["limit"], project)
    fb.metrics.request(ENDPOINT, exc.status, model, project)


def usage_event(request_id: str, ts: float, who: Attribution, model: str, cost_nano: int, status: int) -> UsageEvent:
    """The usage event of a usage record: no tokens, no upstream."""
    return UsageEvent(request_id=request_id, ts=ts, attribution=who, model=model, priced_model=model,
                      endpoint=ENDPOINT, upstream="", status=status, stream=False, estimated=False, prompt_tokens=0,
                      completion_tokens=0, cached_tokens=0, cache_creation_tokens=0, reasoning_tokens=0,
                      cost_nano=cost_nano, latency_ms=0)


async def record_usage(fb: Services, table: ResourceTable, headers: Mapping[str, str], body: dict[str, Any],
                       request_id: str) -> dict[str, Any]:
    """Check, price, reserve and record one usage record; its answer's body (201)."""
    ask = table.parse(body)
    who, key_limit = await attribute_usage(fb, headers, ask.execution_id)
    rate_hold: RateHold | None = None
    try:
        limits = await fb.rate_limits(who, key_limit)
        outcome = await fb.ledger.reserve(request_id, who, ask.cost_nano, deadline_s=fb.settings.reservation_deadline_s,
                                          rate=rate_ask(limits, 0))
        if not outcome.ok:
            raise (rate_limited(outcome.rate_refused) if outcome.rate_refused is not None
                   else budget_exceeded(outcome.tightest, ask.cost_nano))
        rate_hold = outcome.rate_hold
    except LedgerUnavailable as exc:
        fb.metrics.redis_errors.inc()
        if fb.settings.fail_mode == "closed":
            refused(fb, exc, ask.model, who.project)
            raise
        log.warning("redis unavailable: usage record %s recorded without a budget check (fail_mode open)", request_id)
    except (BudgetExceeded, RateLimited) as exc:
        refused(fb, exc, ask.model, who.project)
        raise
    await fb.record(usage_event(request_id, fb.ledger.clock(), who, ask.model, ask.cost_nano, 201), rate_hold)
    fb.metrics.request(ENDPOINT, 201, ask.model, who.project)
    fb.metrics.usage(ask.model, who.project, Usage(0, 0), ask.cost_nano, estimated=False)
    return {"id": request_id, "resource": ask.price.name, "quantity": quantity_text(ask.quantity),
            "unit": ask.price.unit, "usd_per_unit": shown_price(ask.price), "cost_usd": nano_to_usd(ask.cost_nano),
            "execution_id": ask.execution_id}
