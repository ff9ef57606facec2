"""Control-plane operations shared by the admin API and the CLI.

Each function validates its input, calls the ledger, and raises ``BadRequest`` with a
message that says what to fix; the API renders that as 400, the CLI prints it.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from pricing.money import usd_to_nano
from proxy.control.mail import check_address
from proxy.control.params import invalid
from proxy.domain import DEFAULT_THRESHOLDS, check_thresholds
from proxy.errors import BadRequest
from proxy.ledger import recipients
from proxy.ledger.ledger import Ledger

__all__ = ["parse_alert_emails", "parse_limit", "set_budget", "get_budget", "delete_budget", "list_budgets"]


def parse_limit(value: Any) -> int:
    """A budget limit in USD (string or number) as nano-dollars; 400 for junk or negatives."""
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        raise BadRequest("'limit_usd' is required: a decimal amount of USD such as \"50\" or \"12.50\".",
                         param="limit_usd", code="invalid_value")
    text = repr(value) if isinstance(value, float) else str(value).strip()
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise BadRequest(f"Invalid limit_usd {value!r}: use a decimal amount of USD such as \"50\" or \"12.50\".",
                         param="limit_usd", code="invalid_value") from None
    if not amount.is_finite() or amount < 0:
        raise BadRequest(f"Invalid limit_usd {value!r}: a limit must be a finite amount of at least 0.",
                         param="limit_usd", code="invalid_value")
    try:
        return usd_to_nano(amount)
    except ValueError as exc:
        raise BadRequest(f"Invalid limit_usd {value!r}: {exc}", param="limit_usd", code="invalid_value") from None


MAX_ALERT_EMAILS = 20


def parse_alert_emails(value: Any) -> tuple[str, ...]:
    """A budget's ``alert_emails``: a list of up to 20 addresses (repeats dropped); 400 otherwise."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRequest('Invalid alert_emails: a list of e-mail addresses such as ["ops@example.com"].',
                         param="alert_emails", code="invalid_value")
    if len(value) > MAX_ALERT_EMAILS:
        raise BadRequest(f"Invalid alert_emails: at most {MAX_ALERT_EMAILS} addresses, not {len(value)}.",
                         param="alert_emails", code="invalid_value")
    for address in value:
        if not check_address(address):
            shown = repr(address) if isinstance(address, str) else json.dumps(address)
            raise BadRequest(f"Invalid alert_emails: {shown} is not an e-mail address such as ops@example.com.",
                             param="alert_emails", code="invalid_value")
    return tuple(dict.fromkeys(value))


def _thresholds(value: Any) -> tuple[float, ...]:
    if value is None:
        return DEFAULT_THRESHOLDS
    if not isinstance(value, list) or not value:
        raise BadRequest("Invalid alert_thresholds: a list of fractions of the limit such as [0.5, 0.8, 0.9, 1.0].",
                         param="alert_thresholds", code="invalid_value")
    try:
        return check_thresholds(value)
    except ValueError as exc:
        raise invalid(exc, "alert_thresholds") from None


async def set_budget(ledger: Ledger, scope: str, scope_id: str, body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - {"limit_usd", "period", "mode", "alert_thresholds", "alert_emails"}
    if unknown:
        raise BadRequest(f"Unknown budget field(s): {', '.join(sorted(unknown))}; allowed: limit_usd, period, mode, "
                         "alert_thresholds, alert_emails.", code="invalid_value")
    limit = parse_limit(body.get("limit_usd"))
    period = body.get("period", "month")
    mode = body.get("mode", "hard")
    if not isinstance(period, str):
        raise BadRequest("Invalid period: one of hour, day, week, month, total.", param="period", code="invalid_value")
    if not isinstance(mode, str):
        raise BadRequest("Invalid mode: hard or soft.", param="mode", code="invalid_value")
    emails = parse_alert_emails(body.get("alert_emails"))
    try:
        status = await ledger.set_budget(scope, scope_id, limit, period, mode, _thresholds(body.get("alert_thresholds")),
                                         alert_emails=emails)
    except ValueError as exc:
        raise invalid(exc) from None
    return _shown(status, list(emails))


async def get_budget(ledger: Ledger, scope: str, scope_id: str) -> dict[str, Any] | None:
    try:
        status = await ledger.get_budget(scope, scope_id)
    except ValueError as exc:
        raise invalid(exc) from None
    return None if status is None else (await _with_emails(ledger, [status]))[0]


async def _with_emails(ledger: Ledger, statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Budget views with their ``alert_emails`` (after ``alert_thresholds``)."""
    emails = await recipients.alert_emails_of(ledger, [(s["scope"], s["id"]) for s in statuses])
    return [_shown(status, addresses) for status, addresses in zip(statuses, emails)]


def _shown(status: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for name, value in status.items():
        view[name] = value
        if name == "alert_thresholds":
            view["alert_emails"] = addresses
    view.setdefault("alert_emails", addresses)
    return view


async def delete_budget(ledger: Ledger, scope: str, scope_id: str) -> bool:
    try:
        return await ledger.delete_budget(scope, scope_id)
    except ValueError as exc:
        raise invalid(exc) from None


async def list_budgets(ledger: Ledger, scope: str | None, project: str | None = None) -> list[dict[str, Any]]:
    """Every budget, or those of one scope and/or one project."""
    try:
        statuses = await ledger.list_budgets(scope or None, project=project or None)
    except ValueError as exc:
        raise invalid(exc, "project" if "project id" in str(exc) else "scope") from None
    return await _with_emails(ledger, statuses)
