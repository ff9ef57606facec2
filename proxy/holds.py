"""Usage holds: compute budget reserved ahead of long-running work, then settled or released.

``POST /v1/usage-records/holds`` takes a usage record's body (its quantity the most the work may
use) and an optional ``expires_in`` (``90s``, ``15m``, ``12h``, ``7d``; default 1 h, at most
7 d): the most it may cost is held on every budget that applies, like a request's reservation
(402 / 429 as a usage record; shown in budgets' ``reserved_usd``), under the hold's id, in
Redis, by no process in particular: it is not renewed, and lapses at its expiry (plus
``SETTLE_GRACE_S``) unless settled or released first. Its record (``proxy.ledger.holds``) says
who it is charged to, the resource, its unit price then, the most quantity and when it expires,
so any farebox process can settle or release it.

- ``POST /v1/usage-records/holds/{id}/settle`` with ``{"quantity"}`` (at most the held quantity,
  before ``expires_at``) records that use as a usage record, at the unit price of the hold,
  through the same settle as a request: the hold's id is the record's request id, so its hold
  is released in the same step. Settling again with the same quantity gives the same answer
  and records nothing more (within ``idempotency_window_s`` the record is sent again, which
  the ledger counts once: a settle whose process died between closing the hold and writing its
  record is recorded by the repeat); with another quantity, 409.
- ``DELETE /v1/usage-records/holds/{id}`` releases it unused; again, the same answer.

Both are attributed like the hold (a farebox key or the headers): a hold is found in the
caller's project only, so another project's hold is a 404 like an unknown one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from pricing.cost import Usage
from pricing.money import nano_to_usd
from pricing.resources import ResourcePrice, parse_quantity, quantity_text, resource_cost_nano
from proxy.budgets import budget_exceeded
from proxy.compute import (ENDPOINT, ResourceTable, attribute_usage, refused, shown_price, usage_event)
from proxy.domain import COMPUTE_PREFIX, Attribution, iso_utc
from proxy.errors import BadRequest, BudgetExceeded, Conflict, LedgerUnavailable, NotFound, RateLimited
from proxy.rates import rate_ask, rate_limited
from proxy.services import Services

__all__ = ["create_hold", "settle_hold", "release_hold", "DEFAULT_EXPIRY_S", "MAX_EXPIRY_S", "SETTLE_GRACE_S"]

DEFAULT_EXPIRY_S = 3600             # a hold without expires_in lasts an hour
MAX_EXPIRY_S = 7 * 86_400           # and at most a week
# The hold's money stays held this long past expires_at, so a settle accepted just before it is
# written while its hold still counts (no budget is overspent by a late settle).
SETTLE_GRACE_S = 10
# A repeated settle sends its record again only this long before the ledger forgets the first.
RESEND_MARGIN_S = 60
_DURATION = re.compile(r"([1-9][0-9]{0,9})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_HOLD_ID = re.compile(r"hold_[0-9a-f]{24}")


def _expires_in(value: object) -> int:
    """Seconds from ``90s``, ``15m``, ``12h`` or ``7d`` (default an hour, at most a week)."""
    if value is None:
        return DEFAULT_EXPIRY_S
    found = _DURATION.fullmatch(value) if isinstance(value, str) else None
    seconds = int(found.group(1)) * _UNIT_S[found.group(2)] if found else 0
    if not found or seconds > MAX_EXPIRY_S:
        shown = repr(value) if isinstance(value, str) else str(value)[:100]
        raise BadRequest(f"Invalid expires_in {shown}: use a duration such as 90s, 15m, 12h or 7d (at most 7d).",
                         param="expires_in", code="invalid_value")
    return seconds


def _iso_ms(ms: int) -> str:
    return iso_utc(datetime.fromtimestamp(ms / 1000, tz=timezone.utc)) or ""


async def create_hold(fb: Services, table: ResourceTable, headers: Mapping[str, str], body: dict[str, Any]
                      ) -> dict[str, Any]:
    """Hold the most a usage may cost; the answer's body (201): ``id``, ``reserved_usd``, ``expires_at``."""
    ask = table.parse(body, extra=("expires_in",))
    expires_s = _expires_in(body.get("expires_in"))
    who, key_limit = await attribute_usage(fb, headers, ask.execution_id)
    hold_id = "hold_" + os.urandom(12).hex()
    now = fb.ledger.clock()
    expires_at_ms = (int(now) + expires_s) * 1000          # a whole second, as answers write it
    try:
        limits = await fb.rate_limits(who, key_limit)
        outcome = await fb.ledger.hold(hold_id, who, ask.cost_nano, rate=rate_ask(limits, 0),
                                       deadline_s=expires_at_ms / 1000 + SETTLE_GRACE_S - now)
        if not outcome.ok:
            raise (rate_limited(outcome.rate_refused) if outcome.rate_refused is not None
                   else budget_exceeded(outcome.tightest, ask.cost_nano))
    except (BudgetExceeded, RateLimited, LedgerUnavailable) as exc:
        if isinstance(exc, LedgerUnavailable):
            fb.metrics.redis_errors.inc()
        refused(fb, exc, ask.model, who.project)
        raise
    fields = {"project": who.project, "agent": who.agent, "session": who.session or "", "key_id": who.key_id or "",
              "resource": ask.price.name, "unit": ask.price.unit, "usd_per_unit": shown_price(ask.price),
              "max_quantity": quantity_text(ask.quantity), "reserved_nano": str(ask.cost_nano),
              "expires_at_ms": str(expires_at_ms), "execution_id": ask.execution_id or ""}
    try:
        await fb.ledger.add_hold(who.project, hold_id, fields, expires_at_ms)
    except BaseException:
        await fb.release(hold_id, who)   # no record, no hold: it could never be settled
        raise
    fb.metrics.request(ENDPOINT, 201, ask.model, who.project)
    return {"id": hold_id, "reserved_usd": nano_to_usd(ask.cost_nano), "expires_at": _iso_ms(expires_at_ms)}


async def _record(fb: Services, headers: Mapping[str, str], hold_id: str) -> tuple[str, dict[str, str]]:
    """The caller's project and its hold ``hold_id`` (404 when it has none such)."""
    who, _ = await attribute_usage(fb, headers, None)
    record = await fb.ledger.hold_record(who.project, hold_id) if _HOLD_ID.fullmatch(hold_id) else None
    if record is None or "project" not in record:
        raise NotFound(f"No usage hold '{hold_id[:100]}' in project '{who.project}'.", param="id",
                       code="hold_not_found")
    return who.project, record


def _attribution(record: dict[str, str]) -> Attribution:
    return Attribution(record["project"], record["agent"], record["session"] or None, record["key_id"] or None)


def _view(hold_id: str, record: dict[str, str]) -> dict[str, Any]:
    """A closed hold as settle and release answer it."""
    how, _, rest = record["closed"].partition("|")
    reserved = int(record["reserved_nano"])
    out: dict[str, Any] = {"id": hold_id, "status": how, "resource": record["resource"], "unit": record["unit"],
                           "usd_per_unit": record["usd_per_unit"], "max_quantity": record["max_quantity"],
                           "reserved_usd": nano_to_usd(reserved), "execution_id": record["execution_id"] or None,
                           "expires_at": _iso_ms(int(record["expires_at_ms"]))}
    if how == "settled":
        quantity, cost, _ = rest.split("|")
        out.update(quantity=quantity, cost_usd=nano_to_usd(int(cost)), released_usd=nano_to_usd(reserved - int(cost)))
    else:
        out.update(quantity="0", cost_usd="0.00", released_usd=nano_to_usd(reserved))
    return out


def _closed_answer(hold_id: str, record: dict[str, str], wanted: str, quantity: Decimal | None = None
                   ) -> dict[str, Any]:
    """The answer to a settle (``wanted`` "settled", with its ``quantity``) or a release of a hold
    already closed: the same answer when it was closed the same way, else 409."""
    view = _view(hold_id, record)
    if view["status"] == wanted and (quantity is None or Decimal(view["quantity"]) == quantity):
        return view
    if view["status"] == "released":
        raise Conflict(f"Usage hold '{hold_id}' was released; nothing can be recorded on it.", param="id",
                       code="hold_released")
    raise Conflict(f"Usage hold '{hold_id}' was already settled with quantity {view['quantity']}; a hold is "
                   "settled once.", param="id", code="hold_settled")


async def settle_hold(fb: Services, headers: Mapping[str, str], hold_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Record the use of a hold (at most its quantity) and release the rest; the answer's body."""
    for name in body:
        if name != "quantity":
            raise BadRequest(f"Unknown parameter '{name}': a settle has quantity.", param=name,
                             code="unknown_parameter")
    quantity = ResourceTable.quantity(body)
    project, record = await _record(fb, headers, hold_id)
    if "closed" in record:
        return await _settled_again(fb, hold_id, record, quantity)
    now = fb.ledger.clock()
    expires_at_ms = int(record["expires_at_ms"])
    if now * 1000 >= expires_at_ms:
        raise Conflict(f"Usage hold '{hold_id}' expired at {_iso_ms(expires_at_ms)}: its budget is no longer held. "
                       "Record the use with POST /v1/usage-records instead.", param="id", code="hold_expired")
    most = parse_quantity(record["max_quantity"])
    if quantity > most:
        raise BadRequest(f"Invalid quantity {quantity_text(quantity)}: more than the {most} {record['unit']} this "
                         "hold reserved.", param="quantity", code="quantity_above_hold")
    price = ResourcePrice(record["resource"], record["unit"], Decimal(record["usd_per_unit"]))
    cost = resource_cost_nano(price, quantity)
    won, closed = await fb.ledger.close_hold(project, hold_id, f"settled|{quantity_text(quantity)}|{cost}|{now:.3f}")
    if closed is None:
        raise NotFound(f"No usage hold '{hold_id}' in project '{project}'.", param="id", code="hold_not_found")
    if not won:
        return await _settled_again(fb, hold_id, closed, quantity)
    model = COMPUTE_PREFIX + price.name
    who = _attribution(closed)
    await fb.record(usage_event(hold_id, now, who, model, cost, 200))
    fb.metrics.request(ENDPOINT, 200, model, who.project)
    fb.metrics.usage(model, who.project, Usage(0, 0), cost, estimated=False)
    return _view(hold_id, closed)


async def _settled_again(fb: Services, hold_id: str, record: dict[str, str], quantity: Decimal) -> dict[str, Any]:
    """A settle of a hold already closed: the same answer for the same quantity (else 409), and
    its record sent again while the ledger still remembers the first (``idempotency_window_s``):
    counted once if it landed, recorded now if its process died before writing it."""
    answer = _closed_answer(hold_id, record, "settled", quantity)
    _, cost, ts = record["closed"].split("|")[1:]
    if fb.ledger.clock() - float(ts) < fb.settings.idempotency_window_s - RESEND_MARGIN_S:
        model = COMPUTE_PREFIX + record["resource"]
        await fb.record(usage_event(hold_id, float(ts), _attribution(record), model, int(cost), 200))
    return answer


async def release_hold(fb: Services, headers: Mapping[str, str], hold_id: str) -> dict[str, Any]:
    """Release a hold unused; the answer's body."""
    project, record = await _record(fb, headers, hold_id)
    if "closed" not in record:
        _, closed = await fb.ledger.close_hold(project, hold_id, f"released|{fb.ledger.clock():.3f}")
        if closed is None:
            raise NotFound(f"No usage hold '{hold_id}' in project '{project}'.", param="id", code="hold_not_found")
        record = closed
    answer = _closed_answer(hold_id, record, "released")
    # Again when released before: releasing a hold that is gone changes nothing, and one whose
    # release was lost (Redis down just then) goes now rather than at its expiry.
    await fb.release(hold_id, _attribution(record))
    return answer
