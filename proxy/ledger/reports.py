"""Reading recorded usage back: reports, top sessions, bucket series, a model across projects.

Everything here reads the aggregates ``settle.lua`` writes (see ``keys.py``; a session's
buckets share one hash, ``session_fields.py``); nothing writes.
Amounts stay integer nano-USD until a dict meant for people is built, so the parts of a report
(models, agents, projects, points of a series) add up to its totals exactly.

A model can be read inside one project (``acme/gpt-4o``) or across every project: a bare
model name (``gpt-4o``), or ``*/MODEL`` for a model whose own name holds a slash. Across
projects means the set of known projects (``fb:projects``) and one pipelined read of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Sequence

from pricing.money import nano_to_usd
from proxy.domain import COMPUTE_PREFIX, MAX_MODEL_LENGTH, USAGE_SCOPES, iso_utc, public_id, split_scope_id
from proxy.ledger.errors import redis_errors, text
from proxy.ledger.periods import PERIODS, bucket_id, bucket_ids, check_period, period_bounds, to_utc
from proxy.ledger.session_fields import decode, field

if TYPE_CHECKING:
    from proxy.ledger.ledger import Ledger

__all__ = ["Target", "target", "read_usage", "top_sessions", "read_series", "known_projects",
           "SERIES_FIELDS", "ALL_PROJECTS"]

ALL_PROJECTS = "*"
# The totals a series point carries (``estimated`` counts requests whose usage was estimated).
SERIES_FIELDS: tuple[str, ...] = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens",
                                  "reasoning_tokens", "cost", "estimated")
_BREAKDOWN_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost")


@dataclass(frozen=True, slots=True)
class Target:
    """One scope id to read: inside ``project``, or a model in every project (``project`` None)."""

    scope: str
    id: str           # as reports show it
    project: str | None
    local: str        # the id inside the project (the model name for a model)


def target(scope: str, scope_id: str) -> Target:
    """The target a scope and id name; ValueError saying what to write when they name none."""
    if scope == "model" and isinstance(scope_id, str) and (scope_id.startswith(f"{ALL_PROJECTS}/") or "/" not in scope_id):
        model = scope_id.removeprefix(f"{ALL_PROJECTS}/")
        if not model or len(model) > MAX_MODEL_LENGTH:
            raise ValueError(f"invalid model id {scope_id!r}: write PROJECT/MODEL, or MODEL for every project")
        return Target("model", model if "/" not in model else f"{ALL_PROJECTS}/{model}", None, model)
    project, local = split_scope_id(scope, scope_id, scopes=USAGE_SCOPES)
    return Target(scope, public_id(scope, project, local), project, local)


def _now(ledger: Ledger, at: datetime | None) -> datetime:
    return to_utc(at) if at is not None else datetime.fromtimestamp(ledger.clock(), tz=timezone.utc)


def _ints(raw: Any) -> dict[str, int]:
    return {text(f): int(v) for f, v in raw.items()}


async def known_projects(ledger: Ledger) -> list[str]:
    """Every project that recorded usage or has a budget, sorted."""
    await ledger.settled()  # what this process recorded so far is part of the answer
    with redis_errors():
        return sorted(text(p) for p in await ledger.redis.smembers(ledger.keys.projects()))


async def read_usage(ledger: Ledger, scope: str, scope_id: str, period: str, at: datetime | None = None, *,
                     top: int = 10) -> dict[str, Any]:
    """Usage of one scope in the bucket of ``period`` containing ``at`` (default now), as a
    report dict (integer counts, USD strings, ISO times).

    ``scope_id`` is ``acme`` for a project, ``acme/planner`` for an agent (likewise session,
    key, and model as priced in one project). A project's report has ``by_agent`` and its
    ``top`` sessions by cost; a model across projects (``gpt-4o``) has every project's totals
    and ``by_project``.
    """
    await ledger.settled()  # what this process recorded so far is part of the answer
    t = target(scope, scope_id)
    check_period(period)
    at = _now(ledger, at)
    bucket = bucket_ids(at.timestamp())[PERIODS.index(period)]
    start, end = period_bounds(period, at)
    head = {"scope": scope, "id": t.id, "period": period, "period_start": iso_utc(start),
            "period_end": iso_utc(end)}
    if t.project is not None:
        with redis_errors():
            if scope == "session":
                raw = await ledger.redis.hgetall(ledger.keys.session(t.project, t.local))
                values = decode(_ints(raw)).get(bucket, {})
            else:
                values = _ints(await ledger.redis.hgetall(ledger.keys.usage(t.project, scope, bucket, t.local)))
        models = _breakdown_nano(values, "m|")
        report = {**head, **_totals(values), **_split(values, models, t), "by_model": _shown(_llm(models)),
                  "by_resource": _resources(models)}
        if scope == "project":
            report["by_agent"] = _breakdown(values, "a|")
            report["top_sessions"] = await top_sessions(ledger, t.project, period, at, top)
        return report
    projects = await known_projects(ledger)
    with redis_errors():
        pipe = ledger.redis.pipeline(transaction=False)
        for project in projects:
            pipe.hgetall(ledger.keys.usage(project, "model", bucket, t.local))
        replies = await pipe.execute()
    per_project = {p: _ints(raw) for p, raw in zip(projects, replies) if raw}
    totals: dict[str, int] = {}
    for values in per_project.values():
        for name, value in values.items():
            totals[name] = totals.get(name, 0) + value
    return {**head, **_totals(totals), **_split(totals, {}, t), "by_model": {}, "by_resource": {},
            "by_project": {p: _part(v) for p, v in per_project.items()}}


def _totals(values: dict[str, int]) -> dict[str, Any]:
    return {
        "requests": values.get("requests", 0),
        "prompt_tokens": values.get("prompt_tokens", 0),
        "completion_tokens": values.get("completion_tokens", 0),
        "total_tokens": values.get("prompt_tokens", 0) + values.get("completion_tokens", 0),
        "cached_tokens": values.get("cached_tokens", 0),
        "cache_creation_tokens": values.get("cache_creation_tokens", 0),
        "reasoning_tokens": values.get("reasoning_tokens", 0),
        "estimated_requests": values.get("estimated", 0),
        "cost_usd": nano_to_usd(values.get("cost", 0)),
    }


def _breakdown(values: dict[str, int], tag: str) -> dict[str, dict[str, Any]]:
    """``m|<model>|<field>`` fields as ``{model: {requests, ..., cost_usd}}`` (models may hold ``|``)."""
    return _shown(_breakdown_nano(values, tag))


def _breakdown_nano(values: dict[str, int], tag: str) -> dict[str, dict[str, int]]:
    groups: dict[str, dict[str, int]] = {}
    for name, value in values.items():
        if name.startswith(tag):
            who, _, what = name[len(tag):].rpartition("|")
            groups.setdefault(who, {})[what] = value
    return dict(sorted(groups.items()))


def _shown(groups: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
    return {who: _part(g) for who, g in groups.items()}


def _llm(models: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The breakdown by model without the usage records of compute (``compute:<resource>``)."""
    return {m: g for m, g in models.items() if not m.startswith(COMPUTE_PREFIX)}


def _resources(models: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
    """Usage records of compute by resource: ``{gpu: {records, cost_usd}}``."""
    return {m[len(COMPUTE_PREFIX):]: {"records": g.get("requests", 0), "cost_usd": nano_to_usd(g.get("cost", 0))}
            for m, g in models.items() if m.startswith(COMPUTE_PREFIX)}


def _split(values: dict[str, int], models: dict[str, dict[str, int]], t: Target) -> dict[str, Any]:
    """What of the cost was LLM calls and what usage records of compute (by the breakdown by
    model, or, for a model's own report, by its name), and how many records there were."""
    if t.scope == "model":
        compute = t.local.startswith(COMPUTE_PREFIX)
        cost, records = (values.get("cost", 0), values.get("requests", 0)) if compute else (0, 0)
    else:
        parts = [g for m, g in models.items() if m.startswith(COMPUTE_PREFIX)]
        cost, records = sum(g.get("cost", 0) for g in parts), sum(g.get("requests", 0) for g in parts)
    return {"llm_cost_usd": nano_to_usd(values.get("cost", 0) - cost), "compute_cost_usd": nano_to_usd(cost),
            "compute_records": records}


def _part(values: dict[str, int]) -> dict[str, Any]:
    return {"requests": values.get("requests", 0), "prompt_tokens": values.get("prompt_tokens", 0),
            "completion_tokens": values.get("completion_tokens", 0), "cost_usd": nano_to_usd(values.get("cost", 0))}


async def top_sessions(ledger: Ledger, project: str, period: str, at: datetime, n: int) -> list[dict[str, Any]]:
    """The ``n`` costliest sessions of ``project`` in the bucket of ``period`` holding ``at``,
    costliest first, each with its requests, tokens and cost (from its own hash)."""
    await ledger.settled()  # what this process recorded so far is part of the answer
    if n <= 0:
        return []
    bucket = bucket_ids(to_utc(at).timestamp())[PERIODS.index(period)]
    k = ledger.keys
    with redis_errors():
        members = await ledger.redis.zrevrange(k.top_sessions(project, bucket), 0, n - 1)
        sessions = [text(m) for m in members]
        if not sessions:
            return []
        pipe = ledger.redis.pipeline(transaction=False)
        fields = [field(bucket, name) for name in _BREAKDOWN_FIELDS]
        for session in sessions:
            pipe.hmget(k.session(project, session), fields)
        replies = await pipe.execute()
    rows = []
    for session, reply in zip(sessions, replies):
        requests, prompt, completion, cost = (int(v) if v is not None else 0 for v in reply)
        rows.append((cost, session, {"session": session, "requests": requests, "prompt_tokens": prompt,
                                     "completion_tokens": completion, "cost_usd": nano_to_usd(cost)}))
    rows.sort(key=lambda row: (-row[0], row[1]))
    return [row[2] for row in rows]


async def read_series(ledger: Ledger, t: Target, granularity: str, starts: Sequence[datetime]) -> list[dict[str, int]]:
    """The ``SERIES_FIELDS`` of ``t`` in the ``granularity`` bucket of each start (0 where
    nothing was recorded or the aggregate expired), summed over projects for a model across
    projects. One round trip (after listing the projects, for a model across projects)."""
    await ledger.settled()  # what this process recorded so far is part of the answer
    check_period(granularity)
    buckets = [bucket_id(granularity, s) for s in starts]
    projects = [t.project] if t.project is not None else await known_projects(ledger)
    out = [dict.fromkeys(SERIES_FIELDS, 0) for _ in buckets]
    if not buckets or not projects:
        return out
    with redis_errors():
        pipe = ledger.redis.pipeline(transaction=False)
        for project in projects:
            for bucket in buckets:
                if t.scope == "session":
                    pipe.hmget(ledger.keys.session(project, t.local), [field(bucket, name) for name in SERIES_FIELDS])
                else:
                    pipe.hmget(ledger.keys.usage(project, t.scope, bucket, t.local), SERIES_FIELDS)
        replies = await pipe.execute()
    for n, reply in enumerate(replies):
        point = out[n % len(buckets)]
        for name, value in zip(SERIES_FIELDS, reply):
            if value is not None:
                point[name] += int(value)
    return out
