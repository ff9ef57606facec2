"""Budget leases: one reservation in Redis that the requests of one attribution draw from.

Under load, a reservation per request is most of what metering costs (a script call in Redis
and a round trip per request). So when a request of an attribution (project, agent, session,
key) is reserved while another of the same attribution is still in flight in this process, or
less than ``LEASE_LIFE_S`` after the last one was reserved here, ``reserve.lua`` is asked to
hold a *lease* instead: ``lease_requests`` times the request's worst case, under a lease id,
on every budget that applies, checked like any other reservation. The requests that follow draw their worst case from it here, without Redis, as
long as it has room, for at most ``LEASE_LIFE_S``.

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
  room back since it was sent, tries again. ``Ledger.settled`` (and so every budget read
  through this process) closes every lease.
- A reservation sent ahead of queued settles (``reserve.lua``) counts the parts that drawn
  requests will release of their lease, as it counts the holds of the others.
- Its hold in Redis lasts the lease's life plus a request's reservation deadline, so a process
  that dies leaves nothing held for more than ``LEASE_LIFE_S`` longer than a request of its
  own would.

A drawn request sees the budget as a reservation of its own would have: the lease's view at
grant, plus the costs of the requests it lent to that settled since, plus what it has lent and
not got back.

What it changes: a budget's ``reserved`` includes the part of an open lease not yet lent (for
at most ``LEASE_LIFE_S``), and a budget created or lowered while a lease is open applies to the
requests that lease lends to from its end on (at most ``LEASE_LIFE_S`` later).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from proxy.domain import Attribution, BudgetView

__all__ = ["Lease", "Leases", "LEASE_LIFE_S", "LEASE_ROOM_FACTOR"]

LEASE_LIFE_S = 0.25             # a lease lends for at most this long
LEASE_ROOM_FACTOR = 4           # a lease is granted only while it is at most 1/4 of every hard budget's room
_PRUNE_AT = 4096                # attributions remembered before the quiet ones are forgotten


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
    has_budgets: bool                   # False: no budget applied, the lease holds nothing in Redis
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

    __slots__ = ("requests", "open", "drawn", "in_flight", "holders", "asking", "granted", "last", "_prune_at")

    def __init__(self, requests: int) -> None:
        self.requests = requests                                # 0: leases are off
        self.granted = 0                                        # leases granted so far
        self.open: dict[Attribution, Lease] = {}
        self.drawn: dict[str, tuple[Lease, int]] = {}           # request id -> its lease and amount
        self.in_flight: dict[Attribution, int] = {}
        self.holders: dict[str, Attribution] = {}               # request ids reserved and not yet settled
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
             asked: bool = False) -> bool:
        """Lend ``amount`` to ``request_id`` from ``a``'s open lease; False when it cannot (the
        lease, if any, then stops lending: the caller closes it). ``asked``: the request asked
        for this lease, and draws from it however long the answer took."""
        lease = self.open.get(a)
        if lease is None:
            return False
        if amount > lease.free or (not asked and (now >= lease.ends or now + deadline_s > lease.deadline)):
            return False
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
