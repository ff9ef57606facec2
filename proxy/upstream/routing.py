"""Which upstream serves a request: the upstreams farebox knows and the choice between them.

Each API family has a default upstream: ``upstream`` for the OpenAI family (chat completions,
responses, embeddings, completions), ``anthropic_upstream`` for Anthropic's Messages API. The
config file's ``[[upstreams]]`` add more, each serving the models its glob patterns match: a
request goes to the first of its family's entries (``azure`` and ``openai`` entries serve the
OpenAI family) whose patterns match the model as the client named it, else to the family's
default. ``pick`` is where the choice is made, and nowhere else.

Model names come from clients, so the decisions kept for them are bounded: at most
``CACHE_SIZE`` (family, model) pairs, the oldest forgotten first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import translate
from typing import Any

from proxy.settings import Settings, SettingsError, UpstreamConfig
from proxy.upstream.kinds import AnthropicKind, AzureKind, OpenAIKind, UpstreamKind
from proxy.upstream.relay import CREDENTIAL_HEADERS, Upstream
from proxy.upstream_settings import missing_key_env

__all__ = ["Upstreams", "Route", "FAMILIES", "CACHE_SIZE", "kind_of"]

FAMILIES = ("openai", "anthropic")
CACHE_SIZE = 4096


class Route:
    """A configured upstream and the models it serves (glob patterns, fnmatch-style, case-sensitive)."""

    __slots__ = ("upstream", "family", "patterns", "_match")

    def __init__(self, upstream: Upstream, family: str, patterns: Sequence[str]) -> None:
        self.upstream, self.family, self.patterns = upstream, family, tuple(patterns)
        self._match = re.compile("|".join(f"(?:{translate(p)})" for p in patterns)).match

    def serves(self, model: str) -> bool:
        return self._match(model) is not None


def kind_of(config: UpstreamConfig, env: Mapping[str, str] | None = None) -> UpstreamKind:
    """The kind of upstream an entry describes, with farebox's key for it when it names one."""
    key = config.api_key(env)
    if config.api == "azure":
        assert config.api_version is not None  # the entry's validation requires it
        return AzureKind(config.url, config.api_version, config.deployments, key)
    if config.api == "anthropic":
        return AnthropicKind(config.url, key)
    return OpenAIKind(config.url, key)


class Upstreams:
    """The upstreams of one application, each with its own connection pool."""

    def __init__(self, defaults: dict[str, Upstream], routes: Iterable[Route] = ()) -> None:
        missing = [family for family in FAMILIES if family not in defaults]
        if missing:
            raise ValueError(f"no default upstream for {', '.join(missing)}")
        self._defaults = defaults
        self._routes = list(routes)
        names = [u.name for u in self.all()]
        if len(set(names)) != len(names):
            raise ValueError(f"upstream names must be unique: {', '.join(names)}")
        # Per family, its routes in order; a family without any is answered by its default at once.
        self._by_family: dict[str, tuple[Route, ...]] = {
            family: tuple(r for r in self._routes if r.family == family) for family in FAMILIES}
        self._chosen: dict[tuple[str, str], Upstream] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, drop_headers: Iterable[str] = (),
                      env: Mapping[str, str] | None = None) -> Upstreams:
        """The defaults and every ``[[upstreams]]`` entry, keys read from ``env`` (the process's
        environment unless given)."""
        env = os.environ if env is None else env
        problem = missing_key_env(settings.upstreams, env)
        if problem is not None:
            raise SettingsError(f"invalid setting {problem}")
        drop = tuple(drop_headers)
        if settings.auth == "keys":   # upstream credentials come only from farebox's configuration
            drop += tuple(CREDENTIAL_HEADERS)
        common: dict[str, Any] = dict(timeout_s=settings.upstream_timeout_s,
                                      connect_timeout_s=settings.upstream_connect_timeout_s,
                                      max_connections=settings.upstream_max_connections, drop_headers=drop)
        openai_key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        anthropic_key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        defaults = {
            "openai": Upstream(settings.upstream, kind=OpenAIKind(settings.upstream, openai_key), **common),
            "anthropic": Upstream(settings.anthropic_upstream,
                                  kind=AnthropicKind(settings.anthropic_upstream, anthropic_key), **common),
        }
        routes = []
        for config in settings.upstreams:
            kind = kind_of(config, env)
            routes.append(Route(Upstream(kind.base_url, kind=kind, name=config.name, **common),
                                config.family, config.models))
        return cls(defaults, routes)

    def all(self) -> list[Upstream]:
        """Every upstream: the defaults first, then the configured ones in their order."""
        return [*self._defaults.values(), *(r.upstream for r in self._routes)]

    async def start(self) -> None:
        for upstream in self.all():
            await upstream.start()

    async def close(self) -> None:
        for upstream in self.all():
            await upstream.close()

    def default(self, family: str) -> Upstream:
        """The upstream of ``family`` ("openai" or "anthropic") for requests that name no model."""
        return self._defaults[family]

    def pick(self, family: str, model: str) -> Upstream:
        """The upstream a request of ``family`` for ``model`` goes to: the first configured one of
        the family whose patterns match ``model``, else the family's default."""
        routes = self._by_family[family]
        if not routes:
            return self._defaults[family]
        key = (family, model)
        chosen = self._chosen.get(key)
        if chosen is None:
            chosen = next((r.upstream for r in routes if r.serves(model)), self._defaults[family])
            if len(self._chosen) >= CACHE_SIZE:
                del self._chosen[next(iter(self._chosen))]   # the oldest decision goes
            self._chosen[key] = chosen
        return chosen

    def describe(self) -> list[dict[str, Any]]:
        """What the status page says of each upstream (never a secret)."""
        out = [{"name": u.name, "family": family, "models": ["*"], **u.describe()}
               for family, u in self._defaults.items()]
        out.extend({"name": r.upstream.name, "family": r.family, "models": list(r.patterns), **r.upstream.describe()}
                   for r in self._routes)
        return out
