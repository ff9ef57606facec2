"""Kinds of upstream: what differs between providers at the transport, one small class each.

A kind knows its base URL, the request target a path goes to (Azure's deployments are in the
path, its API version in the query), how a request to it is authenticated, and which content
encodings to ask it for (only ones farebox decodes: ``proxy.upstream.decoding``). Everything
else about talking to an upstream (the pool, header filtering, error mapping) is the same for
every kind: ``proxy.upstream.relay.Upstream``.

A credential farebox holds for a kind lives in a private attribute: ``describe`` says only
whether one replaces the client's, never what it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote

from proxy.upstream.decoding import accept_encoding

__all__ = ["UpstreamKind", "OpenAIKind", "AnthropicKind", "AzureKind", "forwarded_query"]

# What may stay as it is in a query string forwarded upstream (``%`` too: escapes stay escapes).
_QUERY_SAFE = "!#$%&'()*+,/:;=?@[]~"


def forwarded_query(query: str) -> str:
    """The client's raw query string as sent upstream: what is already safe stays byte for byte."""
    return quote(query, safe=_QUERY_SAFE)


def _target(path: str, query: str) -> str:
    return f"{path}?{forwarded_query(query)}" if query else path


def _drop(headers: dict[str, str], *names: str) -> None:
    """Remove every header named in ``names`` (lower case), whatever its letter case."""
    for name in [k for k in headers if k.lower() in names]:
        del headers[name]


class UpstreamKind(Protocol):
    name: str              # "openai", "anthropic", "azure"
    base_url: str          # without a trailing slash; targets such as "/chat/completions" go below it
    accept_encoding: str   # the Accept-Encoding sent upstream

    def target(self, path: str, query: str, model: str | None) -> str:
        """The request target below ``base_url`` for ``path`` (as the OpenAI or Anthropic API names
        it, e.g. "/chat/completions"), the client's raw ``query`` and the ``model`` it names."""

    def authenticate(self, headers: dict[str, str]) -> None:
        """Set the request's credentials in the forwarded ``headers`` (the client's, or farebox's own)."""

    @property
    def has_own_key(self) -> bool:
        """Whether farebox holds a credential of its own for it (else the client's is forwarded)."""

    def describe(self) -> dict[str, Any]:
        """What the status page says of it (never a secret)."""


class OpenAIKind:
    """An OpenAI-compatible provider (OpenAI, vLLM, Ollama, OpenRouter...): ``Authorization:
    Bearer``, the client's key unless one is configured."""

    __slots__ = ("base_url", "_authorization")

    name = "openai"
    # Identity only: a stream must reach the client as soon as each event does, and a
    # compressing server may hold events back to fill its compression blocks.
    accept_encoding = accept_encoding(("identity",))

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._authorization = f"Bearer {api_key}" if api_key is not None else None

    def target(self, path: str, query: str, model: str | None) -> str:
        return _target(path, query)

    def authenticate(self, headers: dict[str, str]) -> None:
        if self._authorization is not None:
            _drop(headers, "authorization")
            headers["Authorization"] = self._authorization

    @property
    def has_own_key(self) -> bool:
        return self._authorization is not None

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

    def target(self, path: str, query: str, model: str | None) -> str:
        return _target(path, query)

    def authenticate(self, headers: dict[str, str]) -> None:
        if self._api_key is not None:
            _drop(headers, "authorization", "x-api-key")
            headers["x-api-key"] = self._api_key

    @property
    def has_own_key(self) -> bool:
        return self._api_key is not None

    def describe(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "auth": "replaced" if self._api_key else "passthrough"}


# The OpenAI paths Azure serves per deployment; the rest (responses, models) sit under /openai
# with the deployment, where one is needed, named by the body's ``model``.
_DEPLOYMENT_PATHS = ("/chat/completions", "/completions", "/embeddings", "/audio/", "/images/")


class AzureKind:
    """Azure OpenAI: a request naming a model goes to its deployment,
    ``{url}/openai/deployments/{deployment}{path}?api-version=...`` (the deployment of
    ``deployments``, else the model's own name), and is authenticated with the ``api-key``
    header: farebox's key when it holds one, else the client's ``api-key``, else the key of the
    client's ``Authorization: Bearer`` (what the OpenAI SDKs send). The client's query string
    follows the API version (an ``api-version`` of its own is dropped: the version is
    farebox's to choose)."""

    __slots__ = ("base_url", "api_version", "deployments", "_version_query", "_api_key")

    name = "azure"
    accept_encoding = OpenAIKind.accept_encoding

    def __init__(self, base_url: str, api_version: str, deployments: Mapping[str, str] | None = None,
                 api_key: str | None = None) -> None:
        base = base_url.rstrip("/")
        self.base_url = base.removesuffix("/openai")   # the resource's endpoint, as the portal shows it
        self.api_version = api_version
        self.deployments = dict(deployments or {})
        self._version_query = f"api-version={quote(api_version, safe='')}"
        self._api_key = api_key

    def deployment(self, model: str) -> str:
        """The deployment serving ``model``: the configured one, else one named like the model."""
        return self.deployments.get(model, model)

    def target(self, path: str, query: str, model: str | None) -> str:
        if model is not None and path.startswith(_DEPLOYMENT_PATHS):
            where = f"/openai/deployments/{quote(self.deployment(model), safe='')}{path}"
        else:
            where = f"/openai{path}"
        if query:
            own = "&".join(p for p in forwarded_query(query).split("&")
                           if p and p.split("=", 1)[0].lower() != "api-version")
            if own:
                return f"{where}?{self._version_query}&{own}"
        return f"{where}?{self._version_query}"

    def authenticate(self, headers: dict[str, str]) -> None:
        if self._api_key is not None:
            _drop(headers, "authorization", "api-key")
            headers["api-key"] = self._api_key
            return
        if any(k.lower() == "api-key" for k in headers):
            _drop(headers, "authorization")   # the key is the credential; a second one would confuse
            return
        for name in [k for k in headers if k.lower() == "authorization"]:
            scheme, _, key = headers[name].partition(" ")
            if scheme.lower() == "bearer" and key.strip():
                del headers[name]
                headers["api-key"] = key.strip()
                return

    @property
    def has_own_key(self) -> bool:
        return self._api_key is not None

    def describe(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "api_version": self.api_version, "deployments": dict(self.deployments),
                "auth": "replaced" if self._api_key else "passthrough"}
