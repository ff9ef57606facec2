"""Kinds of upstream: what differs between providers at the transport, one small class each.

A kind knows its base URL, how a request to it is authenticated, and which content encodings
to ask it for (only ones farebox decodes: ``proxy.upstream.decoding``). Everything else about
talking to an upstream (the pool, header filtering, error mapping) is the same for every kind:
``proxy.upstream.relay.Upstream``.
"""

from __future__ import annotations

from typing import Any, Protocol

from proxy.upstream.decoding import accept_encoding

__all__ = ["UpstreamKind", "OpenAIKind", "AnthropicKind"]


class UpstreamKind(Protocol):
    name: str              # "openai", "anthropic"
    base_url: str          # without a trailing slash; paths such as "/chat/completions" go below it
    accept_encoding: str   # the Accept-Encoding sent upstream

    def authenticate(self, headers: dict[str, str]) -> None:
        """Set the request's credentials in the forwarded ``headers`` (the client's, or farebox's own)."""

    def describe(self) -> dict[str, Any]:
        """What the status page says of it (never a secret)."""


class OpenAIKind:
    """An OpenAI-compatible provider: ``Authorization: Bearer``, the client's key unless one is configured."""

    __slots__ = ("base_url", "_authorization")

    name = "openai"
    # Identity only: a stream must reach the client as soon as each event does, and a
    # compressing server may hold events back to fill its compression blocks.
    accept_encoding = accept_encoding(("identity",))

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._authorization = f"Bearer {api_key}" if api_key is not None else None

    def authenticate(self, headers: dict[str, str]) -> None:
        if self._authorization is not None:
            for name in [k for k in headers if k.lower() == "authorization"]:
                del headers[name]
            headers["Authorization"] = self._authorization

    def describe(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "auth": "replaced" if self._authorization else "passthrough"}


class AnthropicKind:
    """Anthropic's API: the client's credential as it sent it (``x-api-key`` or ``Authorization:
    Bearer``, as the SDKs do), unless farebox has a key of its own, sent as ``x-api-key``."""

    __slots__ = ("base_url", "_api_key")

    name = "anthropic"
    accept_encoding = OpenAIKind.accept_encoding

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key

    def authenticate(self, headers: dict[str, str]) -> None:
        if self._api_key is not None:
            for name in [k for k in headers if k.lower() in ("authorization", "x-api-key")]:
                del headers[name]
            headers["x-api-key"] = self._api_key

    def describe(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "auth": "replaced" if self._api_key else "passthrough"}
