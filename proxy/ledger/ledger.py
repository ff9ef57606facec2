"""The ledger: usage records, budgets and reservations in Redis.

Every step that must be atomic is one Lua script in ``lua/`` (registered with redis-py, which
reloads a script the server forgot):

- ``reserve``: hold a request's worst-case cost on every budget that applies, or on none.
- ``settle``: once per request id, release its hold, add its usage to every aggregate, append
  the event to the project's stream, and claim the budget alert thresholds it crossed.
- ``release``: drop a hold without charging (the upstream failed).
- ``budget_status``: a budget's config, spend and live holds.

A budget's ``spent`` is the ``cost`` field of the usage aggregate of its scope, id, period and
current bucket, so what the reports show and what budgets enforce are the same numbers.
Money is integer nano-USD throughout; USD strings appear only in the dicts meant for people
and APIs. Redis errors become ``LedgerUnavailable`` here and nowhere else.

Stream events carry every ``UsageEvent`` field as a string; booleans are ``"1"``/``"0"``,
absent session / key id / clamp are ``""`` (``UsageEvent.from_fields`` reads them back).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from decimal import ROUND_CEILING, Decimal
from functools import cache, partial
from importlib import resources
from typing import Any, Awaitable, Callable, Iterator, Mapping

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from pricing.money import nano_to_usd
from proxy.domain import (BUDGET_SCOPES, DEFAULT_THRESHOLDS, MAX_MODEL_LENGTH, MODES, USAGE_SCOPES, Attribution,
                          BudgetState, BudgetView, Crossing, ReserveOutcome, SettleOutcome, UsageEvent,
                          attribution_fields, check_id, check_thresholds, iso_utc, public_id, split_scope_id)
from proxy.errors import LedgerUnavailable
from proxy.ledger.keys import DEFAULT_PREFIX, Keys
from proxy.ledger.periods import PERIODS, bucket_ids, check_period, period_bounds, to_utc
from proxy.ledger.batch import TurnBatcher
from proxy.ledger.leases import LEASE_LIFE_S, LEASE_ROOM_FACTOR, Lease, Leases, new_lease_id
from proxy.ledger.pipe import RedisPipe, pack_args, pack_command, pack_strs

__all__ = ["Ledger", "Ttls"]


HOUR_S = 3600
DAY_S = 24 * HOUR_S
DEFAULT_DONE_TTL_S = 7 * DAY_S      # how long a settled request id is remembered (idempotency)
DEFAULT_STREAM_MAXLEN = 1_000_000   # approximate; 0 keeps every event
# Lua numbers are doubles: amounts a script compares must stay below 2**53 (about 9 million USD).
MAX_LUA_NANO = 2**53 - 1
MAX_REQUEST_ID_LENGTH = 256


# Breakdown levels of the usage scopes in settle.lua: 2 = by model and agent, 1 = by model.
_LEVEL = {"project": 2, "agent": 1, "session": 1, "key": 1, "model": 0}
_MAX_PLANS = 4096               # cached key plans (per attribution, model and hour); then start afresh
_MAX_CHUNK = 128                # requests per settle.lua call
_MAX_CHUNK_COST = 2**50         # nano-USD per settle.lua call, so its sums stay exact doubles
# How long a queued settle may wait on the pipe for the next reservation to go ahead of it
# (``Ledger.reserve``); reads, shutdown and a full queue send it at once.
SETTLE_DELAY_S = 0.005
_LEASE_WAITS = 16               # leases a reservation may wait for (each lends to many) before going alone
_REFUSAL_RETRIES = 3            # times a refused reservation tries again after leases gave back room

log = logging.getLogger("farebox.ledger")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _count(value: object, what: str) -> str:
    """A non-negative integer as the decimal string Redis adds exactly."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} must be a non-negative int, not {value!r}")
    return str(value)


@cache
def _lua(name: str) -> str:
    return resources.files("proxy.ledger").joinpath("lua", name).read_text(encoding="utf-8")


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Redis failures (no connection, timeouts, error replies) as ``LedgerUnavailable``."""
    try:
        yield
    except RedisError as exc:
        raise LedgerUnavailable(f"Redis is unavailable: {exc}") from exc
    except OSError as exc:
        raise LedgerUnavailable(f"Redis is unavailable: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Ttls:
    """Seconds a usage aggregate of each period lives after its last write; None = forever.
    (Each process renews a key's TTL on the first write of each hour, so "last write" is
    to within an hour.)"""

    hour: int | None = 48 * HOUR_S
    day: int | None = 400 * DAY_S
    week: int | None = 400 * DAY_S
    month: int | None = 5 * 365 * DAY_S
    total: int | None = None

    def args(self) -> list[str]:
        """In PERIODS order, as settle.lua reads them (0 = no expiry)."""
        out = []
        for period in PERIODS:
            ttl = getattr(self, period)
            if ttl is not None and (type(ttl) is not int or ttl <= 0):
                raise ValueError(f"TTL for {period} must be a positive number of seconds or None, not {ttl!r}")
            out.append(str(ttl or 0))
        return out


def _alert_at(limit_nano: int, thresholds: tuple[float, ...]) -> str:
    """The config field settle.lua reads: ``threshold=amount`` pairs, each amount the smallest
    whole nano-USD at or above threshold × limit, worked out in decimal (0.8 × $50 is exactly
    $40, not a float's 40.000000000000004)."""
    return " ".join(
        f"{t!r}={int((Decimal(repr(t)) * limit_nano).to_integral_value(rounding=ROUND_CEILING))}"
        for t in thresholds)


@dataclass(slots=True, eq=False)
class _SettlePlan:
    """The part of a settle that depends only on who, which model and which hour: built once,
    and sent once per settle.lua call for all its requests there (its keys and its segment).
    ``renewed``: a settle of this plan already asked for the TTLs of its keys to be renewed."""

    project: str
    scopes: tuple[tuple[str, str], ...]     # usage scopes in settle.lua's order, the model last
    keys: tuple[str, ...]                   # every key of its requests but their done-markers
    segment: tuple[str, ...]                # L, R, S, T, model, agent, session, levels, buckets, event fields
    buckets: tuple[str, ...]                # hour .. total bucket ids
    packed_keys: bytes
    packed_segment: bytes
    renewed: bool = False


@dataclass(slots=True)
class _SettleJob:
    """One request's settle, waiting for its batch: its segment of settle.lua's arguments
    after its length and plan index (which its call sets). ``packed_*`` are set for the pipe."""

    plan: _SettlePlan
    done_key: str
    cost: int
    args: tuple[str, ...]
    packed_done: bytes = b""
    packed_args: bytes = b""

    def segment_head(self, plan_index: int) -> tuple[str, str]:
        """What settle.lua reads before ``args``: the segment's length and its plan's index."""
        return str(2 + len(self.args)), str(plan_index)


@dataclass(frozen=True, slots=True)
class _ReservePlan:
    """The budgets a reservation of one attribution may touch in one hour, and their keys."""

    candidates: tuple[tuple[str, str], ...]
    keys: tuple[str, ...]
    packed_keys: bytes                      # EVALSHA, reserve.lua's sha, the number of keys, the keys


class _Queued:
    """The settles queued and not yet sent that touch one budget scope (project, scope, id):
    the request ids of those with a hold of their own (packed, for reserve.lua to look up
    their holds), what those that drew from a lease will release of it, and their costs per
    bucket tuple (what they will add to the scope's usage when they are written)."""

    __slots__ = ("count", "packed_ids", "costs", "lease_parts")

    def __init__(self) -> None:
        self.count = 0
        self.packed_ids = b""
        self.costs: dict[tuple[str, ...], int] = {}
        self.lease_parts: dict[str, int] = {}

    def add(self, packed_id: bytes, buckets: tuple[str, ...], cost: int, drawn: tuple[Lease, int] | None) -> None:
        if drawn is None:
            self.count += 1
            self.packed_ids += packed_id
        else:
            lease_id = drawn[0].hold_id
            self.lease_parts[lease_id] = self.lease_parts.get(lease_id, 0) + drawn[1]
        self.costs[buckets] = self.costs.get(buckets, 0) + cost

    def packed(self, buckets: tuple[str, ...]) -> tuple[int, bytes]:
        """reserve.lua's segment for this scope: N, the queued cost landing in each of
        ``buckets`` (hour .. total), the N request ids, then M and M (lease id, part) pairs;
        and its number of arguments."""
        sums = [0] * len(buckets)
        for theirs, cost in self.costs.items():
            for p, bucket in enumerate(buckets):
                if theirs[p] == bucket:
                    sums[p] += cost
        parts = [x for pair in self.lease_parts.items() for x in pair]
        return (2 + len(buckets) + self.count + len(parts),
                pack_args((self.count, *sums)) + self.packed_ids + pack_args((len(self.lease_parts), *parts)))


_NOTHING_QUEUED = (7, pack_args((0, 0, 0, 0, 0, 0, 0)))


class Ledger:
    """Usage, budgets and reservations of every project, in one Redis."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX, ttls: Ttls = Ttls(),
                 stream_maxlen: int = DEFAULT_STREAM_MAXLEN, done_ttl_s: int = DEFAULT_DONE_TTL_S,
                 clock: Callable[[], float] = time.time, pipe: RedisPipe | None = None,
                 lease_requests: int = 0) -> None:
        """``pipe``, when given, carries the two scripts every request runs (reserve, settle)
        to the same Redis as ``redis``; everything else goes through ``redis``.
        ``lease_requests``: the size of a budget lease in worst cases of the request that asks
        for it (``leases.py``); 0 reserves every request on its own."""
        if type(stream_maxlen) is not int or stream_maxlen < 0:
            raise ValueError(f"stream_maxlen must be an int >= 0 (0 = unbounded), not {stream_maxlen!r}")
        if type(lease_requests) is not int or lease_requests < 0:
            raise ValueError(f"lease_requests must be an int >= 0 (0 = no leases), not {lease_requests!r}")
        if type(done_ttl_s) is not int or done_ttl_s <= 0:
            raise ValueError(f"done_ttl_s must be a positive int, not {done_ttl_s!r}")
        self.redis = redis
        self._pipe = pipe
        self.keys = Keys(prefix)
        self.ttls = ttls
        self.clock = clock
        self._ttl_args = ttls.args()
        self._stream_maxlen = str(stream_maxlen)
        self._done_ttl = str(done_ttl_s)
        self._settle = redis.register_script(_lua("settle.lua"))
        self._reserve = redis.register_script(_lua("reserve.lua"))
        self._release = redis.register_script(_lua("release.lua"))
        self._status = redis.register_script(_lua("budget_status.lua"))
        self._plans: dict[Any, Any] = {}
        if pipe is not None:
            # A settle sent behind a reservation must not fail on NOSCRIPT and be retried after it.
            pipe.load_on_connect(self._reserve.script, self._settle.script, self._release.script)
        self._settler: TurnBatcher[_SettleJob, list[Any]] = TurnBatcher(
            self._write_settles, delay_s=SETTLE_DELAY_S if pipe is not None else 0.0)
        self._queued: dict[tuple[str, str, str], _Queued] = {}  # by (project, budget scope, id)
        self._leases = Leases(lease_requests)
        self._giving_back: set[asyncio.Future[Any]] = set()
        self._gave_back = 0  # how many times a lease gave back what it had not lent

    # -- recording ------------------------------------------------------------------------

    def _hold_keys(self, a: Attribution) -> list[str]:
        """Reservation zset + amount hash of every budget that may apply to ``a``."""
        k, p = self.keys, a.project
        out = [k.reservations(p, "project", p), k.reservation_amounts(p, "project", p),
               k.reservations(p, "agent", a.agent), k.reservation_amounts(p, "agent", a.agent)]
        if a.session is not None:
            out += [k.reservations(p, "session", a.session), k.reservation_amounts(p, "session", a.session)]
        if a.key_id is not None:
            out += [k.reservations(p, "key", a.key_id), k.reservation_amounts(p, "key", a.key_id)]
        return out

    @staticmethod
    def _check_attribution(a: Attribution) -> None:
        check_id(a.project, "project")
        check_id(a.agent, "agent")
        if a.session is not None:
            check_id(a.session, "session")
        if a.key_id is not None:
            check_id(a.key_id, "key")

    @staticmethod
    def _check_request_id(request_id: object) -> str:
        if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_REQUEST_ID_LENGTH:
            raise ValueError(f"invalid request id {request_id!r}: 1-{MAX_REQUEST_ID_LENGTH} characters")
        return request_id

    def _settle_plan(self, a: Attribution, model: str, buckets: tuple[str, ...]) -> _SettlePlan:
        """What a settle of ``a``'s request on ``model`` in the hour of ``buckets`` sends besides
        the request's own values; the same for every such request, so it is built once."""
        cache_key = (a, model, buckets)
        plan = self._plans.get(cache_key)
        if plan is not None:
            return plan
        k, p = self.keys, a.project
        holds = self._hold_keys(a)
        scopes = [("project", p), ("agent", a.agent)]
        if a.session is not None:
            scopes.append(("session", a.session))
        if a.key_id is not None:
            scopes.append(("key", a.key_id))
        scopes.append(("model", model))
        keys = [k.events(p), *holds]
        for scope, scope_id in scopes:
            keys += [k.usage(p, scope, bucket, scope_id) for bucket in buckets]
        if a.session is not None:
            keys += [k.top_sessions(p, bucket) for bucket in buckets]
        for scope, scope_id in scopes[:-1]:  # budget scopes: config and alert claims
            keys += [k.budget(p, scope, scope_id), k.alerted(p, scope, scope_id)]
        segment = (str(len(holds) // 2), str(len(scopes)), "5" if a.session is not None else "0",
                   model, a.agent, a.session or "", *(str(_LEVEL[scope]) for scope, _ in scopes), *buckets,
                   *attribution_fields(a))
        segment = (str(1 + len(segment)), *segment)
        plan = _SettlePlan(project=p, scopes=tuple(scopes), keys=tuple(keys), segment=segment, buckets=buckets,
                           packed_keys=pack_args(keys), packed_segment=pack_args(segment))
        self._remember(cache_key, plan)
        return plan

    def _remember(self, cache_key: Any, plan: Any) -> None:
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[cache_key] = plan

    async def settle(self, event: UsageEvent) -> SettleOutcome:
        """Record a finished request once: release its hold, add its usage, append its event.
        Settling the same request id again changes nothing and returns ``recorded=False``.
        Written at the end of this loop turn (with the other settles of the turn), not after
        the queue's delay: the caller is waiting for it."""
        written = self.queue_settle(event)
        self._settler.soon()
        return await written

    def queue_settle(self, event: UsageEvent) -> asyncio.Future[SettleOutcome]:
        """``settle``, queued when this is called, in the running event loop: a reservation
        made after this call sees it. It is written with the other settles queued close to it,
        one settle.lua call per project for all of them (``batch.py``), each still taken as if
        alone. The future gets the outcome, or ``LedgerUnavailable``. ``ValueError`` (raised
        here) for an event that cannot be recorded.
        """
        a = event.attribution
        rid = self._check_request_id(event.request_id)
        model = event.priced_model or event.model
        buckets = bucket_ids(event.ts)
        plan = self._plans.get((a, model, buckets))
        if plan is None:  # a cached plan's attribution and model were checked when it was built
            self._check_attribution(a)
            if not isinstance(model, str) or not model or len(model) > MAX_MODEL_LENGTH:
                raise ValueError(f"invalid model name {model!r}")
            plan = self._settle_plan(a, model, buckets)
        increments = (
            "1", _count(event.prompt_tokens, "prompt_tokens"), _count(event.completion_tokens, "completion_tokens"),
            _count(event.cached_tokens, "cached_tokens"), _count(event.cache_creation_tokens, "cache_creation_tokens"),
            _count(event.reasoning_tokens, "reasoning_tokens"), _count(event.cost_nano, "cost_nano"),
            "1" if event.estimated else "0",
        )
        if event.cost_nano > MAX_LUA_NANO:
            raise ValueError(f"cost_nano must be at most {MAX_LUA_NANO}, not {event.cost_nano}")
        # The event's attribution fields are its plan's, sent once per call.
        head, tail = event.head_and_tail()
        drawn = self._leases.ended(rid, settled_cost=event.cost_nano) if self._leases.requests else None
        # A plan lives for one hour bucket, so each key's TTL is renewed about once an hour
        # rather than on every write (and set whenever a write creates the key).
        renew = "0" if plan.renewed else "1"
        own = (rid, renew, "") if drawn is None else (drawn[0].hold_id, renew, str(drawn[1]))
        plan.renewed = True
        job = _SettleJob(plan=plan, done_key=self.keys.done(a.project, rid), cost=event.cost_nano,
                         args=(*own, *increments, str(len(head)), *head, *tail))
        if self._pipe is not None:
            job.packed_done = pack_strs((job.done_key,))
            job.packed_args = pack_strs(job.args)
            packed_id, buckets = pack_strs((rid,)), plan.buckets
            for scope, scope_id in plan.scopes[:-1]:  # the budget scopes
                queued = self._queued.get((a.project, scope, scope_id))
                if queued is None:
                    queued = self._queued[(a.project, scope, scope_id)] = _Queued()
                queued.add(packed_id, buckets, event.cost_nano, drawn)
        # A callback rather than a task per request: this runs on every request.
        outcome: asyncio.Future[SettleOutcome] = asyncio.get_running_loop().create_future()
        self._settler.submit(job).add_done_callback(partial(self._settle_outcome, event, plan, outcome))
        return outcome

    def _settle_outcome(self, event: UsageEvent, plan: _SettlePlan, outcome: asyncio.Future[SettleOutcome],
                        written: asyncio.Future[list[Any]]) -> None:
        if outcome.done():  # its caller stopped waiting
            return
        if written.cancelled():
            outcome.cancel()
            return
        try:
            with _redis_errors():
                reply = written.result()
            recorded, released = bool(reply[0]), int(reply[1])
            overrun = event.cost_nano - released if recorded and released and event.cost_nano > released else 0
            alerts = self._crossings(event, list(plan.scopes), reply[3:]) if len(reply) > 3 else ()
        except Exception as exc:  # noqa: BLE001 - the caller's to handle
            outcome.set_exception(exc)
            return
        outcome.set_result(SettleOutcome(recorded=recorded, reserved_nano=released, overrun_nano=overrun,
                                         alerts=alerts))

    async def settled(self) -> None:
        """Wait until every settle queued so far is written (or failed), and every lease has
        given back what it did not lend: what this process recorded is then what a read sees."""
        for lease in list(self._leases.open.values()):
            self._close_lease(lease)
        await self._settler.settled()
        if self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)

    @staticmethod
    def _crossings(event: UsageEvent, scopes: list[tuple[str, str]], raw: list[Any]) -> tuple[Crossing, ...]:
        """settle.lua's six values per crossed threshold as ``Crossing``s."""
        at = datetime.fromtimestamp(event.ts, tz=timezone.utc)
        out = []
        for i in range(0, len(raw), 6):
            index, threshold, spent, limit, period, mode = raw[i:i + 6]
            scope, local = scopes[int(index)]
            start, end = period_bounds(_text(period), at)
            out.append(Crossing(scope=scope, id=public_id(scope, event.attribution.project, local),
                                threshold=float(_text(threshold)), spent_nano=int(spent), limit_nano=int(limit),
                                period=_text(period), mode=_text(mode), period_start=start, resets_at=end))
        return tuple(out)

    def _settle_chunks(self, jobs: list[_SettleJob]) -> list[list[int]]:
        """Indexes of ``jobs`` grouped into script calls: one project each (a Redis Cluster
        slot), at most ``_MAX_CHUNK`` requests and ``_MAX_CHUNK_COST`` nano-USD (the script
        sums costs as doubles, exact below 2^53)."""
        chunks: list[list[int]] = []
        open_chunk: dict[str, tuple[list[int], int]] = {}
        for index, job in enumerate(jobs):
            project = job.plan.project
            chunk, cost = open_chunk.get(project, (None, 0))
            if chunk is None or len(chunk) >= _MAX_CHUNK or cost + job.cost > _MAX_CHUNK_COST:
                chunk, cost = [], 0
                chunks.append(chunk)
            chunk.append(index)
            open_chunk[project] = (chunk, cost + job.cost)
        return chunks

    @staticmethod
    def _plans_of(jobs: list[_SettleJob]) -> tuple[list[_SettlePlan], list[int]]:
        """The plans of one settle.lua call's ``jobs`` in first-seen order, and each job's plan
        index there (1-based, as settle.lua reads it)."""
        index: dict[_SettlePlan, int] = {}
        numbers = [index.setdefault(job.plan, len(index) + 1) for job in jobs]
        plans = list(index)
        return plans, numbers

    def _settle_call(self, jobs: list[_SettleJob]) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of one settle.lua call for ``jobs``."""
        plans, numbers = self._plans_of(jobs)
        keys: list[str] = [key for plan in plans for key in plan.keys]
        keys += [job.done_key for job in jobs]
        args = [str(len(jobs)), self._done_ttl, *self._ttl_args, self._stream_maxlen, str(len(plans))]
        for plan in plans:
            args += plan.segment
        for job, n in zip(jobs, numbers):
            args += (*job.segment_head(n), *job.args)
        return keys, args

    def _write_settles(self, jobs: list[_SettleJob]) -> Awaitable[list[list[Any] | BaseException]]:
        """Send a batch of settles (``TurnBatcher``'s writer): one settle.lua call per chunk,
        and the projects added to the set of known projects. On the pipe they are on the
        connection before this returns; the awaitable gives each job's reply."""
        chunks = self._settle_chunks(jobs)
        projects = sorted({job.plan.project for job in jobs})
        self._queued.clear()  # the batcher writes its whole queue
        if self._pipe is not None:
            packed = []
            for chunk in chunks:
                members = [jobs[i] for i in chunk]
                plans, numbers = self._plans_of(members)
                n_keys = len(members) + sum(len(plan.keys) for plan in plans)
                n_args = 9 + sum(len(plan.segment) for plan in plans) + sum(2 + len(job.args) for job in members)
                head = b"*%d\r\n" % (3 + n_keys + n_args) + pack_args(("EVALSHA", self._settle.sha, str(n_keys)))
                common = pack_args((str(len(members)), self._done_ttl, *self._ttl_args, self._stream_maxlen,
                                    str(len(plans))))
                parts = [head, *(plan.packed_keys for plan in plans), *(job.packed_done for job in members), common,
                         *(plan.packed_segment for plan in plans)]
                for job, n in zip(members, numbers):
                    parts += (pack_strs(job.segment_head(n)), job.packed_args)
                packed.append(b"".join(parts))
            packed.append(pack_command(("SADD", self.keys.projects(), *projects)))
            sent = self._pipe.send_now(packed)
            replies = sent if sent is not None else self._pipe.execute_packed(*packed)
        else:
            pipe = self.redis.pipeline(transaction=False)
            for chunk in chunks:
                keys, args = self._settle_call([jobs[i] for i in chunk])
                # By sha, so the usual case is one round trip; redis-py's own pipeline script
                # handling would first ask SCRIPT EXISTS on every call.
                pipe.evalsha(self._settle.sha, len(keys), *keys, *args)
            pipe.sadd(self.keys.projects(), *projects)
            replies = pipe.execute(raise_on_error=False)
        return self._settle_replies(jobs, chunks, replies)

    async def _settle_replies(self, jobs: list[_SettleJob], chunks: list[list[int]],
                              pending: Awaitable[list[Any]]) -> list[list[Any] | BaseException]:
        """Each job's part of its chunk's reply (or the chunk's error)."""
        replies = await pending
        results: list[list[Any] | BaseException] = [RuntimeError("not settled")] * len(jobs)
        for chunk, reply in zip(chunks, replies):
            if isinstance(reply, NoScriptError):
                # The server lost its scripts (restart, SCRIPT FLUSH): the Script object reloads.
                try:
                    reply = await self._settle(*self._settle_call([jobs[i] for i in chunk]))
                except RedisError as exc:
                    reply = exc
            if isinstance(reply, BaseException):
                for i in chunk:
                    results[i] = reply
                continue
            pos = 0
            for i in chunk:
                alerts = int(reply[pos + 2])
                results[i] = reply[pos:pos + 3 + 6 * alerts]
                pos += 3 + 6 * alerts
        if isinstance(replies[-1], BaseException):
            raise replies[-1]
        return results

    async def release(self, request_id: str, attribution: Attribution) -> int:
        """Drop a request's hold without charging anything; returns the nano-USD released."""
        self._check_attribution(attribution)
        self._check_request_id(request_id)
        drawn = self._leases.ended(request_id) if self._leases.requests else None
        if drawn is not None:
            lease, amount = drawn
            if lease.open:  # back to the lease, which still holds it
                self._leases.give_back(lease, amount)
                return amount
            if not lease.has_budgets:
                return 0
            with _redis_errors():
                return int(await self._release(self._hold_keys(attribution), [lease.hold_id, str(amount)]))
        with _redis_errors():
            return int(await self._release(self._hold_keys(attribution), [request_id]))

    async def ping(self) -> bool:
        """True when Redis answers; ``LedgerUnavailable`` when it does not."""
        with _redis_errors():
            return bool(await self.redis.ping())

    # -- reports --------------------------------------------------------------------------

    async def usage_report(self, scope: str, scope_id: str, period: str, at: datetime | None = None) -> dict[str, Any]:
        """Usage of one scope in the bucket of ``period`` containing ``at`` (default now).

        ``scope_id`` is ``acme`` for a project, ``acme/planner`` for an agent (likewise session,
        key, and model as priced). ``by_agent`` appears only in project reports.
        """
        await self.settled()  # what this process recorded so far is part of the answer
        project, local = split_scope_id(scope, scope_id, scopes=USAGE_SCOPES)
        check_period(period)
        at = to_utc(at) if at is not None else datetime.fromtimestamp(self.clock(), tz=timezone.utc)
        bucket = bucket_ids(at.timestamp())[PERIODS.index(period)]
        with _redis_errors():
            raw = await self.redis.hgetall(self.keys.usage(project, scope, bucket, local))
        values = {_text(f): int(v) for f, v in raw.items()}
        start, end = period_bounds(period, at)
        report: dict[str, Any] = {
            "scope": scope,
            "id": public_id(scope, project, local),
            "period": period,
            "period_start": iso_utc(start),
            "period_end": iso_utc(end),
            "requests": values.get("requests", 0),
            "prompt_tokens": values.get("prompt_tokens", 0),
            "completion_tokens": values.get("completion_tokens", 0),
            "total_tokens": values.get("prompt_tokens", 0) + values.get("completion_tokens", 0),
            "cached_tokens": values.get("cached_tokens", 0),
            "cache_creation_tokens": values.get("cache_creation_tokens", 0),
            "reasoning_tokens": values.get("reasoning_tokens", 0),
            "estimated_requests": values.get("estimated", 0),
            "cost_usd": nano_to_usd(values.get("cost", 0)),
            "by_model": self._breakdown(values, "m|"),
        }
        if scope == "project":
            report["by_agent"] = self._breakdown(values, "a|")
        return report

    @staticmethod
    def _breakdown(values: dict[str, int], tag: str) -> dict[str, dict[str, Any]]:
        """``m|<model>|<field>`` fields as ``{model: {requests, ..., cost_usd}}`` (models may hold ``|``)."""
        groups: dict[str, dict[str, int]] = {}
        for name, value in values.items():
            if name.startswith(tag):
                who, _, what = name[len(tag):].rpartition("|")
                groups.setdefault(who, {})[what] = value
        return {
            who: {"requests": g.get("requests", 0), "prompt_tokens": g.get("prompt_tokens", 0),
                  "completion_tokens": g.get("completion_tokens", 0), "cost_usd": nano_to_usd(g.get("cost", 0))}
            for who, g in sorted(groups.items())
        }

    # -- budgets --------------------------------------------------------------------------

    def _budget_keys(self, project: str, scope: str, local: str, buckets: tuple[str, ...]) -> list[str]:
        """Config, reservation zset, amount hash, then the usage hashes of ``buckets``."""
        k = self.keys
        return [k.budget(project, scope, local), k.reservations(project, scope, local),
                k.reservation_amounts(project, scope, local),
                *(k.usage(project, scope, bucket, local) for bucket in buckets)]

    def _reserve_plan(self, a: Attribution, buckets: tuple[str, ...]) -> _ReservePlan:
        """The budgets that may apply to ``a`` and reserve.lua's keys for them in this hour."""
        cache_key = ("reserve", a, buckets)
        plan = self._plans.get(cache_key)
        if plan is None:
            candidates = [("project", a.project), ("agent", a.agent)]
            if a.session is not None:
                candidates.append(("session", a.session))
            if a.key_id is not None:
                candidates.append(("key", a.key_id))
            keys: list[str] = []
            for scope, local in candidates:
                keys += self._budget_keys(a.project, scope, local, buckets)
            plan = _ReservePlan(candidates=tuple(candidates), keys=tuple(keys),
                                packed_keys=pack_args(("EVALSHA", self._reserve.sha, str(len(keys)), *keys)))
            self._remember(cache_key, plan)
        return plan

    async def reserve(self, request_id: str, attribution: Attribution, amount_nano: int, *,
                      deadline_s: float) -> ReserveOutcome:
        """Hold ``amount_nano`` on every budget that applies to ``attribution``, or on none.

        Refused when any hard budget has less room (limit - spent - held) than the amount.
        Holds past their deadline are reclaimed first. Reserving again under the same request
        id replaces its hold. The hold lasts ``deadline_s`` seconds unless settled or released.
        With leases on, the amount may be lent from a lease held in Redis instead (``leases.py``).
        """
        a = attribution
        self._check_attribution(a)
        self._check_request_id(request_id)
        if type(amount_nano) is not int or not 0 <= amount_nano <= MAX_LUA_NANO:
            raise ValueError(f"amount_nano must be an int between 0 and {MAX_LUA_NANO}, not {amount_nano!r}")
        if not deadline_s > 0:
            raise ValueError(f"deadline_s must be positive, not {deadline_s!r}")
        if not self._leases.requests:
            outcome, _ = await self._reserve_in_redis(request_id, a, amount_nano, deadline_s)
            return outcome
        return await self._reserve_leasing(request_id, a, amount_nano, deadline_s)

    async def _reserve_in_redis(self, request_id: str, a: Attribution, amount_nano: int, deadline_s: float,
                                lease: tuple[str, int, float, int] | None = None) -> tuple[ReserveOutcome, bool]:
        """reserve.lua; with ``lease`` (id, amount, deadline in seconds, room it needs) the lease
        is held instead when every hard budget has that room. Also says whether it was."""
        now = self.clock()
        buckets = bucket_ids(now)
        plan = self._reserve_plan(a, buckets)
        now_ms = int(now * 1000)
        args = (request_id, str(amount_nano), str(now_ms), str(now_ms + max(1, int(deadline_s * 1000))),
                *(("", "0", "0", "0") if lease is None else
                  (lease[0], str(lease[1]), str(int(lease[2] * 1000)), str(lease[3]))))
        with _redis_errors():
            if self._pipe is not None:
                reply = await self._reserve_ahead(a, plan, buckets, args)
            else:
                # Settles queued before this reservation reach Redis first, so it sees their
                # released holds and recorded spend.
                await self._settler.settled()
                reply = await self._reserve(plan.keys, args)
        ok, reclaimed = int(reply[0]), int(reply[1])
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
        if ok == 2 and lease is not None:
            self._open_lease(lease[0], a, lease[1], now, lease[2], outcome, amount_nano, has_budgets=len(reply) > 2)
        return outcome, ok == 2

    # -- leases (leases.py) -----------------------------------------------------------------

    @property
    def leases_granted(self) -> int:
        """Budget leases this ledger was granted so far."""
        return self._leases.granted

    async def _reserve_leasing(self, request_id: str, a: Attribution, amount_nano: int,
                               deadline_s: float) -> ReserveOutcome:
        leases = self._leases
        gave_back = self._gave_back
        leases.undraw(request_id)  # reserved again under the same id: the new reservation replaces the draw
        for _ in range(_LEASE_WAITS):
            outcome = self._draw(request_id, a, amount_nano, deadline_s)
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
                lease_amount = min(amount_nano * leases.requests, MAX_LUA_NANO)
                lease = (new_lease_id(), lease_amount, self.clock() + deadline_s + LEASE_LIFE_S,
                         min(lease_amount * LEASE_ROOM_FACTOR, MAX_LUA_NANO))
                outcome, leased = await self._reserve_in_redis(request_id, a, amount_nano, deadline_s, lease)
            finally:
                del leases.asking[a]
                asking.set_result(leased)
            if leased:
                drawn = self._draw(request_id, a, amount_nano, deadline_s, granted=True)
                assert drawn is not None
                return drawn
        else:
            outcome, _ = await self._reserve_in_redis(request_id, a, amount_nano, deadline_s)
        for _ in range(_REFUSAL_RETRIES):
            if outcome.ok:
                break
            # What this process's leases held but had not lent may be what was missing: if they
            # gave anything back since this reservation was sent (this request closing them now,
            # or another, or their end), try again.
            await self._give_back_leases(a.project)
            if self._gave_back == gave_back:
                break
            gave_back = self._gave_back
            outcome, _ = await self._reserve_in_redis(request_id, a, amount_nano, deadline_s)
        if outcome.ok:
            leases.began(request_id, a, self.clock())
        return outcome

    def _open_lease(self, hold_id: str, a: Attribution, amount: int, now: float, deadline: float,
                    granted: ReserveOutcome, asked: int, *, has_budgets: bool) -> None:
        """A lease of ``amount`` was granted when a request of ``asked`` nano-USD asked for it."""
        leases = self._leases
        old = leases.open.get(a)
        if old is not None:
            self._close_lease(old)
        view = granted.tightest
        if view is not None:  # the budget as it was without the lease (and the request that asked)
            view = view.with_reserved(view.reserved_nano - asked)
        lease = Lease(hold_id=hold_id, attribution=a, free=amount, ends=now + LEASE_LIFE_S, deadline=deadline,
                      tightest=view, room=granted.room_nano, has_budgets=has_budgets)
        leases.open[a] = lease
        leases.granted += 1
        lease.timer = asyncio.get_running_loop().call_later(LEASE_LIFE_S, self._close_lease, lease)

    def _draw(self, request_id: str, a: Attribution, amount_nano: int, deadline_s: float, *,
              granted: bool = False) -> ReserveOutcome | None:
        """Lend ``amount_nano`` from ``a``'s open lease; None when there is none or it cannot
        (it is closed then). ``granted``: the lease was just granted for this request."""
        leases = self._leases
        lease = leases.open.get(a)
        if lease is None:
            return None
        # However long the reply took, the request that asked for the lease draws from it.
        if not leases.draw(request_id, a, amount_nano, self.clock(), deadline_s, asked=granted):
            self._close_lease(lease)
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
        return ReserveOutcome(ok=True, tightest=view, room_nano=room, reclaimed=0)

    def _close_lease(self, lease: Lease) -> None:
        free = self._leases.close(lease)
        if free and lease.has_budgets:
            self._gave_back += 1
            self._give_back(lease, free)

    def _give_back(self, lease: Lease, free: int) -> None:
        """Release ``free`` of ``lease``'s hold in Redis, ahead of anything sent after this call
        on the pipe. A failure only leaves it held until the lease's deadline."""
        keys = self._hold_keys(lease.attribution)
        args = (lease.hold_id, str(free))
        sent = None
        if self._pipe is not None:
            sent = self._pipe.send_now([pack_command(("EVALSHA", self._release.sha, str(len(keys)), *keys, *args))])
        task = asyncio.ensure_future(self._given_back(sent, keys, args))
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)

    async def _given_back(self, sent: Awaitable[list[Any]] | None, keys: list[str], args: tuple[str, ...]) -> None:
        try:
            if sent is not None:
                (reply,) = await sent
                if not isinstance(reply, NoScriptError):
                    if isinstance(reply, Exception):
                        raise reply
                    return
            await self._release(keys, list(args))
        except (RedisError, OSError) as exc:
            log.warning("a budget lease could not give back what it did not lend (held until its deadline): %s",
                        exc)

    async def _give_back_leases(self, project: str) -> None:
        """Close this process's open leases of ``project`` and wait for every give-back under way."""
        for lease in [lease for lease in self._leases.open.values() if lease.attribution.project == project]:
            self._close_lease(lease)
        if self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)

    async def _reserve_ahead(self, a: Attribution, plan: _ReservePlan, buckets: tuple[str, ...],
                             args: tuple[str, ...]) -> list[Any]:
        """reserve.lua on the pipe, sent ahead of the settles still queued: it is told, per
        candidate budget, which queued requests will release a hold there and what they will
        add to its spend, and decides as if they had been written first. The queued settles go
        right behind it (the end of this loop turn), not before: a client's next request does
        not wait in Redis behind the whole settle script of its previous one."""
        pipe = self._pipe
        assert pipe is not None
        extra: list[bytes] = []
        n_extra = 0
        connected = pipe.connected  # then send_now puts it on the wire ahead of the queued settles
        if connected:
            queued = self._queued
            for scope, scope_id in plan.candidates:
                pending = queued.get((a.project, scope, scope_id)) if queued else None
                count, packed = _NOTHING_QUEUED if pending is None else pending.packed(buckets)
                n_extra += count
                extra.append(packed)
        command = b"".join((b"*%d\r\n" % (3 + len(plan.keys) + len(args) + n_extra), plan.packed_keys,
                            pack_args(args), *extra))
        sent = pipe.send_now([command]) if connected else None
        if sent is not None:
            self._settler.soon()
            (reply,) = await sent
        else:
            # No connection yet: the plain order, the settles first (and nothing queued to tell).
            await self._settler.settled()
            (reply,) = await pipe.execute_packed(command)
        if isinstance(reply, NoScriptError):
            # The server lost its scripts (restart, SCRIPT FLUSH): the Script object reloads.
            await self._settler.settled()
            return await self._reserve(plan.keys, args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def set_budget(self, scope: str, scope_id: str, limit_nano: int, period: str, mode: str = "hard",
                         thresholds: tuple[float, ...] | list[float] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
        """Create or replace a budget; returns its status (as ``get_budget``)."""
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
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(config, mapping={"limit": str(limit_nano), "period": period, "mode": mode,
                                       "thresholds": json.dumps(list(levels)),
                                       "alert_at": _alert_at(limit_nano, levels)})
            pipe.hsetnx(config, "created_at", f"{self.clock():.3f}")
            pipe.sadd(k.budget_index(project), f"{scope}:{local}")
            pipe.sadd(k.projects(), project)
            await pipe.execute()
        state = await self.budget_state(scope, scope_id)
        assert state is not None
        return state.to_dict()

    async def budget_state(self, scope: str, scope_id: str) -> BudgetState | None:
        """A budget's config and standing in nano-USD, or None when it does not exist."""
        await self.settled()  # what this process recorded so far is part of the answer
        project, local = split_scope_id(scope, scope_id, scopes=BUDGET_SCOPES)
        now = self.clock()
        with _redis_errors():
            reply = await self._status(self._budget_keys(project, scope, local, bucket_ids(now)), [str(int(now * 1000))])
        if reply is None:
            return None
        limit, period, mode, thresholds, created_at, spent, held = (_text(x) if isinstance(x, bytes) else x
                                                                   for x in reply)
        start, end = period_bounds(period, datetime.fromtimestamp(now, tz=timezone.utc))
        return BudgetState(
            scope=scope, id=public_id(scope, project, local), limit_nano=int(limit), period=period, mode=mode,
            thresholds=tuple(json.loads(thresholds)) if thresholds else DEFAULT_THRESHOLDS,
            spent_nano=int(spent), reserved_nano=int(held), created_at=float(created_at) if created_at else None,
            period_start=start, resets_at=end,
        )

    async def get_budget(self, scope: str, scope_id: str) -> dict[str, Any] | None:
        """The budget's status dict (USD strings, ISO times), or None when it does not exist."""
        state = await self.budget_state(scope, scope_id)
        return None if state is None else state.to_dict()

    async def list_budgets(self, scope: str | None = None, *, project: str | None = None) -> list[dict[str, Any]]:
        """Status of every budget, optionally of one scope and/or one project, sorted by scope and id."""
        if scope is not None and scope not in BUDGET_SCOPES:
            raise ValueError(f"unknown scope {scope!r}: use one of {', '.join(BUDGET_SCOPES)}")
        k = self.keys
        with _redis_errors():
            if project is not None:
                projects = [check_id(project, "project")]
            else:
                projects = sorted(_text(p) for p in await self.redis.smembers(k.projects()))
            wanted: list[tuple[str, str]] = []
            for p in projects:
                for member in await self.redis.smembers(k.budget_index(p)):
                    s, _, local = _text(member).partition(":")
                    if scope is None or s == scope:
                        wanted.append((s, public_id(s, p, local)))
        states = await asyncio.gather(*(self.budget_state(s, i) for s, i in wanted))
        order = {s: n for n, s in enumerate(BUDGET_SCOPES)}
        found = [st for st in states if st is not None]
        found.sort(key=lambda st: (order[st.scope], st.id))
        return [st.to_dict() for st in found]

    async def delete_budget(self, scope: str, scope_id: str) -> bool:
        """Remove a budget and its holds (its recorded spend stays); False when there was none."""
        project, local = split_scope_id(scope, scope_id, scopes=BUDGET_SCOPES)
        k = self.keys
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(k.budget(project, scope, local))
            pipe.delete(k.reservations(project, scope, local), k.reservation_amounts(project, scope, local),
                        k.alerted(project, scope, local))
            pipe.srem(k.budget_index(project), f"{scope}:{local}")
            existed, _, _ = await pipe.execute()
        return bool(existed)
