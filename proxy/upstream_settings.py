"""The ``[[upstreams]]`` entries of the config file: upstreams beyond each API family's default,
each routed to by model.

An entry names its upstream (the ``upstream`` of events and metrics), its API (``openai`` for
OpenAI and OpenAI-compatible servers such as vLLM, Ollama or OpenRouter; ``azure``;
``anthropic``), its URL, the glob patterns of the models it serves, and where farebox's key
for it is: ``api_key_env``, the name of an environment variable (the key itself never sits in
the config file; without one the client's credential is forwarded). A bad value is a
``ValueError`` that ``proxy.settings`` turns into one line naming the setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.domain import ID_PATTERN

__all__ = ["UpstreamConfig", "DEFAULT_NAMES", "FAMILY_OF_API", "check_names", "missing_key_env"]

DEFAULT_NAMES = ("openai", "anthropic")
"""The names of the families' defaults (``upstream``, ``anthropic_upstream``): no entry takes them."""

FAMILY_OF_API = {"openai": "openai", "azure": "openai", "anthropic": "anthropic"}
"""The API family (the endpoints) each kind of upstream serves."""

_URL = re.compile(r"https?://[^/\s?#]+(/[^\s?#]*)?")
_API_VERSION = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DEPLOYMENT = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class UpstreamConfig(BaseModel):
    """One ``[[upstreams]]`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    api: Literal["openai", "anthropic", "azure"]
    url: str
    models: list[str] = Field(min_length=1)      # glob patterns (fnmatch), the first entry to match wins
    api_version: str | None = None               # azure: the api-version query parameter
    deployments: dict[str, str] = Field(default_factory=dict)   # azure: model -> deployment
    api_key_env: str | None = None               # the variable holding farebox's key; None: the client's

    @field_validator("name")
    @classmethod
    def _name_form(cls, value: str) -> str:
        if not ID_PATTERN.fullmatch(value):
            raise ValueError("must be 1-128 characters of letters, digits and . _ - @")
        if value in DEFAULT_NAMES:
            raise ValueError(f"'{value}' is the name of the {value} family's default upstream; choose another")
        return value

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        if not _URL.fullmatch(value):
            raise ValueError("must be an http:// or https:// URL without a query, e.g. http://10.0.0.5:8000/v1")
        return value.rstrip("/")

    @field_validator("models")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.strip():
                raise ValueError("a model pattern is empty")
        return value

    @field_validator("api_version")
    @classmethod
    def _api_version_form(cls, value: str | None) -> str | None:
        if value is not None and not _API_VERSION.fullmatch(value):
            raise ValueError("must be an API version such as 2024-10-21 (letters, digits, . _ -)")
        return value

    @field_validator("deployments")
    @classmethod
    def _deployment_names(cls, value: dict[str, str]) -> dict[str, str]:
        for model, deployment in value.items():
            if not model:
                raise ValueError("a model name is empty")
            if not _DEPLOYMENT.fullmatch(deployment):
                raise ValueError(f"{deployment!r} (for {model!r}) is not a deployment name "
                                 "(1-64 letters, digits, . _ -)")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError("must be the name of an environment variable (letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _azure_fields(self) -> UpstreamConfig:
        if self.api == "azure":
            if self.api_version is None:
                raise ValueError(f"upstream '{self.name}': api_version is required when api is \"azure\"")
        else:
            for field in ("api_version", "deployments"):
                if getattr(self, field):
                    raise ValueError(f"upstream '{self.name}': {field} is for api = \"azure\" only")
        return self

    @property
    def family(self) -> str:
        """The API family whose requests it serves: "openai" (openai and azure) or "anthropic"."""
        return FAMILY_OF_API[self.api]

    def api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        """farebox's key for it, read from ``api_key_env`` (None: the client's credential is
        forwarded). A variable named but not set (or empty) is a ``ValueError`` naming it."""
        if self.api_key_env is None:
            return None
        value = (os.environ if env is None else env).get(self.api_key_env)
        if not value:
            raise ValueError(f"the environment variable {self.api_key_env} is not set")
        return value


def check_names(upstreams: list[UpstreamConfig]) -> list[UpstreamConfig]:
    """The entries, if their names are unique; else a ``ValueError`` naming the repeated one."""
    seen: set[str] = set()
    for upstream in upstreams:
        if upstream.name in seen:
            raise ValueError(f"the name '{upstream.name}' is used by more than one upstream")
        seen.add(upstream.name)
    return upstreams


def missing_key_env(upstreams: list[UpstreamConfig], env: Mapping[str, str]) -> str | None:
    """The first problem with the entries' keys in ``env`` as "upstreams.N.api_key_env: ...", or None."""
    for index, upstream in enumerate(upstreams):
        try:
            upstream.api_key(env)
        except ValueError as exc:
            return f"upstreams.{index}.api_key_env: {exc} (upstream '{upstream.name}')"
    return None
