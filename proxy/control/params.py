"""What the admin API and the CLI read from people: instants, query parameters, and the one way
a ``ValueError`` of the ledger becomes a 400 that says what to fix."""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Mapping

from proxy.errors import BadRequest

__all__ = ["parse_at", "check_params", "invalid"]


def invalid(exc: ValueError, param: str | None = None) -> BadRequest:
    """The 400 for a value the ledger refused, with its own message."""
    return BadRequest(str(exc), param=param, code="invalid_value")


def parse_at(value: str | None, *, param: str = "at") -> datetime:
    """A UTC instant from ``YYYY-MM-DD``, ``YYYY-MM-DDTHH[:MM[:SS]]`` (Z or offset), or now."""
    if value is None or value == "":
        return datetime.now(timezone.utc)
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid {param} '{value}': use a date such as 2026-11-22 or a time such as "
                         "2026-11-22T13:00:00Z.", param=param, code="invalid_date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def check_params(query: Mapping[str, str], allowed: tuple[str, ...], required: tuple[str, ...] = ("scope", "id")) -> None:
    """400 for a missing required or an unknown query parameter (a typo must not be ignored)."""
    for name in query:
        if name not in allowed:
            raise BadRequest(f"Unknown query parameter '{name}': use {', '.join(allowed)}.", param=name,
                             code="invalid_value")
    for name in required:
        if not query.get(name):
            raise BadRequest(f"Query parameter '{name}' is required ({', '.join(required)}), e.g. "
                             "?scope=project&id=acme.", param=name, code="invalid_value")
