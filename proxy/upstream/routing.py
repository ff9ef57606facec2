"""Which upstream serves a request: the upstreams farebox knows and the choice between them.

Each API family has a default upstream: ``upstream`` for the OpenAI family (chat completions,
responses, embeddings, completions), ``anthropic_upstream`` for Anthropic's Messages API. A
request goes to its family's default; ``pick`` is where the choice is made, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from proxy.settings import Settings
from proxy.upstream.kinds import AnthropicKind, OpenAIKind
from proxy.upstream.relay import Upstream

__all__ = ["Upstreams", "FAMILIES"]

FAMILIES = ("openai", "anthropic")


class Upstreams:
    """The upstreams of one application, each with its own connection pool."""

    def __init__(self, defaults: dict[str, Upstream]) -> None:
        missing = [family for family in FAMILIES if family not in defaults]
        if missing:
            raise ValueError(f"no default upstream for {', '.join(missing)}")
        self._defaults = defaults

    @classmethod
    def from_settings(cls, settings: Settings, *, drop_headers: Iterable[str] = ()) -> Upstreams:
        drop = tuple(drop_headers)
        common: dict[str, Any] = dict(timeout_s=settings.upstream_timeout_s,
                                      connect_timeout_s=settings.upstream_connect_timeout_s,
                                      max_connections=settings.upstream_max_connections, drop_headers=drop)
        openai_key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        anthropic_key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        return cls({
            "openai": Upstream(settings.upstream, kind=OpenAIKind(settings.upstream, openai_key), **common),
            "anthropic": Upstream(settings.anthropic_upstream,
                                  kind=AnthropicKind(settings.anthropic_upstream, anthropic_key), **common),
        })

    def all(self) -> list[Upstream]:
        return list(self._defaults.values())

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
        """The upstream a request of ``family`` for ``model`` goes to."""
        return self._defaults[family]

    def describe(self) -> list[dict[str, Any]]:
        """What the status page says of each upstream (never a secret)."""
        return [{"name": u.name, **u.describe()} for u in self.all()]
