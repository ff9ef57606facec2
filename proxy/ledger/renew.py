"""Renewing holds: a live process keeps what it holds, a dead one's holds lapse soon.

A reservation (a request's own hold, or a budget lease's) is held in Redis until a deadline,
``hold_ttl_s`` after it was made; past it, the next reservation on that budget reclaims it.
Every ``hold_ttl_s / 3`` each process moves the deadlines of the holds it still has in flight
to ``hold_ttl_s`` from then (``renew.lua``): its requests held under their own id (tracked at
reserve, forgotten at settle or release: ``Leases.own``) and its leases that still lend or
that lent to a request still in flight. So a request longer than ``hold_ttl_s`` (a long
stream) keeps its hold, and the holds of a process that died (SIGKILL, a lost host) stop
counting at most ``hold_ttl_s`` (plus a lease's life) after its last renewal.

One script call per project per round. A renewal only moves a deadline later and only for a
hold that still exists, so sending it twice changes nothing. A round that fails is logged (at
most once a minute) and the next round tries again; the holds keep their deadlines meanwhile
(a round or two may fail without any hold lapsing).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from redis.exceptions import NoScriptError

from proxy.domain import Attribution
from proxy.errors import LedgerUnavailable
from proxy.ledger.errors import redis_errors
from proxy.ledger.keys import Keys
from proxy.ledger.leases import LEASE_LIFE_S, Lease, Leases
from proxy.ledger.pipe import RedisPipe, pack_command
from proxy.ledger.scripts import Scripts, renew_call
from proxy.ratelimited import RateLimitedLog

__all__ = ["Renewer", "DEFAULT_HOLD_TTL_S"]

log = logging.getLogger("farebox.ledger")

DEFAULT_HOLD_TTL_S = 30.0
_WARN_EVERY_S = 60.0            # a failing renewal is logged at most this often


class Renewer:
    """The renewals of one ledger's holds."""

    def __init__(self, leases: Leases, scripts: Scripts, keys: Keys, pipe: RedisPipe | None,
                 clock: Callable[[], float], hold_ttl_s: float) -> None:
        self.leases, self.scripts, self.keys, self.pipe, self.clock = leases, scripts, keys, pipe, clock
        self.hold_ttl_s = hold_ttl_s
        self.failures = 0                   # rounds in which some renewal failed
        self._warnings = RateLimitedLog(log, interval_s=_WARN_EVERY_S, clock=clock,
                                        held_note=" (%d failed rounds not logged since)")

    def holds(self) -> dict[str, list[tuple[str, Attribution]]]:
        """The holds this process has in flight, by project: (hold id, attribution)."""
        by_project: dict[str, list[tuple[str, Attribution]]] = {}
        for request_id, a in self.leases.own.items():
            by_project.setdefault(a.project, []).append((request_id, a))
        for lease in self._leases():
            a = lease.attribution
            by_project.setdefault(a.project, []).append((lease.hold_id, a))
        return by_project

    def _leases(self) -> list[Lease]:
        """Open leases and those that lent to a request still in flight, each once."""
        seen: dict[str, Lease] = {lease.hold_id: lease for lease in self.leases.open.values()}
        for lease, _ in self.leases.drawn.values():
            seen.setdefault(lease.hold_id, lease)
        return [lease for lease in seen.values() if lease.has_budgets]

    async def renew(self) -> int:
        """One round: every hold in flight gets the deadline ``hold_ttl_s`` from now. Returns
        how many deadlines moved. A project whose renewal failed is logged and left to the
        next round."""
        now = self.clock()
        # A lease's hold is granted with a lease's life on top; renewed ones keep it, so that
        # a request drawing from a renewed lease never outlasts the lease's hold.
        deadline = now + self.hold_ttl_s + LEASE_LIFE_S
        leases = {lease.hold_id: lease for lease in self._leases()}
        by_project = list(self.holds().values())
        # Every project's call at once (on the pipe, in one write).
        replies = await asyncio.gather(*(self._send(*renew_call(self.keys, holds, deadline)) for holds in by_project),
                                       return_exceptions=True)
        moved = 0
        failed: list[BaseException] = []
        for holds, reply in zip(by_project, replies):
            if isinstance(reply, BaseException):  # logged; the next round tries again
                failed.append(reply)
                continue
            moved += int(reply)
            for hold_id, _ in holds:
                lease = leases.get(hold_id)
                if lease is not None and lease.deadline < deadline:
                    lease.deadline = deadline
        if failed:
            self._warn(failed)
            unexpected = [exc for exc in failed if not isinstance(exc, LedgerUnavailable)]
            if unexpected:
                raise unexpected[0]
        return moved

    async def _send(self, keys: list[str], args: list[str]) -> Any:
        """renew.lua on the pipe, or on redis-py."""
        with redis_errors():
            if self.pipe is not None:
                (reply,) = await self.pipe.execute_packed(
                    pack_command(("EVALSHA", self.scripts.renew.sha, str(len(keys)), *keys, *args)))
                if not isinstance(reply, NoScriptError):
                    if isinstance(reply, Exception):
                        raise reply
                    return reply
            return await self.scripts.renew(keys, args)

    def _warn(self, failed: list[BaseException]) -> None:
        self.failures += 1
        self._warnings.warning("renewing held reservations failed for %d project(s), trying again in %.3g s "
                               "(each lapses %.3g s after its last renewal): %s",
                               len(failed), self.hold_ttl_s / 3, self.hold_ttl_s, failed[0])

    async def forever(self) -> None:
        """A round every ``hold_ttl_s / 3`` until cancelled."""
        while True:
            await asyncio.sleep(self.hold_ttl_s / 3)
            try:
                await self.renew()
            except Exception:  # noqa: BLE001 - the renewer must outlive any one round
                log.exception("renewing held reservations failed")
