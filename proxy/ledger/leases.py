"""Budget leases: one reservation in Redis that the requests of one attribution draw from.

Under load, a reservation per request is most of what metering costs (a script call in Redis
and a round trip per request). So when a request of an attribution (project, agent, session,
key) is reserved while another of the same attribution is still in flight in this process, or
less than ``LEASE_LIFE_S`` after the last one was reserved here, ``reserve.lua`` is asked to
hold a *lease* instead: ``lease_requests`` times the request's worst case, under a lease id,
on every budget that applies, checked like any other reservation. The requests that follow
draw their worst case from it here, without Redis, as long as it has room, for at most
``LEASE_LIFE_S``.

What keeps it exact:

- The lease is held in Redis like a reservation: every process and every later reservation
  counts it as held, so the spend it lets through never exceeds what a hard budget allowed
  when it was granted. A lease is granted only while it is at most a quarter of the room left
  on every hard budget (``LEASE_ROOM_FACTOR``); closer to a limit every request is reserved on
  its own, as without leases.
- A request settles (or is released) against the lease: ``settle.lua`` adds its cost to the
  spend and takes its drawn worst case off the lease's hold, exactly as it would take off the
  request's own hold.
- A lease stops lending when it cannot cover the next request or after ``LEASE_LIFE_S``; what
  it did not lend is given back to Redis at once (``release.lua`` with a part). A reservation
  refused in Redis closes this process's open leases of the project and, if any lease gave
  room back since it was sent, tries again. A budget written through this process closes its
  leases of that project; shutdown (``Ledger.close_leases``) closes every lease; reads do not
  (they see a lease's whole hold as reserved).
- Every write of a lease to Redis may be sent twice (a lost connection) and counts once: a
  grant and a give-back carry an operation key that remembers their reply (``scripts.py``),
  a drawn request's settle its done-marker.
- Its hold in Redis lasts the lease's life plus a request's hold deadline, and its process
  renews it while it is open or any request it lent to is in flight (``renew.py``), so a
  process that dies leaves nothing held for more than ``LEASE_LIFE_S`` longer than a request
  of its own would.

A drawn request sees the budget as a reservation of its own would have: the lease's view at
grant, plus the costs of the requests it lent to that settled since, plus what it has lent and
not got back.

What it changes: a budget's ``reserved`` includes the part of an open lease not yet lent (for
at most ``LEASE_LIFE_S``), and a budget created or lowered while a lease is open applies to the
requests that lease lends to from its end on (at most ``LEASE_LIFE_S`` later).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from redis.exceptions import NoScriptError, RedisError

from proxy.domain import RATE_WINDOW_S, Attribution, BudgetView, RateAsk, RateHold, ReserveOutcome
from proxy.ledger.errors import redis_errors
from proxy.ledger.keys import Keys
from proxy.ledger.pipe import RedisPipe, pack_command
from proxy.ledger.scripts import MAX_LUA_NANO, Scripts, hold_keys, rate_keys, release_argv

__all__ = ["Lease", "Leases", "Leasing", "LEASE_LIFE_S", "LEASE_ROOM_FACTOR"]

log = logging.getLogger("farebox.ledger")

LEASE_LIFE_S = 0.25             # a lease lends for at most this long
LEASE_ROOM_FACTOR = 4           # a lease is granted only while it is at most 1/4 of every hard budget's room
_PRUNE_AT = 4096                # attributions remembered before the quiet ones are forgotten
_LEASE_WAITS = 16               # leases a reservation may wait for (each lends to many) before going alone
_REFUSAL_RETRIES = 3            # times a refused reservation tries again after leases gave back room
_OP_MARGIN_S = 60               # an operation key outlives the hold it touched by this much


@dataclass(slots=True, eq=False)
class Lease:
    """An open (or closing) lease. ``free``: held in Redis and not lent yet."""

    hold_id: str
    attribution: Attribution
    free: int
    ends: float                         # clock seconds: nothing is lent after this
    deadline: float                     # clock seconds: the hold's deadline in Redis
    tightest: BudgetView | None         # the tightest hard budget when granted, the lease not counted
    room: int | None                    # its room then, the lease not counted
    has_budgets: bool                   # False: no budget applied, the lease holds no money in Redis
    rate: RateHold | None = None        # the rate limits the lease counted its requests on, their minute
    free_requests: int = 0              # of those: requests and tokens counted and not lent yet
    free_tokens: int = 0
    lent: int = 0
    settled_parts: int = 0              # of what was lent: the parts of requests settled since
    settled_cost: int = 0               # what those requests cost
    open: bool = True
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


def new_lease_id() -> str:
    return "lease:" + os.urandom(12).hex()


class Leases:
    """The leases of one process and the requests it has in flight, by attribution (local
    state only: ``Ledger`` talks to Redis)."""

    __slots__ = ("requests", "open", "drawn", "in_flight", "holders", "own", "asking", "granted", "last",
                 "_prune_at")

    def __init__(self, requests: int) -> None:
        self.requests = requests                                # 0: leases are off
        self.granted = 0                                        # leases granted so far
        self.open: dict[Attribution, Lease] = {}
        self.drawn: dict[str, tuple[Lease, int]] = {}           # request id -> its lease and amount
        self.in_flight: dict[Attribution, int] = {}
        self.holders: dict[str, Attribution] = {}               # request ids reserved and not yet settled
        # Request ids held in Redis under their own id, until settled or released (with or
        # without leases): the holds this process renews besides its leases' (``renew.py``).
        self.own: dict[str, Attribution] = {}
        self.asking: dict[Attribution, asyncio.Future[bool]] = {}  # a lease being asked for: granted?
        self.last: dict[Attribution, float] = {}                # when a request of it last began here
        self._prune_at = _PRUNE_AT

    def wanted(self, request_id: str, a: Attribution, amount: int, now: float) -> bool:
        """Whether a reservation of ``a`` should ask for a lease: another of its requests is in
        flight here or began less than a lease's life ago, and nobody is asking already."""
        return (self.requests > 0 and amount > 0
                and (self.in_flight.get(a, 0) > 0 or now - self.last.get(a, -LEASE_LIFE_S) < LEASE_LIFE_S)
                and request_id not in self.holders and a not in self.asking)

    def began(self, request_id: str, a: Attribution, now: float) -> None:
        """A reservation of ``request_id`` was granted (held on its own or drawn)."""
        if self.requests and request_id not in self.holders:
            self.holders[request_id] = a
            self.in_flight[a] = self.in_flight.get(a, 0) + 1
            last = self.last
            last[a] = now
            if len(last) >= self._prune_at:  # forget attributions quiet for longer than a lease's life
                for quiet in [b for b, t in last.items() if now - t >= LEASE_LIFE_S]:
                    del last[quiet]
                self._prune_at = max(_PRUNE_AT, 2 * len(last))

    def ended(self, request_id: str, *, settled_cost: int | None = None) -> tuple[Lease, int] | None:
        """``request_id`` was settled at ``settled_cost`` (None: released): its lease and drawn
        amount, if it drew."""
        a = self.holders.pop(request_id, None)
        if a is not None:
            left = self.in_flight[a] - 1
            if left:
                self.in_flight[a] = left
            else:
                del self.in_flight[a]
        drawn = self.drawn.pop(request_id, None)
        if drawn is not None and settled_cost is not None:
            drawn[0].settled_parts += drawn[1]
            drawn[0].settled_cost += settled_cost
        return drawn

    def draw(self, request_id: str, a: Attribution, amount: int, now: float, deadline_s: float, *,
             asked: bool = False, rate: RateAsk | None = None) -> bool:
        """Lend ``amount`` (and, with ``rate``, a request and its tokens on those rate limits) to
        ``request_id`` from ``a``'s open lease; False when it cannot (the lease, if any, then
        stops lending: the caller closes it). ``asked``: the request asked for this lease, and
        draws from it however long the answer took."""
        lease = self.open.get(a)
        if lease is None:
            return False
        if amount > lease.free or (not asked and (now >= lease.ends or now + deadline_s > lease.deadline)):
            return False
        held = lease.rate
        if rate is not None or held is not None:
            # A lease lends on rate limits only to requests counted on those same limits.
            if (rate is None or held is None or rate.limits != held.limits or lease.free_requests < 1
                    or rate.tokens > lease.free_tokens):
                return False
            lease.free_requests -= 1
            lease.free_tokens -= rate.tokens
        lease.free -= amount
        lease.lent += amount
        self.drawn[request_id] = (lease, amount)
        self.began(request_id, a, now)
        return True

    def undraw(self, request_id: str) -> None:
        """Forget ``request_id``'s draw, if any, giving it back to its lease if that is still open."""
        drawn = self.drawn.pop(request_id, None)
        if drawn is not None and drawn[0].open:
            self.give_back(*drawn)

    @staticmethod
    def give_back(lease: Lease, amount: int) -> None:
        """``amount`` lent by the open ``lease`` comes back to it unspent."""
        lease.free += amount
        lease.lent -= amount

    def close(self, lease: Lease) -> int:
        """Stop ``lease`` lending; returns what it had not lent (to give back in Redis)."""
        if not lease.open:
            return 0
        lease.open = False
        if self.open.get(lease.attribution) is lease:
            del self.open[lease.attribution]
        if lease.timer is not None:
            lease.timer.cancel()
            lease.timer = None
        free, lease.free = lease.free, 0
        return free

    @staticmethod
    def unlent_rate(lease: Lease) -> tuple[int, int]:
        """The requests and tokens a closed ``lease`` counted on its rate limits and did not lend."""
        out = (lease.free_requests, lease.free_tokens)
        lease.free_requests = lease.free_tokens = 0
        return out


# reserve.lua through ``reserve.py``: (request id, attribution, amount, deadline_s, lease, rate)
# -> (outcome, ok code 2|1|0|-1, whether any budget applied). ``lease``: (id, amount, deadline,
# room, requests counted on rate limits, requests of room needed there).
InRedis = Callable[[str, Attribution, int, float, "tuple[str, int, float, int, int, int] | None", "RateAsk | None"],
                   Awaitable[tuple[ReserveOutcome, int, bool]]]


class Leasing:
    """The lease operations of one ledger: reserving through leases, drawing, and giving back
    in Redis what a closed lease did not lend."""

    def __init__(self, leases: Leases, in_redis: InRedis, *, redis: Any, scripts: Scripts, keys: Keys,
                 pipe: RedisPipe | None, clock: Callable[[], float]) -> None:
        self.leases = leases
        self.in_redis = in_redis
        self.redis, self.scripts, self.keys, self.pipe, self.clock = redis, scripts, keys, pipe, clock
        self.giving_back: set[asyncio.Future[Any]] = set()
        self.gave_back = 0  # how many times a lease gave back what it had not lent

    async def reserve(self, request_id: str, a: Attribution, amount_nano: int, deadline_s: float,
                      rate: RateAsk | None = None) -> ReserveOutcome:
        leases = self.leases
        gave_back = self.gave_back
        leases.undraw(request_id)  # reserved again under the same id: the new reservation replaces the draw
        for _ in range(_LEASE_WAITS):
            outcome = self.draw(request_id, a, amount_nano, deadline_s, rate=rate)
            if outcome is not None:
                return outcome
            asking = leases.asking.get(a)
            if asking is None:
                break
            # Another request is asking for a lease: draw from it if it is granted (and not all
            # lent by the time this one runs, then it may ask for the next); else go on alone.
            if not await asyncio.shield(asking):
                break
        if leases.wanted(request_id, a, amount_nano, self.clock()):
            asking = leases.asking[a] = asyncio.get_running_loop().create_future()
            leased = False
            try:
                now = self.clock()
                lease_amount = min(amount_nano * leases.requests, MAX_LUA_NANO)
                lease = (new_lease_id(), lease_amount, now + deadline_s + LEASE_LIFE_S,
                         min(lease_amount * LEASE_ROOM_FACTOR, MAX_LUA_NANO), leases.requests,
                         leases.requests * LEASE_ROOM_FACTOR)
                outcome, ok, has_budgets = await self.in_redis(request_id, a, amount_nano, deadline_s, lease, rate)
                if ok == 2:
                    self._open(lease, a, now, outcome, amount_nano, has_budgets=has_budgets, rate=rate)
                    leased = True
            finally:
                del leases.asking[a]
                asking.set_result(leased)
            if leased:
                drawn = self.draw(request_id, a, amount_nano, deadline_s, granted=True, rate=rate)
                assert drawn is not None
                return drawn
        else:
            outcome, _, _ = await self.in_redis(request_id, a, amount_nano, deadline_s, None, rate)
        for _ in range(_REFUSAL_RETRIES):
            if outcome.ok:
                break
            # What this process's leases held but had not lent may be what was missing: if they
            # gave anything back since this reservation was sent (this request closing them now,
            # or another, or their end), try again.
            await self.give_back_all(a.project)
            if self.gave_back == gave_back:
                break
            gave_back = self.gave_back
            outcome, _, _ = await self.in_redis(request_id, a, amount_nano, deadline_s, None, rate)
        if outcome.ok:
            leases.began(request_id, a, self.clock())
        return outcome

    def _open(self, lease_ask: tuple[str, int, float, int, int, int], a: Attribution, now: float,
              granted: ReserveOutcome, asked: int, *, has_budgets: bool, rate: RateAsk | None) -> None:
        """The lease asked for was granted when a request of ``asked`` nano-USD asked for it."""
        leases = self.leases
        old = leases.open.get(a)
        if old is not None:
            self.close(old)
        view = granted.tightest
        if view is not None:  # the budget as it was without the lease (and the request that asked)
            view = view.with_reserved(view.reserved_nano - asked)
        ends = now + LEASE_LIFE_S
        lease = Lease(hold_id=lease_ask[0], attribution=a, free=lease_ask[1], ends=ends,
                      deadline=lease_ask[2], tightest=view, room=granted.room_nano, has_budgets=has_budgets)
        hold = granted.rate_hold
        if rate is not None and hold is not None:
            # Counted in this minute: it lends nothing after the minute ends.
            lease.rate, lease.free_requests, lease.free_tokens = hold, lease_ask[4], lease_ask[4] * rate.tokens
            lease.ends = ends = min(ends, (hold.window + 1) * RATE_WINDOW_S)
        leases.open[a] = lease
        leases.granted += 1
        lease.timer = asyncio.get_running_loop().call_later(max(0.0, ends - now), self.close, lease)

    def draw(self, request_id: str, a: Attribution, amount_nano: int, deadline_s: float, *,
             granted: bool = False, rate: RateAsk | None = None) -> ReserveOutcome | None:
        """Lend ``amount_nano`` (and a request on ``rate``'s limits) from ``a``'s open lease;
        None when there is none or it cannot (it is closed then). ``granted``: the lease was
        just granted for this request."""
        leases = self.leases
        lease = leases.open.get(a)
        if lease is None:
            return None
        # However long the reply took, the request that asked for the lease draws from it.
        if not leases.draw(request_id, a, amount_nano, self.clock(), deadline_s, asked=granted, rate=rate):
            self.close(lease)
            return None
        # As a reservation of its own would see the budget: what the lease lent to requests
        # settled since counts at their cost, what it lent to the others (this one included) as
        # held, and the rest of the lease not at all.
        held = lease.lent - lease.settled_parts
        view = lease.tightest
        if view is not None:
            view = view.with_usage(view.spent_nano + lease.settled_cost, view.reserved_nano + held)
        room = lease.room
        if room is not None:
            room = max(0, room - lease.settled_cost - (held - amount_nano))
        hold = lease.rate
        if hold is not None and rate is not None:
            hold = RateHold(limits=hold.limits, window=hold.window, tokens=rate.tokens)
        return ReserveOutcome(ok=True, tightest=view, room_nano=room, reclaimed=0, rate_hold=hold)

    def close(self, lease: Lease) -> None:
        free = self.leases.close(lease)
        unlent = self.leases.unlent_rate(lease)
        if (free and lease.has_budgets) or unlent[0]:
            self.gave_back += 1
            self._give_back(lease, free if lease.has_budgets else 0, unlent)

    def _release_call(self, lease: Lease, part: int, op_id: str,
                      unlent: tuple[int, int] = (0, 0)) -> tuple[list[str], list[str]]:
        """release.lua's KEYS and ARGV for ``part`` of ``lease``'s hold (and the requests and
        tokens ``unlent`` on its rate limits), once per ``op_id``."""
        a = lease.attribution
        ttl = max(0, math.ceil(lease.deadline - self.clock())) + _OP_MARGIN_S
        keys = [*hold_keys(self.keys, a), self.keys.op(a.project, f"{lease.hold_id}:{op_id}")]
        rate = lease.rate
        if rate is None or not unlent[0]:
            return keys, release_argv(lease.hold_id, part, ttl)
        keys += rate_keys(self.keys, a.project, rate.limits, rate.window)
        return keys, release_argv(lease.hold_id, part, ttl, (len(rate.limits), *unlent))

    def _give_back(self, lease: Lease, free: int, unlent: tuple[int, int] = (0, 0)) -> None:
        """Release ``free`` of ``lease``'s hold in Redis (and what it did not lend on its rate
        limits), ahead of anything sent after this call on the pipe. A failure only leaves it
        held until the lease's deadline (counted until its minute ends)."""
        keys, args = self._release_call(lease, free, "back", unlent)
        sent = None
        if self.pipe is not None:
            sent = self.pipe.send_now([pack_command(("EVALSHA", self.scripts.release.sha, str(len(keys)),
                                                     *keys, *args))])
        task = asyncio.ensure_future(self._given_back(sent, keys, args))
        self.giving_back.add(task)
        task.add_done_callback(self.giving_back.discard)

    async def _given_back(self, sent: Awaitable[list[Any]] | None, keys: list[str], args: list[str]) -> None:
        try:
            if sent is not None:
                (reply,) = await sent
                if not isinstance(reply, NoScriptError):
                    if isinstance(reply, Exception):
                        raise reply
                    return
            await self.scripts.release(keys, args)
        except (RedisError, OSError) as exc:
            log.warning("a budget lease could not give back what it did not lend (held until its deadline): %s",
                        exc)

    async def give_back_all(self, project: str | None = None) -> None:
        """Close this process's open leases (of ``project``, or all) and wait for every
        give-back under way."""
        for lease in [lease for lease in self.leases.open.values()
                      if project is None or lease.attribution.project == project]:
            self.close(lease)
        await self.given_back()

    async def given_back(self) -> None:
        """Wait for the give-backs under way."""
        if self.giving_back:
            await asyncio.gather(*self.giving_back, return_exceptions=True)

    async def release(self, request_id: str, drawn: tuple[Lease, int]) -> int:
        """A drawn request ends unsettled: its part goes back to its lease if that still lends,
        else it is released from the lease's hold in Redis (once, however often it is sent)."""
        lease, amount = drawn
        if lease.open:  # back to the lease, which still holds it
            self.leases.give_back(lease, amount)
            return amount
        if not lease.has_budgets:
            return 0
        keys, args = self._release_call(lease, amount, request_id)
        with redis_errors():
            return int(await self.scripts.release(keys, args))
