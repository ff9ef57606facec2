"""The Lua scripts and their arguments: every KEYS / ARGV layout, in one place.

Each script's call is built here, as strings, and both transports send that same layout:
redis-py flattens the pieces (``flat``), the pipe frames them in the Redis protocol
(``framed``). A piece is a tuple of strings, or, for the pipe, those strings packed once
(``pack_strs``): the parts of a call that depend only on who, which model and which hour
are packed once per plan and reused by every call.

Scripts (``lua/``, their headers say what each reads):

- ``reserve``: hold a request's worst case, or a budget lease, on every budget that applies.
- ``settle``: record requests once per request id (their done-markers, ``idempotency.py``),
  releasing their holds.
- ``release``: drop a hold, or part of one, without charging.
- ``budget_status``: a budget's config, spend and live holds.
- ``renew``: move the deadlines of the holds a process still has in flight (``renew.py``).
- ``migrate``: move a session's aggregate of the earlier layout into its one hash (``migrate.py``).

A write the pipe or redis-py may send twice (after a lost connection) changes nothing the
second time: a request's own hold is replaced, a settle is remembered by its request id, and a
lease grant or a partial release carries an operation key (``Keys.op``) that remembers its
reply for a while. A renewal only moves deadlines later (``ZADD XX GT``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Iterable, Sequence

import redis.asyncio as aioredis

from proxy.domain import RATE_WINDOW_S, Attribution, RateAsk, RateLimit, UsageEvent, attribution_fields
from proxy.ledger.keys import Keys
from proxy.ledger.pipe import RedisPipe, pack_strs
from proxy.ledger.session_fields import spend_field

__all__ = ["Scripts", "MAX_LUA_NANO", "lua_source", "hold_keys", "budget_keys", "budget_candidates",
           "reserve_keys", "reserve_argv", "reserve_spend", "spend_fields", "usage_keys", "rate_keys", "settle_plan_layout", "settle_fixed",
           "settle_request", "settle_call", "release_argv", "status_argv", "renew_call", "flat", "framed",
           "Piece"]

# Lua numbers are doubles: amounts a script compares must stay below 2**53 (about 9 million USD).
MAX_LUA_NANO = 2**53 - 1
# Breakdown levels of the usage scopes in settle.lua: 2 = by model and agent, 1 = by model.
_LEVEL = {"project": 2, "agent": 1, "session": 1, "key": 1, "model": 0}

Piece = tuple[str, ...] | bytes


@cache
def lua_source(name: str) -> str:
    return resources.files("proxy.ledger").joinpath("lua", name).read_text(encoding="utf-8")


class Scripts:
    """The scripts, registered with redis-py (which reloads a script the server forgot)
    and, when there is a pipe, the request path's loaded on each of its connections."""

    __slots__ = ("reserve", "settle", "release", "status", "renew", "migrate")

    def __init__(self, redis: aioredis.Redis, pipe: RedisPipe | None) -> None:
        self.reserve = redis.register_script(lua_source("reserve.lua"))
        self.settle = redis.register_script(lua_source("settle.lua"))
        self.release = redis.register_script(lua_source("release.lua"))
        self.status = redis.register_script(lua_source("budget_status.lua"))
        self.renew = redis.register_script(lua_source("renew.lua"))
        self.migrate = redis.register_script(lua_source("migrate_session.lua"))
        if pipe is not None:
            # A settle sent behind a reservation must not fail on NOSCRIPT and be retried after it.
            pipe.load_on_connect(self.reserve.script, self.settle.script, self.release.script, self.renew.script)


def flat(pieces: Sequence[Piece]) -> list[str]:
    """Pieces of strings as redis-py takes them."""
    return [s for piece in pieces for s in piece]


def framed(sha: str, n_keys: int, n_args: int, keys: Sequence[bytes], args: Sequence[bytes]) -> bytes:
    """``EVALSHA`` with packed pieces, in the Redis protocol."""
    return b"".join((b"*%d\r\n" % (3 + n_keys + n_args), pack_strs(("EVALSHA", sha, str(n_keys))), *keys, *args))


# -- keys -----------------------------------------------------------------------------------

def hold_keys(k: Keys, a: Attribution) -> list[str]:
    """Reservation zset + amount hash of every budget that may apply to ``a`` (release.lua's
    KEYS, and part of settle.lua's)."""
    p = a.project
    out = [k.reservations(p, "project", p), k.reservation_amounts(p, "project", p),
           k.reservations(p, "agent", a.agent), k.reservation_amounts(p, "agent", a.agent)]
    if a.session is not None:
        out += [k.reservations(p, "session", a.session), k.reservation_amounts(p, "session", a.session)]
    if a.key_id is not None:
        out += [k.reservations(p, "key", a.key_id), k.reservation_amounts(p, "key", a.key_id)]
    return out


def usage_keys(k: Keys, project: str, scope: str, local: str, buckets: Sequence[str]) -> list[str]:
    """The hash that holds the usage of each of ``buckets`` of a scope: one per bucket, but a
    session's one hash for all (``session_fields.py``)."""
    if scope == "session":
        return [k.session(project, local)] * len(buckets)
    return [k.usage(project, scope, b, local) for b in buckets]


def spend_fields(scope: str, buckets: Sequence[str]) -> tuple[str, ...]:
    """The field of each bucket's hash (``usage_keys``) that holds a scope's cost."""
    if scope == "session":
        return tuple(spend_field(b) for b in buckets)
    return ("cost",) * len(buckets)


def budget_keys(k: Keys, project: str, scope: str, local: str, buckets: Sequence[str]) -> list[str]:
    """One budget's config, reservation zset, amount hash, then its usage hashes of ``buckets``
    (budget_status.lua's KEYS; 8 of reserve.lua's per candidate budget)."""
    return [k.budget(project, scope, local), k.reservations(project, scope, local),
            k.reservation_amounts(project, scope, local), *usage_keys(k, project, scope, local, buckets)]


def budget_candidates(a: Attribution) -> tuple[tuple[str, str], ...]:
    """The budget scopes that may apply to ``a``, in the scripts' order."""
    out = [("project", a.project), ("agent", a.agent)]
    if a.session is not None:
        out.append(("session", a.session))
    if a.key_id is not None:
        out.append(("key", a.key_id))
    return tuple(out)


# -- reserve.lua ----------------------------------------------------------------------------

def reserve_keys(k: Keys, project: str, candidates: Sequence[tuple[str, str]], buckets: Sequence[str]) -> list[str]:
    """reserve.lua's KEYS but the operation key a lease grant adds at the end."""
    out: list[str] = []
    for scope, local in candidates:
        out += budget_keys(k, project, scope, local, buckets)
    return out


_NO_RATE = ("0", "0", "0", "0", "0", "0", "0")


def reserve_spend(candidates: Sequence[tuple[str, str]], buckets: Sequence[str]) -> tuple[str, ...]:
    """The tail of reserve.lua's ARGV: per candidate budget, the field of each of its usage
    hashes that holds its spend (``spend_fields``), up to the last that is not ``cost`` (the
    script's default): nothing at all for a request without a session."""
    fields = [f for scope, _ in candidates for f in spend_fields(scope, buckets)]
    while fields and fields[-1] == "cost":
        fields.pop()
    return tuple(fields)


def reserve_argv(request_id: str, amount: int, now_ms: int, deadline_s: float,
                 lease: tuple[str, int, float, int, int, int] | None, rate: RateAsk | None = None,
                 spend: tuple[str, ...] = ()) -> tuple[str, ...]:
    """reserve.lua's ARGV. ``lease``: (id, amount, deadline in clock seconds, room it needs on
    every hard budget, requests it counts on the rate limits, requests of room it needs there);
    ``rate``: the rate limits the request counts on (each request of a lease counts its tokens);
    ``spend``: ``reserve_spend`` of the candidate budgets."""
    head = (request_id, str(amount), str(now_ms), str(now_ms + max(1, int(deadline_s * 1000))),
            *(("", "0", "0", "0") if lease is None else
              (lease[0], str(lease[1]), str(int(lease[2] * 1000)), str(lease[3]))))
    if rate is None:
        return head + _NO_RATE + spend
    limits, tokens = rate.limits, rate.tokens
    window_end_ms = (now_ms // (RATE_WINDOW_S * 1000) + 1) * RATE_WINDOW_S * 1000
    leased, need = (0, 0) if lease is None else (lease[4], lease[5])
    return (*head, str(len(limits)), str(tokens),
            *(str(x or 0) for limit in limits for x in (limit.rpm, limit.tpm)),
            str(window_end_ms), str(leased), str(leased * tokens), str(need), str(need * tokens), *spend)


def rate_keys(k: Keys, project: str, limits: Sequence[RateLimit], window: int) -> list[str]:
    """The rate counters of ``limits`` in minute ``window`` (reserve.lua's, release.lua's and
    settle.lua's)."""
    return [k.rate(project, limit.scope, window, limit.id) for limit in limits]


# -- settle.lua -----------------------------------------------------------------------------

def settle_plan_layout(k: Keys, a: Attribution, model: str, buckets: tuple[str, ...],
                       kept: tuple[str, ...] = ("", "", "", "")
                       ) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], tuple[str, ...]]:
    """What a settle of ``a``'s request on ``model`` in the hour of ``buckets`` sends besides the
    request's own values: its usage scopes (the model last), its KEYS, and its plan segment.
    ``kept``: the oldest bucket of the hour, day, week and month a session's hash keeps
    (``session_fields.oldest_kept``)."""
    p = a.project
    holds = hold_keys(k, a)
    scopes = (*budget_candidates(a), ("model", model))
    keys = [k.events(p), *holds]
    for scope, scope_id in scopes:
        keys += usage_keys(k, p, scope, scope_id, buckets)
    if a.session is not None:
        keys += [k.top_sessions(p, bucket) for bucket in buckets]
        keys.append(k.top_pruned(p, buckets[0]))
    for scope, scope_id in scopes[:-1]:  # budget scopes: config and alert claims
        keys += [k.budget(p, scope, scope_id), k.alerted(p, scope, scope_id)]
    segment = (str(len(holds) // 2), str(len(scopes)), "6" if a.session is not None else "0",
               model, a.agent, a.session or "", *(str(_LEVEL[scope]) for scope, _ in scopes), *buckets,
               *(kept if a.session is not None else ("", "", "", "")), *attribution_fields(a))
    return scopes, tuple(keys), (str(1 + len(segment)), *segment)


def settle_fixed(window_s: int, ttls: Sequence[str], stream_maxlen: int, session_ttl_s: int,
                 ranking_size: int) -> tuple[str, ...]:
    """settle.lua's ARGV[2..10], the same for every call of a ledger."""
    return (str(window_s), *ttls, str(stream_maxlen), str(session_ttl_s), str(ranking_size))


def _bad_count(event: UsageEvent) -> ValueError:
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens",
                 "reasoning_tokens", "cost_nano"):
        value = getattr(event, name)
        if type(value) is not int or value < 0:
            return ValueError(f"{name} must be a non-negative int, not {value!r}")
    return ValueError(f"cost_nano must be at most {MAX_LUA_NANO}, not {event.cost_nano}")


def settle_request(hold: str, renew: bool, part: str, marker: str, event: UsageEvent,
                   rate_counters: int = 0, rate_tokens: int = 0) -> tuple[str, ...]:
    """One request's segment of settle.lua's ARGV after its length and plan index: hold id,
    renew, part, its done-marker, the eight increments, its rate counters' count and the tokens
    it counted there (its worst case, corrected to what it used), then the event's head and
    tail (its attribution fields are its plan's, sent once per call). ``ValueError`` for counts
    that cannot be recorded."""
    e = event
    prompt, completion, cached, creation, reasoning, cost = (
        e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.cache_creation_tokens, e.reasoning_tokens,
        e.cost_nano)
    if not (type(prompt) is int and prompt >= 0 and type(completion) is int and completion >= 0
            and type(cached) is int and cached >= 0 and type(creation) is int and creation >= 0
            and type(reasoning) is int and reasoning >= 0 and type(cost) is int and 0 <= cost <= MAX_LUA_NANO):
        raise _bad_count(e)
    head, tail = e.head_and_tail()
    return (hold, "1" if renew else "0", part, marker, "1", str(prompt), str(completion), str(cached), str(creation),
            str(reasoning), str(cost), "1" if e.estimated else "0", str(rate_counters),
            str(prompt + completion - rate_tokens) if rate_counters else "0", str(len(head)), *head, *tail)


def settle_call(jobs: Sequence[Any], fixed: tuple[str, ...], packed: bool
                ) -> tuple[int, list[Piece], int, list[Piece]]:
    """One settle.lua call for ``jobs`` (``settle.SettleJob``s, all of one project): its number
    of KEYS and their pieces, its number of ARGV and their pieces. Pieces are packed when
    ``packed`` (the pipe)."""
    index: dict[Any, int] = {}
    numbers = [index.setdefault(job.plan, len(index) + 1) for job in jobs]
    plans = list(index)
    head = (str(len(jobs)), *fixed, str(len(plans)))
    keys: list[Piece] = [plan.packed_keys if packed else plan.keys for plan in plans]
    keys += [job.packed_done if packed else job.done_keys for job in jobs]
    args: list[Piece] = [pack_strs(head) if packed else head]
    args += [plan.packed_segment if packed else plan.segment for plan in plans]
    n_args = len(head) + sum(len(plan.segment) for plan in plans)
    for job, n in zip(jobs, numbers):
        segment_head = (str(2 + len(job.args)), str(n))  # the segment's length and its plan's index
        args += (pack_strs(segment_head) if packed else segment_head, job.packed_args if packed else job.args)
        n_args += 2 + len(job.args)
    return sum(len(job.done_keys) for job in jobs) + sum(len(plan.keys) for plan in plans), keys, n_args, args


# -- release.lua, budget_status.lua ---------------------------------------------------------

def release_argv(hold_id: str, part: int | None = None, op_ttl_s: int = 0,
                 rate: tuple[int, int, int] | None = None) -> list[str]:
    """release.lua's ARGV: the hold, the part to give back (None: all of it), how long the
    operation key (after the hold keys, when ``op_ttl_s``) remembers the release, and with
    ``rate`` (counters, requests, tokens) what to take off the rate counters (the last KEYS)."""
    out = [hold_id, "" if part is None else str(part), str(op_ttl_s)]
    if rate is not None:
        out += [str(rate[0]), str(rate[1]), str(rate[2])]
    return out


def status_argv(now_s: float, spend: Sequence[str]) -> list[str]:
    """budget_status.lua's ARGV: now, then the spend field of each usage hash (``spend_fields``)."""
    return [str(int(now_s * 1000)), *spend]


# -- renew.lua ------------------------------------------------------------------------------

def renew_call(k: Keys, holds: Iterable[tuple[str, Attribution]], deadline_s: float) -> tuple[list[str], list[str]]:
    """renew.lua's KEYS and ARGV for ``holds`` (hold id, attribution; all of one project):
    every reservation zset that may hold one of them, once, then the new deadline (clock
    seconds), each zset's count of hold ids, and the hold ids zset by zset."""
    by_zset: dict[str, list[str]] = {}
    for hold_id, a in holds:
        p = a.project
        zsets = [k.reservations(p, "project", p), k.reservations(p, "agent", a.agent)]
        if a.session is not None:
            zsets.append(k.reservations(p, "session", a.session))
        if a.key_id is not None:
            zsets.append(k.reservations(p, "key", a.key_id))
        for zset in zsets:
            by_zset.setdefault(zset, []).append(hold_id)
    keys = list(by_zset)
    args = [str(int(deadline_s * 1000)), *(str(len(ids)) for ids in by_zset.values())]
    for ids in by_zset.values():
        args += ids
    return keys, args
