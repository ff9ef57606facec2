"""Reserving: a request counted on its rate limits and its worst case held on every budget
that applies, or neither (``reserve.lua``), and what the reply says about the tightest hard
budget or the rate limit that refused it.

The settles this process queued before a reservation are written first (``settle.py``), so it
sees their released holds and recorded spend. On the pipe, a reservation whose connection was
lost is sent again: a request's own hold is replaced, and a lease grant that did run returns
what it returned then (its operation key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from redis.exceptions import NoScriptError

from proxy.domain import (RATE_WINDOW_S, Attribution, BudgetView, RateAsk, RateHold, RateRefusal, ReserveOutcome,
                          public_id)
from proxy.ledger.errors import redis_errors
from proxy.ledger.keys import Keys
from proxy.ledger.periods import PERIODS, bucket_ids, period_bounds
from proxy.ledger.pipe import RedisPipe, pack_args, pack_strs
from proxy.ledger.scripts import Scripts, budget_candidates, rate_keys, reserve_argv, reserve_keys, reserve_spend
from proxy.ledger.settle import Settles

__all__ = ["Reserver", "ReservePlan"]

_MAX_PLANS = 4096               # cached plans (per attribution and hour); then start afresh


@dataclass(frozen=True, slots=True)
class ReservePlan:
    """The budgets a reservation of one attribution may touch in one hour, and their keys."""

    candidates: tuple[tuple[str, str], ...]
    keys: tuple[str, ...]
    spend: tuple[str, ...]                  # the tail of reserve.lua's ARGV: where each budget's spend is
    packed_keys: bytes                      # EVALSHA, reserve.lua's sha, the number of keys, the keys


class Reserver:
    """reserve.lua for one ledger, on the pipe or on redis-py."""

    def __init__(self, scripts: Scripts, keys: Keys, pipe: RedisPipe | None, settles: Settles,
                 clock: Callable[[], float], own: dict[str, Attribution]) -> None:
        self.scripts, self.keys, self.pipe, self.settles, self.clock = scripts, keys, pipe, settles, clock
        self.own = own                      # request ids held under their own id (renewed while in flight)
        self.plans: dict[tuple[Attribution, tuple[str, ...]], ReservePlan] = {}

    def plan(self, a: Attribution, buckets: tuple[str, ...]) -> ReservePlan:
        """The budgets that may apply to ``a`` and reserve.lua's keys for them in this hour."""
        plan = self.plans.get((a, buckets))
        if plan is None:
            candidates = budget_candidates(a)
            keys = reserve_keys(self.keys, a.project, candidates, buckets)
            plan = ReservePlan(candidates=candidates, keys=tuple(keys), spend=reserve_spend(candidates, buckets),
                               packed_keys=pack_strs(("EVALSHA", self.scripts.reserve.sha, str(len(keys)), *keys)))
            if len(self.plans) >= _MAX_PLANS:
                self.plans.clear()
            self.plans[(a, buckets)] = plan
        return plan

    async def in_redis(self, request_id: str, a: Attribution, amount_nano: int, deadline_s: float,
                       lease: tuple[str, int, float, int, int, int] | None = None, rate: RateAsk | None = None,
                       *, renewed: bool = True) -> tuple[ReserveOutcome, int, bool]:
        """reserve.lua; with ``lease`` (id, amount, deadline in clock seconds, room it needs,
        requests it counts on the rate limits, requests of room it needs there) the lease is
        held instead when every hard budget and rate limit has that room. ``rate``: the rate
        limits the request counts on. Also says how (ok 2: the lease, 1: the request's own hold,
        0: refused by a budget, -1: by a rate limit) and whether any budget applied. ``renewed``:
        False holds the request's own hold until ``deadline_s`` exactly (a usage hold), not renewed
        by this process while it lives."""
        now = self.clock()
        buckets = bucket_ids(now)
        plan = self.plan(a, buckets)
        now_ms = int(now * 1000)
        args = reserve_argv(request_id, amount_nano, now_ms, deadline_s, lease, rate, plan.spend)
        window = now_ms // (RATE_WINDOW_S * 1000)
        counters = () if rate is None else tuple(rate_keys(self.keys, a.project, rate.limits, window))
        op_key = None if lease is None else self.keys.op(a.project, lease[0])
        keys = plan.keys if not counters and op_key is None else (
            *plan.keys, *counters, *(() if op_key is None else (op_key,)))
        with redis_errors():
            # Settles queued before this reservation reach Redis first, so it sees their
            # released holds and recorded spend.
            await self.settles.batcher.settled()
            if self.pipe is not None:
                reply = await self._on_pipe(plan, keys, args)
            else:
                reply = await self.scripts.reserve(keys, args)
        ok, reclaimed, n_counters = int(reply[0]), int(reply[1]), int(reply[2])
        first = 3 + 2 * n_counters
        if ok <= 0:  # refused: a hold this id may still have lapses at its deadline
            self.own.pop(request_id, None)
            if ok < 0:
                assert rate is not None
                refusal = _refusal(rate, reply[3:first], window, now)
                return ReserveOutcome(ok=False, tightest=None, room_nano=None, reclaimed=0,
                                      rate_refused=refusal), ok, False
        elif ok == 1 and len(reply) > first and renewed:  # held on some budget: renewed until settled or released
            self.own[request_id] = a
        candidates = plan.candidates
        tightest: BudgetView | None = None
        room: int | None = None
        for i in range(first, len(reply), 6):
            index, hard, period_index, limit, spent, held = (int(x) for x in reply[i:i + 6])
            if not hard:
                continue
            budget_room = limit - spent - held
            if room is not None and budget_room >= room:
                continue
            room = budget_room
            scope, local = candidates[index]
            period = PERIODS[period_index - 1]
            tightest = BudgetView(scope=scope, id=public_id(scope, a.project, local), period=period,
                                  limit_nano=limit, spent_nano=spent,
                                  reserved_nano=held + amount_nano if ok else held,
                                  resets_at=period_bounds(period, datetime.fromtimestamp(now, tz=timezone.utc))[1])
        hold = None if rate is None or not ok else RateHold(limits=rate.limits, window=window, tokens=rate.tokens)
        outcome = ReserveOutcome(ok=ok != 0, tightest=tightest, room_nano=None if room is None else max(0, room),
                                 reclaimed=reclaimed, rate_hold=hold)
        return outcome, ok, len(reply) > first

    async def _on_pipe(self, plan: ReservePlan, keys: tuple[str, ...], args: tuple[str, ...]) -> list[Any]:
        """reserve.lua on the pipe: the plan's keys packed once, unless the call has more
        (rate counters, a lease's operation key)."""
        pipe = self.pipe
        assert pipe is not None
        if keys is plan.keys:
            command = b"".join((b"*%d\r\n" % (3 + len(keys) + len(args)), plan.packed_keys, pack_args(args)))
        else:
            command = b"*%d\r\n" % (3 + len(keys) + len(args)) + pack_strs(
                ("EVALSHA", self.scripts.reserve.sha, str(len(keys)), *keys, *args))
        (reply,) = await pipe.execute_packed(command)
        if isinstance(reply, NoScriptError):
            # The server lost its scripts (restart, SCRIPT FLUSH): the Script object reloads.
            return await self.scripts.reserve(keys, args)
        if isinstance(reply, Exception):
            raise reply
        return reply


def _refusal(rate: RateAsk, counted: list[Any], window: int, now: float) -> RateRefusal:
    """The first of ``rate``'s limits without room for one more request and its tokens, from
    reserve.lua's counts of the minute (requests and tokens per limit)."""
    resets_at = float((window + 1) * RATE_WINDOW_S)
    fallback = None
    for i, limit in enumerate(rate.limits):
        requests, tokens = int(counted[2 * i]), int(counted[2 * i + 1])
        kind = ("requests" if limit.rpm is not None and requests + 1 > limit.rpm else
                "tokens" if limit.tpm is not None and tokens + rate.tokens > limit.tpm else None)
        refusal = RateRefusal(limit=limit, kind=kind or "requests", used_requests=requests, used_tokens=tokens,
                              asked_tokens=rate.tokens, resets_at=resets_at, at=now)
        if kind is not None:
            return refusal
        fallback = fallback or refusal
    assert fallback is not None
    return fallback
