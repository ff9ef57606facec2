"""Budgets: their config in Redis (create, replace, read, list, delete).

A budget's ``spent`` is the cost of the usage aggregate of its scope, id, period and
current bucket (``scripts.spend_fields``), so what the reports show and what budgets enforce are the same numbers; its
``reserved`` is every live hold on it (requests' and budget leases', ``budget_status.lua``).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from decimal import ROUND_CEILING, Decimal
from typing import Any, Awaitable, Callable, Sequence

import redis.asyncio as aioredis

from pricing.money import nano_to_usd
from proxy.domain import (BUDGET_SCOPES, DEFAULT_THRESHOLDS, MODES, BudgetState, check_id, check_thresholds,
                          public_id, split_scope_id)
from proxy.ledger.errors import redis_errors, text
from proxy.ledger.keys import Keys
from proxy.ledger.periods import bucket_ids, check_period, period_bounds
from proxy.ledger.scripts import MAX_LUA_NANO, Scripts, budget_keys, spend_fields, status_argv

__all__ = ["Budgets", "alert_at"]


def alert_at(limit_nano: int, thresholds: tuple[float, ...]) -> str:
    """The config field settle.lua reads: ``threshold=amount`` pairs, each amount the smallest
    whole nano-USD at or above threshold × limit, worked out in decimal (0.8 × $50 is exactly
    $40, not a float's 40.000000000000004)."""
    return " ".join(
        f"{t!r}={int((Decimal(repr(t)) * limit_nano).to_integral_value(rounding=ROUND_CEILING))}"
        for t in thresholds)


class Budgets:
    """Budget CRUD on one Redis. ``flushed`` waits for what this process queued to be written,
    so a read sees it; ``changing(project)`` runs before a budget of ``project`` is written
    (the ledger closes its leases there, so the new limit applies to its next request)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, scripts: Scripts, clock: Callable[[], float],
                 flushed: Callable[[], Awaitable[None]], changing: Callable[[str], Awaitable[None]]) -> None:
        self.redis, self.keys, self.scripts, self.clock = redis, keys, scripts, clock
        self.flushed, self.changing = flushed, changing

    async def set(self, scope: str, scope_id: str, limit_nano: int, period: str, mode: str = "hard",
                  thresholds: tuple[float, ...] | list[float] = DEFAULT_THRESHOLDS,
                  alert_emails: Sequence[str] = ()) -> dict[str, Any]:
        """Create or replace a budget; returns its status (as ``get``). ``alert_emails`` (checked
        by the caller) are kept beside the config for ``proxy.ledger.recipients``."""
        project, local = split_scope_id(scope, scope_id, scopes=BUDGET_SCOPES)
        if isinstance(limit_nano, bool) or not isinstance(limit_nano, int):
            raise ValueError(f"budget limit must be an integer amount of nano-USD, not {limit_nano!r}")
        if limit_nano < 0:
            raise ValueError(f"budget limit must not be negative, got {limit_nano}")
        if limit_nano > MAX_LUA_NANO:
            raise ValueError(f"budget limit too large: at most {nano_to_usd(MAX_LUA_NANO)} USD")
        check_period(period)
        if mode not in MODES:
            raise ValueError(f"unknown budget mode {mode!r}: use hard (refuse with 402) or soft (alerts only)")
        levels = check_thresholds(thresholds)
        k = self.keys
        config = k.budget(project, scope, local)
        await self.changing(project)
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(config, mapping={"limit": str(limit_nano), "period": period, "mode": mode,
                                       "thresholds": json.dumps(list(levels)),
                                       "alert_at": alert_at(limit_nano, levels)})
            if alert_emails:
                pipe.hset(config, "alert_emails", json.dumps(list(alert_emails)))
            else:
                pipe.hdel(config, "alert_emails")
            pipe.hsetnx(config, "created_at", f"{self.clock():.3f}")
            pipe.sadd(k.budget_index(project), f"{scope}:{local}")
            pipe.sadd(k.projects(), project)
            await pipe.execute()
        state = await self.state(scope, scope_id)
        assert state is not None
        return state.to_dict()

    async def state(self, scope: str, scope_id: str) -> BudgetState | None:
        """A budget's config and standing in nano-USD, or None when it does not exist."""
        await self.flushed()  # what this process recorded so far is part of the answer
        project, local = split_scope_id(scope, scope_id, scopes=BUDGET_SCOPES)
        now = self.clock()
        with redis_errors():
            buckets = bucket_ids(now)
            reply = await self.scripts.status(budget_keys(self.keys, project, scope, local, buckets),
                                              status_argv(now, spend_fields(scope, buckets)))
        if reply is None:
            return None
        limit, period, mode, thresholds, created_at, spent, held = (text(x) if isinstance(x, bytes) else x
                                                                   for x in reply)
        start, end = period_bounds(period, datetime.fromtimestamp(now, tz=timezone.utc))
        return BudgetState(
            scope=scope, id=public_id(scope, project, local), limit_nano=int(limit), period=period, mode=mode,
            thresholds=tuple(json.loads(thresholds)) if thresholds else DEFAULT_THRESHOLDS,
            spent_nano=int(spent), reserved_nano=int(held), created_at=float(created_at) if created_at else None,
            period_start=start, resets_at=end,
        )

    async def get(self, scope: str, scope_id: str) -> dict[str, Any] | None:
        """The budget's status dict (USD strings, ISO times), or None when it does not exist."""
        state = await self.state(scope, scope_id)
        return None if state is None else state.to_dict()

    async def list_all(self, scope: str | None = None, *, project: str | None = None) -> list[dict[str, Any]]:
        """Status of every budget, optionally of one scope and/or one project, sorted by scope and id."""
        if scope is not None and scope not in BUDGET_SCOPES:
            raise ValueError(f"unknown scope {scope!r}: use one of {', '.join(BUDGET_SCOPES)}")
        k = self.keys
        with redis_errors():
            if project is not None:
                projects = [check_id(project, "project")]
            else:
                projects = sorted(text(p) for p in await self.redis.smembers(k.projects()))
            wanted: list[tuple[str, str]] = []
            for p in projects:
                for member in await self.redis.smembers(k.budget_index(p)):
                    s, _, local = text(member).partition(":")
                    if scope is None or s == scope:
                        wanted.append((s, public_id(s, p, local)))
        states = await asyncio.gather(*(self.state(s, i) for s, i in wanted))
        order = {s: n for n, s in enumerate(BUDGET_SCOPES)}
        found = [st for st in states if st is not None]
        found.sort(key=lambda st: (order[st.scope], st.id))
        return [st.to_dict() for st in found]

    async def delete(self, scope: str, scope_id: str) -> bool:
        """Remove a budget and its holds (its recorded spend stays); False when there was none."""
        project, local = split_scope_id(scope, scope_id, scopes=BUDGET_SCOPES)
        k = self.keys
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(k.budget(project, scope, local))
            pipe.delete(k.reservations(project, scope, local), k.reservation_amounts(project, scope, local),
                        k.alerted(project, scope, local))
            pipe.srem(k.budget_index(project), f"{scope}:{local}")
            existed, _, _ = await pipe.execute()
        return bool(existed)
