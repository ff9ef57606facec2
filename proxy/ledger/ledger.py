"""The ledger: usage records, budgets and reservations in Redis, behind one facade.

Each step is a module of its own:

- ``scripts.py``: the Lua scripts (``lua/``) and every KEYS / ARGV layout, for both transports.
- ``reserve.py``: a request's worst case held on every budget that applies (``reserve.lua``).
- ``leases.py``: budget leases, one hold that the requests of an attribution draw from.
- ``settle.py``: finished requests recorded once, in batches (``settle.lua``, ``batch.py``).
- ``renew.py``: the deadlines of the holds still in flight, renewed (``renew.lua``).
- ``budgets.py``: budget config. ``reports.py`` and ``events.py``: reading usage back.
- ``errors.py``: Redis errors as ``LedgerUnavailable``. ``pipe.py``: the request path's connection.

Money is integer nano-USD throughout; USD strings appear only in the dicts meant for people
and APIs. Stream events carry every ``UsageEvent`` field as a string; booleans are
``"1"``/``"0"``, absent session / key id / clamp are ``""`` (``UsageEvent.from_fields``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import redis.asyncio as aioredis

from proxy.domain import (DEFAULT_THRESHOLDS, Attribution, BudgetState, RateAsk, ReserveOutcome, SettleOutcome,
                          UsageEvent)
from proxy.ledger.apikeys import KeyStore
from proxy.ledger.budgets import Budgets
from proxy.errors import LedgerUnavailable
from proxy.ledger.errors import redis_errors
from proxy.ledger.holds import HoldStore
from proxy.ledger.idempotency import DEFAULT_WINDOW_S, slot_length
from proxy.ledger.keys import DEFAULT_PREFIX, Keys
from proxy.ledger.leases import Leases, Leasing
from proxy.ledger.migrate import migrate_sessions
from proxy.ledger.pipe import RedisPipe
from proxy.ledger.renew import DEFAULT_HOLD_TTL_S, Renewer
from proxy.ledger.reserve import Reserver
from proxy.ledger.scripts import MAX_LUA_NANO, Scripts, hold_keys, release_argv, settle_fixed
from proxy.ledger.settle import Settles, Ttls, check_attribution, check_request_id

__all__ = ["Ledger", "Ttls", "DEFAULT_HOLD_TTL_S"]

DEFAULT_STREAM_MAXLEN = 50_000      # approximate; 0 keeps every event (about 15 MB a project, docs/scaling.md)
DEFAULT_RANKING_SIZE = 100          # sessions kept per ranking (a report lists at most 100)
LAYOUT_MOVING = ("Redis holds keys of an earlier farebox not yet moved to this version's layout; "
                 "they are moved as soon as Redis answers")


class Ledger:
    """Usage, budgets and reservations of every project, in one Redis."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX, ttls: Ttls = Ttls(),
                 stream_maxlen: int = DEFAULT_STREAM_MAXLEN, idempotency_window_s: int = DEFAULT_WINDOW_S,
                 ranking_size: int = DEFAULT_RANKING_SIZE,
                 clock: Callable[[], float] = time.time, pipe: RedisPipe | None = None,
                 lease_requests: int = 0, hold_ttl_s: float = DEFAULT_HOLD_TTL_S) -> None:
        """``pipe``, when given, carries the two scripts every request runs (reserve, settle)
        to the same Redis as ``redis``; everything else goes through ``redis``.
        ``lease_requests``: the size of a budget lease in worst cases of the request that asks
        for it (``leases.py``); 0 reserves every request on its own. ``hold_ttl_s``: the deadline
        ``renew_holds`` gives the holds still in flight (``renew.py``).
        ``idempotency_window_s``: how long a settled request id is remembered after the last
        settle of its time slot (``idempotency.py``). ``ranking_size``: sessions kept in each
        ranking of sessions by cost (0 = every session)."""
        if type(stream_maxlen) is not int or stream_maxlen < 0:
            raise ValueError(f"stream_maxlen must be an int >= 0 (0 = unbounded), not {stream_maxlen!r}")
        if type(lease_requests) is not int or lease_requests < 0:
            raise ValueError(f"lease_requests must be an int >= 0 (0 = no leases), not {lease_requests!r}")
        if not hold_ttl_s > 0:
            raise ValueError(f"hold_ttl_s must be positive, not {hold_ttl_s!r}")
        if type(idempotency_window_s) is not int or idempotency_window_s <= 0:
            raise ValueError(f"idempotency_window_s must be a positive int, not {idempotency_window_s!r}")
        if type(ranking_size) is not int or ranking_size < 0:
            raise ValueError(f"ranking_size must be an int >= 0 (0 = unbounded), not {ranking_size!r}")
        self.redis = redis
        self.idempotency_window_s = idempotency_window_s
        self.keys = keys = Keys(prefix)
        self.clock = clock
        self.scripts = scripts = Scripts(redis, pipe)
        self._leases = Leases(lease_requests)
        self._settles = Settles(redis, scripts, keys, pipe, self._leases,
                                settle_fixed(idempotency_window_s, ttls.args(), stream_maxlen, int(ttls.session_arg()),
                                             ranking_size), slot_length(idempotency_window_s), ttls)
        self._reserver = Reserver(scripts, keys, pipe, self._settles, clock, self._leases.own)
        self._renewer = Renewer(self._leases, scripts, keys, pipe, clock, hold_ttl_s)
        self._leasing = Leasing(self._leases, self._reserver.in_redis, redis=redis, scripts=scripts, keys=keys,
                                pipe=pipe, clock=clock)
        self._budgets = Budgets(redis, keys, scripts, clock, self.settled, self._leasing.give_back_all)
        self._apikeys = KeyStore(redis, prefix)
        self._holds = HoldStore(redis, keys)
        # The request path's step, bound here: no call of the facade's own per request.
        self.queue_settle = self._settles.queue
        # False while what an earlier key layout left may still be in Redis (a start that found
        # Redis away moves it once Redis answers): budgets would read too little, so reserve
        # and hold answer as if Redis were away until ``migrate`` has run.
        self.layout_ready = True

    # -- the request path -------------------------------------------------------------------

    async def reserve(self, request_id: str, attribution: Attribution, amount_nano: int, *,
                      deadline_s: float, rate: RateAsk | None = None) -> ReserveOutcome:
        """Hold ``amount_nano`` on every budget that applies to ``attribution``, or on none.

        Refused when any hard budget has less room (limit - spent - held) than the amount.
        Holds past their deadline are reclaimed first. Reserving again under the same request
        id replaces its hold. The hold lasts ``deadline_s`` seconds unless settled or released,
        and, while it is in flight, ``renew_holds`` moves its deadline on.
        With leases on, the amount may be lent from a lease held in Redis instead (``leases.py``).

        With ``rate``, the request is first counted on those rate limits in the current minute
        (one request, ``rate.tokens`` tokens), in the same step: when one has no room, nothing is
        held or counted and the outcome's ``rate_refused`` says which; when granted, its
        ``rate_hold`` is what the settle corrects to the tokens used (``queue_settle(event, rate)``).
        """
        a = attribution
        check_attribution(a)
        check_request_id(request_id)
        if type(amount_nano) is not int or not 0 <= amount_nano <= MAX_LUA_NANO:
            raise ValueError(f"amount_nano must be an int between 0 and {MAX_LUA_NANO}, not {amount_nano!r}")
        if not deadline_s > 0:
            raise ValueError(f"deadline_s must be positive, not {deadline_s!r}")
        if not self.layout_ready:
            raise LedgerUnavailable(LAYOUT_MOVING)
        if not self._leases.requests:
            outcome, _, _ = await self._reserver.in_redis(request_id, a, amount_nano, deadline_s, None, rate)
            return outcome
        return await self._leasing.reserve(request_id, a, amount_nano, deadline_s, rate)

    async def hold(self, hold_id: str, attribution: Attribution, amount_nano: int, *, deadline_s: float,
                   rate: RateAsk | None = None) -> ReserveOutcome:
        """Hold ``amount_nano`` on every budget that applies to ``attribution`` under ``hold_id``,
        or on none (as ``reserve``), for exactly ``deadline_s`` seconds: always in Redis on its
        own (never lent from a budget lease) and never renewed, so it lapses at its deadline
        unless settled (``queue_settle`` of an event with ``hold_id`` as its request id) or
        released first, whichever process does it."""
        check_attribution(attribution)
        check_request_id(hold_id)
        if type(amount_nano) is not int or not 0 <= amount_nano <= MAX_LUA_NANO:
            raise ValueError(f"amount_nano must be an int between 0 and {MAX_LUA_NANO}, not {amount_nano!r}")
        if not deadline_s > 0:
            raise ValueError(f"deadline_s must be positive, not {deadline_s!r}")
        if not self.layout_ready:
            raise LedgerUnavailable(LAYOUT_MOVING)
        outcome, _, _ = await self._reserver.in_redis(hold_id, attribution, amount_nano, deadline_s, None, rate,
                                                      renewed=False)
        return outcome

    async def add_hold(self, project: str, hold_id: str, fields: dict[str, str], expires_at_ms: int) -> None:
        """Store a usage hold's record (``holds.py``), kept a day past its expiry."""
        await self._holds.add(project, hold_id, fields, expires_at_ms)

    async def hold_record(self, project: str, hold_id: str) -> dict[str, str] | None:
        """A usage hold's record, or None when ``project`` has no such hold."""
        return await self._holds.get(project, hold_id)

    async def close_hold(self, project: str, hold_id: str, closed: str) -> tuple[bool, dict[str, str] | None]:
        """Close a usage hold once: whether this call closed it, and its record after."""
        return await self._holds.close(project, hold_id, closed)

    async def settle(self, event: UsageEvent) -> SettleOutcome:
        """Record a finished request once (``queue_settle``), written at the end of this loop
        turn with the other settles of the turn, not after the queue's delay: the caller is
        waiting for it. Settling the same event again (its request id and time, as a resend or a
        spooled copy carries them) within the idempotency window changes nothing
        (``recorded=False``; ``idempotency.py``)."""
        written = self.queue_settle(event)
        self._settles.batcher.soon()
        return await written

    async def release(self, request_id: str, attribution: Attribution) -> int:
        """Drop a request's hold without charging anything; returns the nano-USD released."""
        check_attribution(attribution)
        check_request_id(request_id)
        self._leases.own.pop(request_id, None)
        drawn = self._leases.ended(request_id) if self._leases.requests else None
        if drawn is not None:
            return await self._leasing.release(request_id, drawn)
        with redis_errors():
            return int(await self.scripts.release(hold_keys(self.keys, attribution), release_argv(request_id)))

    async def settled(self) -> None:
        """Wait until every settle queued so far is written (or failed), and every lease that
        closed has given back what it did not lend: what this process recorded is then what a
        read sees. Open leases stay open (a read sees their whole hold as reserved)."""
        await self._settles.batcher.settled()
        await self._leasing.given_back()

    async def renew_holds(self) -> int:
        """Give every hold this process still has in flight (its requests' own, its leases')
        the deadline ``hold_ttl_s`` from now; returns how many deadlines moved. A project whose
        renewal failed is logged (``renew.py``)."""
        return await self._renewer.renew()

    async def renew_forever(self) -> None:
        """``renew_holds`` every ``hold_ttl_s / 3``, until cancelled (a task of the server's)."""
        await self._renewer.forever()

    async def close_leases(self) -> None:
        """Close every open lease and wait until each gave back what it did not lend (shutdown)."""
        await self._leasing.give_back_all()

    @property
    def leases_granted(self) -> int:
        """Budget leases this ledger was granted so far."""
        return self._leases.granted

    async def migrate(self) -> int:
        """Rewrite what an earlier key layout left in Redis, once (``migrate.py``); run before
        serving. Returns the hashes moved (0 once done)."""
        moved = await migrate_sessions(self.redis, self.keys, self.scripts.migrate)
        self.layout_ready = True
        return moved

    async def ping(self) -> bool:
        """True when Redis answers; ``LedgerUnavailable`` when it does not."""
        with redis_errors():
            return bool(await self.redis.ping())

    # -- budgets (budgets.py) -----------------------------------------------------------------

    async def set_budget(self, scope: str, scope_id: str, limit_nano: int, period: str, mode: str = "hard",
                         thresholds: tuple[float, ...] | list[float] = DEFAULT_THRESHOLDS,
                         alert_emails: Sequence[str] = ()) -> dict[str, Any]:
        """Create or replace a budget; returns its status (as ``get_budget``)."""
        return await self._budgets.set(scope, scope_id, limit_nano, period, mode, thresholds, alert_emails)

    async def budget_state(self, scope: str, scope_id: str) -> BudgetState | None:
        """A budget's config and standing in nano-USD, or None when it does not exist."""
        return await self._budgets.state(scope, scope_id)

    async def get_budget(self, scope: str, scope_id: str) -> dict[str, Any] | None:
        """The budget's status dict (USD strings, ISO times), or None when it does not exist."""
        return await self._budgets.get(scope, scope_id)

    async def list_budgets(self, scope: str | None = None, *, project: str | None = None) -> list[dict[str, Any]]:
        """Status of every budget, optionally of one scope and/or one project, sorted by scope and id."""
        return await self._budgets.list_all(scope, project=project)

    async def delete_budget(self, scope: str, scope_id: str) -> bool:
        """Remove a budget and its holds (its recorded spend stays); False when there was none."""
        return await self._budgets.delete(scope, scope_id)

    # -- farebox keys (apikeys.py) ----------------------------------------------------------

    async def add_key(self, key_id: str, fields: dict[str, str], project: str) -> None:
        """Store a new farebox key's record (its secret's hash, never the secret)."""
        await self._apikeys.add(key_id, fields, project)

    async def key_record(self, key_id: str) -> dict[str, str] | None:
        """A farebox key's record, or None when there is none."""
        return await self._apikeys.get(key_id)

    async def project_keys(self, project: str) -> list[dict[str, str]]:
        """The records of ``project``'s farebox keys, in id order (each with its ``id``)."""
        return await self._apikeys.of_project(project)

    async def change_key(self, key_id: str, fields: dict[str, str]) -> dict[str, str] | None:
        """Change a key's record and move the keys' change counter; None when there is no such key."""
        return await self._apikeys.change(key_id, fields)

    async def keys_version(self) -> int:
        """The keys' change counter, which moves whenever a key is revoked or rotated."""
        return await self._apikeys.version()

    async def project_limits(self, project: str) -> tuple[int | None, int | None]:
        """``project``'s rate limits: requests and tokens per minute (None: no such limit)."""
        return await self._apikeys.limits(project)

    async def set_project_limits(self, project: str, rpm: int | None, tpm: int | None) -> None:
        """Set ``project``'s rate limits (None removes one); every process applies them within
        a second (they watch the keys' change counter, which this moves)."""
        await self._apikeys.set_limits(project, rpm, tpm)
