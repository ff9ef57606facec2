"""farebox keys on the data plane: which key a request presents, whether it may, and who pays.

A ``fbk_`` credential (``Authorization: Bearer fbk_...``, ``x-api-key: fbk_...`` or Azure's
``api-key: fbk_...``) is always
farebox's to judge and never crosses to an upstream (``proxy.upstream.relay`` strips it; the
upstream gets farebox's own key for it, and a request whose upstream has none is refused
rather than sent without credentials). A key decides the request's project, and its agent
when it is pinned to one; a header naming another is a 403, and so is a model outside the
key's ``models``. An unknown, revoked or expired key is a 401 (``invalid_api_key``).

``KeyResolver`` remembers resolved keys (and projects' rate limits) in the process, so a request
costs no Redis round trip once its key is known. What it remembers is trusted only while its last look at the keys'
change counter (which every revoke and rotate moves) began less than ``TRUST_S`` ago; it looks
every ``POLL_S``. So a revoked key stops working on every process within ``TRUST_S`` plus one
Redis round trip, and when the counter cannot be read a key is read from Redis again.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import translate
from typing import Any

import orjson

from proxy.attribute import attribute, attribute_key
from proxy.control.keys import key_id_of, secret_hash
from proxy.domain import Attribution, RateLimit, farebox_credential, iso_utc
from proxy.errors import FareboxError, Forbidden, LedgerUnavailable, Unauthorized
from proxy.settings import Settings

__all__ = ["KeyAuth", "KeyResolver", "ResolvedKey", "NoUpstreamKey", "farebox_secret", "POLL_S", "TRUST_S"]

log = logging.getLogger("farebox")

POLL_S = 0.25      # how often the keys' change counter is read
TRUST_S = 0.75     # how long after a look at the counter began what the process remembers is used
CACHE_SIZE = 10_000


class NoUpstreamKey(FareboxError):
    """A request with a farebox key goes to an upstream farebox holds no key for."""

    status = 500
    type = "server_error"
    code = "upstream_key_missing"


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """A working key, as the request path needs it."""

    id: str
    project: str
    agent: str | None
    models: tuple[str, ...] | None
    expires_at: float | None
    allows: Callable[[str], Any] | None   # a compiled match of ``models``; None: every model
    limit: RateLimit | None = None        # its requests and tokens per minute, if it has any

    def allowed(self, model: str) -> bool:
        return self.allows is None or self.allows(model) is not None


def farebox_secret(headers: Mapping[str, str]) -> str | None:
    """The farebox key a request presents (``Authorization: Bearer fbk_...`` first, then
    ``x-api-key: fbk_...``, then Azure's ``api-key: fbk_...``; ``proxy.domain.farebox_credential``
    reads each), or None."""
    for name in ("Authorization", "x-api-key", "api-key"):
        value = headers.get(name)
        if value is not None:
            secret = farebox_credential(value)
            if secret is not None:
                return secret
    return None


def _resolved(key_id: str, secret: str, record: dict[str, str] | None) -> ResolvedKey | str:
    """The key, or why it does not work (the 401's message)."""
    if record is None or not hmac.compare_digest(secret_hash(secret), record.get("hash", "")):
        return "Invalid farebox key: no such key (check that it was copied whole)."
    if record.get("revoked_at"):
        return "This farebox key was revoked."
    models = tuple(orjson.loads(record["models"])) if record.get("models") else None
    allows = re.compile("|".join(f"(?:{translate(p)})" for p in models)).match if models else None
    expires = record.get("expires_at")
    rpm, tpm = record.get("rpm"), record.get("tpm")
    limit = RateLimit("key", key_id, int(rpm) if rpm else None, int(tpm) if tpm else None) if rpm or tpm else None
    return ResolvedKey(id=key_id, project=record["project"], agent=record.get("agent") or None, models=models,
                       expires_at=float(expires) if expires else None, allows=allows, limit=limit)


class KeyResolver:
    """Secrets to keys, and projects to their rate limits, remembered in the process and
    forgotten when the keys or limits change."""

    def __init__(self, ledger: Any, *, fail_open: bool = False, clock: Callable[[], float] = time.monotonic,
                 poll_s: float = POLL_S, trust_s: float = TRUST_S, size: int = CACHE_SIZE) -> None:
        self.ledger = ledger
        self.fail_open = fail_open
        self.clock, self.poll_s, self.trust_s, self.size = clock, poll_s, trust_s, size
        self._entries: dict[str, ResolvedKey | str] = {}
        self._limits: dict[str, RateLimit | None] = {}   # project -> its rate limit, if any
        self._version: int | None = None
        self._checked_at = float("-inf")   # when the last successful look at the counter began
        self._generation = 0               # moves whenever the entries are dropped

    def __len__(self) -> int:
        """How many secrets are remembered (at most ``size``)."""
        return len(self._entries)

    async def resolve(self, secret: str) -> ResolvedKey | str:
        """The key ``secret`` opens, or why it opens none."""
        entry = self._entries.get(secret)
        if entry is not None and self.clock() - self._checked_at < self.trust_s:
            return entry
        return await self._read(secret, entry)

    async def _read(self, secret: str, known: ResolvedKey | str | None) -> ResolvedKey | str:
        key_id = key_id_of(secret)
        if key_id is None:
            return "Invalid farebox key: it is not in the form farebox issues (fbk_ and 59 characters)."
        generation = self._generation
        try:
            record = await self.ledger.key_record(key_id)
        except LedgerUnavailable:
            if self.fail_open and known is not None:
                return known   # fail_mode open: the key as last seen, while Redis cannot say otherwise
            raise
        found = _resolved(key_id, secret, record)
        if generation == self._generation:   # no change of the keys was seen meanwhile
            if len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
            self._entries[secret] = found
        return found

    async def project_limit(self, project: str) -> RateLimit | None:
        """``project``'s rate limit (None: it has none), remembered like keys: a change is seen
        on every process within ``trust_s`` plus one Redis round trip."""
        limits = self._limits
        if project in limits and self.clock() - self._checked_at < self.trust_s:
            return limits[project]
        generation = self._generation
        try:
            rpm, tpm = await self.ledger.project_limits(project)
        except LedgerUnavailable:
            if self.fail_open:
                return limits.get(project)   # as last seen, or none, while Redis cannot say
            raise
        found = RateLimit("project", project, rpm, tpm) if rpm is not None or tpm is not None else None
        if generation == self._generation:
            if len(limits) >= self.size:
                del limits[next(iter(limits))]
            limits[project] = found
        return found

    def forget(self) -> None:
        """Drop every remembered key and limit (this process changed one)."""
        self._entries.clear()
        self._limits.clear()
        self._generation += 1

    async def check(self) -> None:
        """Read the keys' change counter; drop what is remembered when it moved."""
        began = self.clock()
        version = await self.ledger.keys_version()
        if version != self._version:
            self.forget()
            self._version = version
        self._checked_at = max(self._checked_at, began)

    async def watch_forever(self) -> None:
        """``check`` every ``poll_s`` until cancelled (a task of the server's). A cancel that
        arrives while Redis is being read may come out of the Redis client as an error of its
        own: the watch still stops."""
        task = asyncio.current_task()
        while True:
            try:
                await self.check()
            except LedgerUnavailable:
                pass   # what is remembered stops being trusted after trust_s; keys are read again
            except Exception:  # a bug: logged, and the watch goes on
                log.exception("checking farebox keys for changes failed")
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(self.poll_s)


def _expired_at(expires_at: float) -> str:
    return iso_utc(datetime.fromtimestamp(expires_at, timezone.utc)) or ""


class KeyAuth:
    """Step 2 of the flow with farebox keys: ``auth = "passthrough"`` attributes a request
    without a key by its headers, ``auth = "keys"`` refuses it (401)."""

    __slots__ = ("settings", "resolver", "upstream_for", "wall", "require")

    def __init__(self, settings: Settings, resolver: KeyResolver, upstream_for: Callable[[str, str | None], Any],
                 *, wall: Callable[[], float] = time.time) -> None:
        self.settings, self.resolver, self.upstream_for, self.wall = settings, resolver, upstream_for, wall
        self.require = settings.auth == "keys"

    async def attribute(self, headers: Mapping[str, str], family: str, model: str | None, *,
                        upstream: bool = True) -> tuple[Attribution, RateLimit | None]:
        """Who a metered request is charged to and its key's rate limit (None: no key, or a key
        without one), or the 401/403 that refuses it. ``upstream``: False for a request that
        goes to no upstream (a usage record), which needs no provider key of farebox's."""
        secret = farebox_secret(headers)
        if secret is None:
            if self.require:
                raise _missing()
            return attribute(headers, self.settings), None
        key = await self.key(secret, family, model, upstream=upstream)
        return attribute_key(headers, self.settings, key), key.limit

    async def rate_limits(self, who: Attribution, key_limit: RateLimit | None) -> tuple[RateLimit, ...]:
        """The rate limits a request of ``who`` counts on: its project's, then its key's."""
        project_limit = await self.resolver.project_limit(who.project)
        if project_limit is None:
            return () if key_limit is None else (key_limit,)
        return (project_limit,) if key_limit is None else (project_limit, key_limit)

    async def admit(self, headers: Mapping[str, str], family: str, model: str | None) -> None:
        """The same checks for a request passed through unmetered (which needs no project)."""
        secret = farebox_secret(headers)
        if secret is None:
            if self.require:
                raise _missing()
            return
        attribute_key(headers, self.settings, await self.key(secret, family, model))

    async def key(self, secret: str, family: str, model: str | None, *, upstream: bool = True) -> ResolvedKey:
        """The working key of ``secret`` allowed ``model``, its upstream holding a key of farebox's."""
        found = await self.resolver.resolve(secret)
        if isinstance(found, str):
            raise Unauthorized(found, code="invalid_api_key")
        if found.expires_at is not None and self.wall() >= found.expires_at:
            raise Unauthorized(f"This farebox key expired at {_expired_at(found.expires_at)}.", code="invalid_api_key")
        if model is not None and not found.allowed(model):
            raise Forbidden(f"This farebox key may not use model '{model}': it allows "
                            f"{', '.join(found.models or ())}.", param="model", code="model_not_allowed")
        if not upstream:
            return found
        target = self.upstream_for(family, model)
        if not target.kind.has_own_key:
            raise NoUpstreamKey(f"farebox holds no API key for the upstream '{target.name}' ({target.base_url}), "
                                "and a farebox key is never sent upstream: configure one (upstream_api_key, "
                                "anthropic_api_key, or api_key_env of the [[upstreams]] entry).")
        return found


def _missing() -> Unauthorized:
    return Unauthorized("This farebox requires a farebox key: send Authorization: Bearer fbk_... "
                        "(or x-api-key: fbk_...).", code="missing_api_key")
