"""Reserving: a request's worst case held on every budget that applies, or on none
(``reserve.lua``), and what the reply says about the tightest hard budget.

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

from proxy.domain import Attribution, BudgetView, ReserveOutcome, public_id
from proxy.ledger.errors import redis_errors
from proxy.ledger.keys import Keys
from proxy.ledger.periods import PERIODS, bucket_ids, period_bounds
from proxy.ledger.pipe import RedisPipe, pack_args, pack_strs
from proxy.ledger.scripts import Scripts, budget_candidates, reserve_argv, reserve_keys
from proxy.ledger.settle import Settles

__all__ = ["Reserver", "ReservePlan"]

_MAX_PLANS = 4096               # cached plans (per attribution and hour); then start afresh


@dataclass(frozen=True, slots=True)
class ReservePlan:
    """The budgets a reservation of one attribution may touch in one hour, and their keys."""

    candidates: tuple[tuple[str, str], ...]
    keys: tuple[str, ...]
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
            plan = ReservePlan(candidates=candidates, keys=tuple(keys),
                               packed_keys=pack_strs(("EVALSHA", self.scripts.reserve.sha, str(len(keys)), *keys)))
            if len(self.plans) >= _MAX_PLANS:
                self.plans.clear()
            self.plans[(a, buckets)] = plan
        return plan

    async def in_redis(self, request_id: str, a: Attribution, amount_nano: int, deadline_s: float,
                       lease: tuple[str, int, float, int] | None = None) -> tuple[ReserveOutcome, int, bool]:
        """reserve.lua; with ``lease`` (id, amount, deadline in clock seconds, room it needs) the
        lease is held instead when every hard budget has that room. Also says how (ok 2: the
        lease, 1: the request's own hold, 0: refused) and whether any budget applied."""
        now = self.clock()
        buckets = bucket_ids(now)
        plan = self.plan(a, buckets)
        args = reserve_argv(request_id, amount_nano, int(now * 1000), deadline_s, lease)
        op_key = None if lease is None else self.keys.op(a.project, lease[0])
        with redis_errors():
            # Settles queued before this reservation reach Redis first, so it sees their
            # released holds and recorded spend.
            await self.settles.batcher.settled()
            if self.pipe is not None:
                reply = await self._on_pipe(plan, args, op_key)
            else:
                reply = await self.scripts.reserve(plan.keys if op_key is None else (*plan.keys, op_key), args)
        ok, reclaimed = int(reply[0]), int(reply[1])
        if ok == 1:
            if len(reply) > 2:  # held on some budget: renewed until settled or released
                self.own[request_id] = a
        elif ok == 0:  # refused: a hold this id may still have lapses at its deadline
            self.own.pop(request_id, None)
        candidates = plan.candidates
        tightest: BudgetView | None = None
        room: int | None = None
        for i in range(2, len(reply), 6):
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
        outcome = ReserveOutcome(ok=ok != 0, tightest=tightest, room_nano=None if room is None else max(0, room),
                                 reclaimed=reclaimed)
        return outcome, ok, len(reply) > 2

    async def _on_pipe(self, plan: ReservePlan, args: tuple[str, ...], op_key: str | None) -> list[Any]:
        """reserve.lua on the pipe: the plan's keys packed once (and a lease's operation key)."""
        pipe = self.pipe
        assert pipe is not None
        if op_key is None:
            command = b"".join((b"*%d\r\n" % (3 + len(plan.keys) + len(args)), plan.packed_keys, pack_args(args)))
        else:
            command = b"*%d\r\n" % (4 + len(plan.keys) + len(args)) + pack_strs(
                ("EVALSHA", self.scripts.reserve.sha, str(len(plan.keys) + 1), *plan.keys, op_key, *args))
        (reply,) = await pipe.execute_packed(command)
        if isinstance(reply, NoScriptError):
            # The server lost its scripts (restart, SCRIPT FLUSH): the Script object reloads.
            return await self.scripts.reserve(plan.keys if op_key is None else (*plan.keys, op_key), args)
        if isinstance(reply, Exception):
            raise reply
        return reply
