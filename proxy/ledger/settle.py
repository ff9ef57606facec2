"""Settling: a finished request's usage recorded once, its hold released (``settle.lua``).

Settles are queued and written in batches (``batch.py``): one settle.lua call per project
for those queued close together, each request still taken as if alone. What depends only on
who, which model and which hour is a ``SettlePlan``, built once; a call carries each plan's
keys and values once and each request only its own values and a plan index. A queued settle
is written at the end of the loop turn that queued it (``SETTLE_DELAY_S`` = 0), with the other
settles of that turn; a reservation or a read sends the queue at once and waits for it
(``reserve.py``). What a SIGKILL can lose is what is queued in that turn: a longer wait would
batch more at low concurrency, and lose every settle of its window (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, Awaitable

from redis.exceptions import NoScriptError, RedisError

from proxy.domain import (MAX_MODEL_LENGTH, Attribution, Crossing, RateHold, SettleOutcome, UsageEvent, check_id,
                          public_id)
from proxy.ledger.batch import TurnBatcher
from proxy.ledger.errors import redis_errors, text
from proxy.ledger.idempotency import SLOT_S, marker, slot
from proxy.ledger.keys import Keys
from proxy.ledger.leases import Leases
from proxy.ledger.periods import PERIODS, bucket_ids, period_bounds
from proxy.ledger.pipe import RedisPipe, pack_command, pack_strs
from proxy.ledger.scripts import Scripts, flat, framed, rate_keys, settle_call, settle_plan_layout, settle_request
from proxy.ledger.session_fields import oldest_kept

__all__ = ["Ttls", "Settles", "SettlePlan", "SettleJob", "SETTLE_DELAY_S", "check_request_id",
           "check_attribution", "DAY_S"]

HOUR_S = 3600
DAY_S = 24 * HOUR_S
MAX_REQUEST_ID_LENGTH = 256
DEFAULT_SESSION_TTL_S = 20 * DAY_S
# How long a queued settle may wait on the pipe for others to join its batch (0: until the end
# of the loop turn); reservations, reads and shutdown send it at once.
SETTLE_DELAY_S = 0.0
_MAX_PLANS = 4096               # cached plans (per attribution, model and hour); then start afresh
_MAX_CHUNK = 128                # requests per settle.lua call
_MAX_CHUNK_COST = 2**50         # nano-USD per settle.lua call, so its sums stay exact doubles


def check_request_id(request_id: object) -> str:
    if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise ValueError(f"invalid request id {request_id!r}: 1-{MAX_REQUEST_ID_LENGTH} characters")
    return request_id


def check_attribution(a: Attribution) -> None:
    check_id(a.project, "project")
    check_id(a.agent, "agent")
    if a.session is not None:
        check_id(a.session, "session")
    if a.key_id is not None:
        check_id(a.key_id, "key")


@dataclass(frozen=True, slots=True)
class Ttls:
    """Seconds a usage aggregate of each period lives after its last write; None = forever.
    (Each process renews a key's TTL on the first write of each hour, so "last write" is
    to within an hour.) A session's aggregates, and the rankings of sessions, live at most
    ``session`` seconds after their last write whatever their period: a session idle that
    long leaves nothing behind. (A session's buckets share one hash, which lives ``session``
    seconds after its last write and drops, when renewed, the buckets older than its period's
    TTL: ``session_fields.py``.)"""

    hour: int | None = 48 * HOUR_S
    day: int | None = 400 * DAY_S
    week: int | None = 400 * DAY_S
    month: int | None = 5 * 365 * DAY_S
    total: int | None = None
    session: int | None = DEFAULT_SESSION_TTL_S

    def session_arg(self) -> str:
        """settle.lua's session TTL (0 = each period's own)."""
        if self.session is not None and (type(self.session) is not int or self.session <= 0):
            raise ValueError(f"TTL for sessions must be a positive number of seconds or None, not {self.session!r}")
        return str(self.session or 0)

    def args(self) -> list[str]:
        """In PERIODS order, as settle.lua reads them (0 = no expiry)."""
        out = []
        for period in PERIODS:
            ttl = getattr(self, period)
            if ttl is not None and (type(ttl) is not int or ttl <= 0):
                raise ValueError(f"TTL for {period} must be a positive number of seconds or None, not {ttl!r}")
            out.append(str(ttl or 0))
        return out

    def session_kept(self, ts: float) -> tuple[str, ...]:
        """The oldest bucket of the hour, day, week and month a session's hash keeps at ``ts``."""
        return oldest_kept(ts, (self.hour, self.day, self.week, self.month), self.session)


@dataclass(slots=True, eq=False)
class SettlePlan:
    """The part of a settle that depends only on who, which model and which hour: built once.
    ``renewed``: a settle of this plan already asked for the TTLs of its keys to be renewed."""

    project: str
    scopes: tuple[tuple[str, str], ...]     # usage scopes in settle.lua's order, the model last
    keys: tuple[str, ...]                   # every key of its requests but their done-sets
    segment: tuple[str, ...]                # its plan segment of settle.lua's ARGV
    buckets: tuple[str, ...]                # hour .. total bucket ids
    packed_keys: bytes
    packed_segment: bytes
    renewed: bool = False


@dataclass(slots=True)
class SettleJob:
    """One request's settle, waiting for its batch. ``packed_*`` are set for the pipe."""

    plan: SettlePlan
    done_keys: tuple[str, ...]              # its done-set, then the rate counters it corrects
    cost: int
    args: tuple[str, ...]                   # settle.lua's segment of it after its length and plan index
    packed_done: bytes = b""
    packed_args: bytes = b""


class Settles:
    """The settle queue of one ledger and its writes."""

    def __init__(self, redis: Any, scripts: Scripts, keys: Keys, pipe: RedisPipe | None, leases: Leases,
                 fixed: tuple[str, ...], slot_s: int = SLOT_S, ttls: Ttls = Ttls()) -> None:
        self.redis = redis
        self.scripts = scripts
        self.keys = keys
        self.pipe = pipe
        self.leases = leases
        self.fixed = fixed                                          # settle.lua's ARGV[2..10]
        self.slot_s = slot_s                                        # event time per done-set
        self.ttls = ttls
        self.plans: dict[tuple[Attribution, str, tuple[str, ...]], SettlePlan] = {}
        self.batcher: TurnBatcher[SettleJob, list[Any]] = TurnBatcher(
            self._write, delay_s=SETTLE_DELAY_S if pipe is not None else 0.0)

    def plan(self, a: Attribution, model: str, buckets: tuple[str, ...], ts: float) -> SettlePlan:
        # A plan lives for its hour: what a session keeps is worked out from the hour's start.
        kept = self.ttls.session_kept(ts // HOUR_S * HOUR_S) if a.session is not None else ("", "", "", "")
        scopes, keys, segment = settle_plan_layout(self.keys, a, model, buckets, kept)
        plan = SettlePlan(project=a.project, scopes=scopes, keys=keys, segment=segment, buckets=buckets,
                          packed_keys=pack_strs(keys), packed_segment=pack_strs(segment))
        if len(self.plans) >= _MAX_PLANS:
            self.plans.clear()
        self.plans[(a, model, buckets)] = plan
        return plan

    def queue(self, event: UsageEvent, rate: RateHold | None = None) -> asyncio.Future[SettleOutcome]:
        """Record a finished request once: release its hold, add its usage, append its event;
        settling the same event (request id and time) again within the idempotency window
        changes nothing and gives ``recorded=False`` (``idempotency.py``).
        Queued when this is called, in the running event loop: a reservation made after this
        call sees it. Written with the other settles queued close to it (``batch.py``). The
        future gets the outcome, or ``LedgerUnavailable``; ``ValueError`` (raised here) for an
        event that cannot be recorded. ``rate``: what the request counted on its rate limits,
        corrected to the tokens it used (in that minute's counters, while they exist)."""
        a = event.attribution
        rid = check_request_id(event.request_id)
        model = event.priced_model or event.model
        buckets = bucket_ids(event.ts)
        plan = self.plans.get((a, model, buckets))
        if plan is None:  # a cached plan's attribution and model were checked when it was built
            check_attribution(a)
            if not isinstance(model, str) or not model or len(model) > MAX_MODEL_LENGTH:
                raise ValueError(f"invalid model name {model!r}")
            plan = self.plan(a, model, buckets, event.ts)
        leases = self.leases
        drawn = leases.drawn.get(rid) if leases.requests else None
        # A plan lives for one hour bucket, so each key's TTL is renewed about once an hour
        # rather than on every write (and set whenever a write creates the key). A drawn
        # request releases its part of its lease's hold; its done-marker makes it once only
        # (``idempotency.py``).
        done = marker(rid)
        done_keys: tuple[str, ...] = (self.keys.done(a.project, slot(event.ts, self.slot_s)),)
        counters, counted = 0, 0
        if rate is not None:
            done_keys += tuple(rate_keys(self.keys, a.project, rate.limits, rate.window))
            counters, counted = len(rate.limits), rate.tokens
        args = (settle_request(rid, not plan.renewed, "", done, event, counters, counted) if drawn is None else
                settle_request(drawn[0].hold_id, not plan.renewed, str(drawn[1]), done, event, counters, counted))
        if leases.requests:
            leases.ended(rid, settled_cost=event.cost_nano)
        leases.own.pop(rid, None)  # no longer renewed: settled, or held until its deadline
        plan.renewed = True
        job = SettleJob(plan=plan, done_keys=done_keys, cost=event.cost_nano, args=args)
        if self.pipe is not None:
            job.packed_done = pack_strs(done_keys)
            job.packed_args = pack_strs(args)
        # A callback rather than a task per request: this runs on every request.
        outcome: asyncio.Future[SettleOutcome] = asyncio.get_running_loop().create_future()
        self.batcher.submit(job).add_done_callback(partial(self._outcome, event, plan, outcome))
        return outcome

    def _outcome(self, event: UsageEvent, plan: SettlePlan, outcome: asyncio.Future[SettleOutcome],
                 written: asyncio.Future[list[Any]]) -> None:
        if outcome.done():  # its caller stopped waiting
            return
        if written.cancelled():
            outcome.cancel()
            return
        try:
            with redis_errors():
                reply = written.result()
            recorded, released = bool(reply[0]), int(reply[1])
            overrun = event.cost_nano - released if recorded and released and event.cost_nano > released else 0
            alerts = _crossings(event, plan.scopes, reply[3:]) if len(reply) > 3 else ()
        except Exception as exc:  # noqa: BLE001 - the caller's to handle
            outcome.set_exception(exc)
            return
        outcome.set_result(SettleOutcome(recorded=recorded, reserved_nano=released, overrun_nano=overrun,
                                         alerts=alerts))

    @staticmethod
    def _chunks(jobs: list[SettleJob]) -> list[list[int]]:
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

    def _write(self, jobs: list[SettleJob]) -> Awaitable[list[list[Any] | BaseException]]:
        """Send a batch of settles (``TurnBatcher``'s writer): one settle.lua call per chunk,
        and the projects added to the set of known projects. On the pipe they are on the
        connection before this returns; the awaitable gives each job's reply."""
        chunks = self._chunks(jobs)
        projects = sorted({job.plan.project for job in jobs})
        sha = self.scripts.settle.sha
        if self.pipe is not None:
            packed = []
            for chunk in chunks:
                n_keys, keys, n_args, args = settle_call([jobs[i] for i in chunk], self.fixed, True)
                packed.append(framed(sha, n_keys, n_args, keys, args))  # type: ignore[arg-type]
            packed.append(pack_command(("SADD", self.keys.projects(), *projects)))
            sent = self.pipe.send_now(packed)
            replies = sent if sent is not None else self.pipe.execute_packed(*packed)
        else:
            pipe = self.redis.pipeline(transaction=False)
            for chunk in chunks:
                n_keys, keys, _, args = settle_call([jobs[i] for i in chunk], self.fixed, False)
                # By sha, so the usual case is one round trip; redis-py's own pipeline script
                # handling would first ask SCRIPT EXISTS on every call.
                pipe.evalsha(sha, n_keys, *flat(keys), *flat(args))
            pipe.sadd(self.keys.projects(), *projects)
            replies = pipe.execute(raise_on_error=False)
        return self._replies(jobs, chunks, replies)

    async def _replies(self, jobs: list[SettleJob], chunks: list[list[int]], pending: Awaitable[list[Any]]
                       ) -> list[list[Any] | BaseException]:
        """Each job's part of its chunk's reply (or the chunk's error)."""
        replies = await pending
        results: list[list[Any] | BaseException] = [RuntimeError("not settled")] * len(jobs)
        for chunk, reply in zip(chunks, replies):
            if isinstance(reply, NoScriptError):
                # The server lost its scripts (restart, SCRIPT FLUSH): the Script object reloads.
                _, keys, _, args = settle_call([jobs[i] for i in chunk], self.fixed, False)
                try:
                    reply = await self.scripts.settle(flat(keys), flat(args))
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


def _crossings(event: UsageEvent, scopes: tuple[tuple[str, str], ...], raw: list[Any]) -> tuple[Crossing, ...]:
    """settle.lua's six values per crossed threshold as ``Crossing``s."""
    at = datetime.fromtimestamp(event.ts, tz=timezone.utc)
    out = []
    for i in range(0, len(raw), 6):
        index, threshold, spent, limit, period, mode = raw[i:i + 6]
        scope, local = scopes[int(index)]
        start, end = period_bounds(text(period), at)
        out.append(Crossing(scope=scope, id=public_id(scope, event.attribution.project, local),
                            threshold=float(text(threshold)), spent_nano=int(spent), limit_nano=int(limit),
                            period=text(period), mode=text(mode), period_start=start, resets_at=end))
    return tuple(out)
