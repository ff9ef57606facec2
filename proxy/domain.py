"""What farebox talks about, with no I/O: who pays (``Attribution``), a finished request
(``UsageEvent``), budgets as a reservation saw them (``BudgetView``) and as they stand
(``BudgetState``), what a reservation and a settle answered, an alert threshold crossed, and
the rules every part shares: ids, scopes, modes, default alert thresholds, the time format.

Nothing here imports Redis, aiohttp or the ledger: the request flow, the control plane and the
ledger all speak these types.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from pricing.money import nano_to_usd

__all__ = [
    "farebox_credential",
    "FAREBOX_KEY_MARK",
    "Attribution",
    "UsageEvent",
    "Crossing",
    "SettleOutcome",
    "BudgetView",
    "BudgetState",
    "RateLimit",
    "RateAsk",
    "RateHold",
    "RateRefusal",
    "RATE_WINDOW_S",
    "ReserveOutcome",
    "BUDGET_SCOPES",
    "USAGE_SCOPES",
    "MODES",
    "DEFAULT_THRESHOLDS",
    "MAX_THRESHOLD",
    "MAX_MODEL_LENGTH",
    "ID_PATTERN",
    "ID_RULE",
    "check_id",
    "check_thresholds",
    "split_scope_id",
    "public_id",
    "iso_utc",
    "attribution_fields",
    "COMPUTE_PREFIX",
]

FAREBOX_KEY_MARK = "fbk_"   # what every farebox key starts with


def farebox_credential(value: str) -> str | None:
    """The farebox key a credential header's value holds (``fbk_...``, bare or after
    ``Bearer``), or None. The one rule both sides use: what ``proxy.keyauth`` resolves is exactly
    what ``proxy.upstream.relay`` never forwards."""
    if FAREBOX_KEY_MARK not in value:
        return None
    token = value.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].lstrip()
    return token if token.startswith(FAREBOX_KEY_MARK) else None

BUDGET_SCOPES: tuple[str, ...] = ("project", "agent", "session", "key")
USAGE_SCOPES: tuple[str, ...] = BUDGET_SCOPES + ("model",)
MODES: tuple[str, ...] = ("hard", "soft")
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.8, 0.9, 1.0)
MAX_THRESHOLD = 10.0                # an alert at 1000 % of a (soft) budget is the most we accept
MAX_MODEL_LENGTH = 256
# The priced model of a usage record of compute: "compute:gpu" (proxy.compute). Reports count
# such models as compute, by resource, and every other model as LLM spend.
COMPUTE_PREFIX = "compute:"

# Project, agent, session and key ids: safe inside Redis keys, metric labels and PROJECT/AGENT.
ID_PATTERN = re.compile(r"[A-Za-z0-9._@-]{1,128}")
ID_RULE = "1-128 characters of letters, digits and . _ - @"


def check_id(value: object, what: str) -> str:
    """``value`` when it is a valid project/agent/session/key id, else ValueError saying why."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValueError(f"invalid {what} id {value!r}: ids are {ID_RULE}")
    return value


def iso_utc(at: datetime | None) -> str | None:
    """``2026-12-01T00:00:00Z``: the one form times take in farebox's answers (None stays None)."""
    return None if at is None else at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who a request is charged to. ``key_id`` is the proxy's short fingerprint of the API key."""

    project: str
    agent: str = "default"
    session: str | None = None
    key_id: str | None = None


def attribution_fields(a: Attribution) -> tuple[str, ...]:
    """The attribution's fields of a usage event in the stream, between its head and tail
    (``UsageEvent.head_and_tail``): the same for every request of a settle plan."""
    return ("project", a.project, "agent", a.agent, "session", a.session or "", "key_id", a.key_id or "")


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One finished request as the ledger records it. Token counts follow the OpenAI
    convention (cached within prompt, reasoning within completion); ``cost_nano`` is nano-USD."""

    request_id: str
    ts: float                       # epoch seconds; decides the buckets the usage lands in
    attribution: Attribution
    model: str                      # as the client asked
    priced_model: str               # as the catalog priced it; the model scope and breakdowns use this
    endpoint: str
    upstream: str
    status: int
    stream: bool
    estimated: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    reasoning_tokens: int
    cost_nano: int
    latency_ms: int                 # request written to the upstream -> its last byte
    clamped_max_tokens: int | None = None
    ttfb_ms: int | None = None      # request written -> the answer's first byte (None: none came, or not measured)
    cache_creation_1h_tokens: int = 0   # of cache_creation_tokens, written for an hour (Anthropic)
    web_search_calls: int = 0           # web searches the provider billed per call
    output_bound: int | None = None     # the output tokens per choice the reservation assumed (None: not reserved)
    reserved_nano: int | None = None    # the worst case the reservation held (None: not reserved)

    def to_fields(self) -> list[str]:
        """The stream entry: field, value, field, value, ..."""
        head, tail = self.head_and_tail()
        return [*head, *attribution_fields(self.attribution), *tail]

    def head_and_tail(self) -> tuple[list[str], list[str]]:
        """The stream entry's fields before and after its attribution's."""
        # Milliseconds rounded down, so the written time lies in the same hour (and day, month)
        # as ``ts``, which decided the aggregates: whoever reads the event back buckets it alike.
        head = ["request_id", self.request_id, "ts", f"{math.floor(self.ts * 1000) / 1000:.3f}"]
        fields = [
            "model", self.model, "priced_model", self.priced_model, "endpoint", self.endpoint,
            "upstream", self.upstream, "status", str(self.status), "stream", "1" if self.stream else "0",
            "estimated", "1" if self.estimated else "0", "prompt_tokens", str(self.prompt_tokens),
            "completion_tokens", str(self.completion_tokens), "cached_tokens", str(self.cached_tokens),
            "cache_creation_tokens", str(self.cache_creation_tokens),
            "reasoning_tokens", str(self.reasoning_tokens), "cost_nano", str(self.cost_nano),
            "latency_ms", str(self.latency_ms),
        ]
        if self.clamped_max_tokens is not None:
            fields += ["clamped_max_tokens", str(self.clamped_max_tokens)]
        if self.ttfb_ms is not None:
            fields += ["ttfb_ms", str(self.ttfb_ms)]
        if self.cache_creation_1h_tokens:
            fields += ["cache_creation_1h_tokens", str(self.cache_creation_1h_tokens)]
        if self.web_search_calls:
            fields += ["web_search_calls", str(self.web_search_calls)]
        if self.output_bound is not None:
            fields += ["output_bound", str(self.output_bound)]
        if self.reserved_nano is not None:
            fields += ["reserved_nano", str(self.reserved_nano)]
        return head, fields

    @classmethod
    def from_fields(cls, fields: Mapping[bytes | str, bytes | str]) -> "UsageEvent":
        """Read back a stream entry written by ``to_fields`` (an entry from before a field was
        added reads with its default)."""
        f = {_text(k): _text(v) for k, v in fields.items()}
        clamp = f.get("clamped_max_tokens", "")
        ttfb = f.get("ttfb_ms", "")
        return cls(
            request_id=f["request_id"], ts=float(f["ts"]),
            attribution=Attribution(f["project"], f["agent"], f["session"] or None, f["key_id"] or None),
            model=f["model"], priced_model=f["priced_model"], endpoint=f["endpoint"], upstream=f["upstream"],
            status=int(f["status"]), stream=f["stream"] == "1", estimated=f["estimated"] == "1",
            prompt_tokens=int(f["prompt_tokens"]), completion_tokens=int(f["completion_tokens"]),
            cached_tokens=int(f["cached_tokens"]), cache_creation_tokens=int(f["cache_creation_tokens"]),
            reasoning_tokens=int(f["reasoning_tokens"]), cost_nano=int(f["cost_nano"]),
            latency_ms=int(f["latency_ms"]), clamped_max_tokens=int(clamp) if clamp else None,
            ttfb_ms=int(ttfb) if ttfb else None,
            cache_creation_1h_tokens=int(f.get("cache_creation_1h_tokens") or 0),
            web_search_calls=int(f.get("web_search_calls") or 0),
            output_bound=int(f["output_bound"]) if f.get("output_bound") else None,
            reserved_nano=int(f["reserved_nano"]) if f.get("reserved_nano") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UsageEvent":
        values = dict(data)
        values["attribution"] = Attribution(**values["attribution"])
        return cls(**values)



@dataclass(frozen=True, slots=True)
class Crossing:
    """A budget's alert threshold crossed by a settled request, claimed by that settle alone:
    one per threshold per period per budget. ``spent_nano`` is the period's spend right after
    the request; ``threshold`` a fraction of the limit (0.8 = 80 %)."""

    scope: str
    id: str
    threshold: float
    spent_nano: int
    limit_nano: int
    period: str
    mode: str
    period_start: datetime | None
    resets_at: datetime | None


@dataclass(frozen=True, slots=True)
class SettleOutcome:
    """``recorded`` is False for a request id settled before (nothing changed).
    ``reserved_nano``: the hold released (0 when none was left: no budget applied, or it was
    reclaimed after its deadline). ``overrun_nano``: cost beyond that hold (0 when no hold was
    released). ``alerts``: the thresholds this request crossed."""

    recorded: bool
    reserved_nano: int
    overrun_nano: int
    alerts: tuple[Crossing, ...] = ()


@dataclass(frozen=True, slots=True)
class BudgetView:
    """A budget as a reservation saw it. ``reserved_nano`` includes the request's own hold after
    a granted reservation; after a refusal nothing was held."""

    scope: str
    id: str
    period: str
    limit_nano: int
    spent_nano: int
    reserved_nano: int
    resets_at: datetime | None

    @property
    def remaining_nano(self) -> int:
        return max(0, self.limit_nano - self.spent_nano - self.reserved_nano)

    def with_reserved(self, reserved_nano: int) -> "BudgetView":
        """This view with another amount held."""
        return self.with_usage(self.spent_nano, reserved_nano)

    def with_usage(self, spent_nano: int, reserved_nano: int) -> "BudgetView":
        """This view with other amounts spent and held (``dataclasses.replace`` costs more, per request)."""
        return BudgetView(scope=self.scope, id=self.id, period=self.period, limit_nano=self.limit_nano,
                          spent_nano=spent_nano, reserved_nano=reserved_nano, resets_at=self.resets_at)


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    """``ok``: the amount is held on every applicable budget (or none applies).
    ``tightest``: the hard budget with the least room (None without hard budgets).
    ``room_nano``: the least room among hard budgets before this reservation, never below 0
    (None without hard budgets); a refused request whose worst case is lowered to fit it can
    try again. ``reclaimed``: holds past their deadline that this call released."""

    ok: bool
    tightest: BudgetView | None
    room_nano: int | None
    reclaimed: int
    rate_refused: "RateRefusal | None" = None     # refused by a rate limit (429), not a budget
    rate_hold: "RateHold | None" = None           # what the request counts on its rate limits


# -- rate limits ------------------------------------------------------------------------------

RATE_WINDOW_S = 60     # rate limits count per minute, in windows aligned to the epoch minute


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Requests and tokens per minute allowed to one project or one farebox key (None: no limit
    of that kind)."""

    scope: str              # "project" | "key"
    id: str                 # the project id, or the key id
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True, slots=True)
class RateAsk:
    """What a request counts on the rate limits that apply to it: one request, and ``tokens``
    (its worst case: the counted prompt plus its output bound)."""

    limits: tuple[RateLimit, ...]
    tokens: int


@dataclass(frozen=True, slots=True)
class RateHold:
    """What a granted request counted, and in which minute: its settle corrects ``tokens`` to the
    tokens it used, in that minute's counters."""

    limits: tuple[RateLimit, ...]
    window: int             # epoch seconds // RATE_WINDOW_S
    tokens: int


@dataclass(frozen=True, slots=True)
class RateRefusal:
    """A rate limit with no room for the request in the current minute."""

    limit: RateLimit
    kind: str               # "requests" | "tokens"
    used_requests: int      # counted in the current minute (before this request)
    used_tokens: int
    asked_tokens: int
    resets_at: float        # epoch seconds: the end of the current minute
    at: float               # epoch seconds: when it was refused (the ledger's clock)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A budget's config and current standing, amounts in nano-USD."""

    scope: str
    id: str
    limit_nano: int
    period: str
    mode: str
    thresholds: tuple[float, ...]
    spent_nano: int
    reserved_nano: int
    created_at: float | None
    period_start: datetime | None
    resets_at: datetime | None

    @property
    def remaining_nano(self) -> int:
        return max(0, self.limit_nano - self.spent_nano - self.reserved_nano)

    @property
    def percent(self) -> float:
        """Spent as a percentage of the limit, never capped: a soft budget spent 3.24 times over
        shows 324.0. A zero limit has no share to show: 0.0 while nothing is spent, then 100.0
        (used up, as its alerts say: they all fire at the first cost)."""
        if self.limit_nano <= 0:
            return 0.0 if self.spent_nano <= 0 else 100.0
        return round(self.spent_nano * 100 / self.limit_nano, 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "id": self.id,
            "limit_usd": nano_to_usd(self.limit_nano),
            "period": self.period,
            "mode": self.mode,
            "alert_thresholds": list(self.thresholds),
            "spent_usd": nano_to_usd(self.spent_nano),
            "reserved_usd": nano_to_usd(self.reserved_nano),
            "remaining_usd": nano_to_usd(self.remaining_nano),
            "percent": self.percent,
            "period_start": iso_utc(self.period_start),
            "resets_at": iso_utc(self.resets_at),
        }


def split_scope_id(scope: str, scope_id: str, *, scopes: tuple[str, ...]) -> tuple[str, str]:
    """``(project, id inside the project)`` for a scope id: ``acme`` or ``acme/planner``."""
    if scope not in scopes:
        raise ValueError(f"unknown scope {scope!r}: use one of {', '.join(scopes)}")
    if not isinstance(scope_id, str):
        raise ValueError(f"invalid {scope} id {scope_id!r}")
    if scope == "project":
        return check_id(scope_id, "project"), scope_id
    project, slash, local = scope_id.partition("/")
    if not slash:
        raise ValueError(f"invalid {scope} id {scope_id!r}: write it as PROJECT/{scope.upper()}, e.g. acme/planner")
    check_id(project, "project")
    if scope == "model":
        if not local or len(local) > MAX_MODEL_LENGTH:
            raise ValueError(f"invalid model id {scope_id!r}: write it as PROJECT/MODEL")
    else:
        check_id(local, scope)
    return project, local


def public_id(scope: str, project: str, local: str) -> str:
    return project if scope == "project" else f"{project}/{local}"


def check_thresholds(thresholds: object) -> tuple[float, ...]:
    if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__iter__"):
        raise ValueError(f"alert thresholds must be a list of fractions such as [0.5, 0.8, 1.0], not {thresholds!r}")
    out = set()
    for t in thresholds:  # type: ignore[union-attr]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 < t <= MAX_THRESHOLD:
            raise ValueError(f"invalid alert threshold {t!r}: use fractions of the limit above 0 "
                             f"and at most {MAX_THRESHOLD:g} (0.8 = 80 %)")
        out.add(float(t))
    return tuple(sorted(out))
