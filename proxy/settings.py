"""Settings: one validated object built from flags, the environment and a config file.

Precedence, highest first: command-line flags, environment (``FAREBOX_<NAME>`` and
``REDIS_URL``), the config file (``--config`` / ``FAREBOX_CONFIG``, TOML or JSON), defaults.
A bad value anywhere becomes one line naming the setting (``SettingsError``), which the CLI
prints before exiting with status 2.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator

from pricing.resources import parse_resource_prices
from proxy.control.mail import SmtpServer, check_address
from proxy.domain import ID_PATTERN
from proxy.upstream_settings import UpstreamConfig, check_names, missing_key_env

__all__ = ["Settings", "SettingsError", "UpstreamConfig", "load_settings", "DEFAULT_UPSTREAM",
           "DEFAULT_ANTHROPIC_UPSTREAM"]

DEFAULT_UPSTREAM = "https://api.openai.com/v1"
DEFAULT_ANTHROPIC_UPSTREAM = "https://api.anthropic.com"
# Headers coding agents send with a session id of their own (Claude Code, Codex).
DEFAULT_CLIENT_SESSION_HEADERS = ["x-claude-code-session-id", "session-id"]
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024  # 10 MiB
# Ids are safe inside Redis keys, metric labels and the PROJECT/AGENT form.
DEFAULT_LEASE_REQUESTS = 32  # a budget lease holds this many times the worst case of the request that asked


_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")  # the header names farebox may be told to read


class SettingsError(ValueError):
    """A setting has a value farebox cannot use; the message names it."""


class FallbackPrice(BaseModel):
    """Price for models the catalog does not know, in USD per million tokens."""

    model_config = ConfigDict(extra="forbid")
    input_per_million_usd: str
    output_per_million_usd: str


class Settings(BaseModel):
    """Everything farebox can be told; see the README's configuration table."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    upstream: str = DEFAULT_UPSTREAM
    upstream_api_key: SecretStr | None = None
    anthropic_upstream: str = DEFAULT_ANTHROPIC_UPSTREAM   # Anthropic's Messages API (POST /v1/messages)
    anthropic_api_key: SecretStr | None = None
    # More upstreams, routed to by model (the config file's [[upstreams]]; proxy.upstream_settings).
    upstreams: list[UpstreamConfig] = Field(default_factory=list)
    upstream_timeout_s: float = Field(600.0, gt=0)
    upstream_connect_timeout_s: float = Field(10.0, gt=0)
    upstream_max_connections: int = Field(1000, ge=1)   # per process; more requests wait for a free one
    redis_url: str | None = None
    redis_cluster: bool = False                   # redis_url names a node of a Redis Cluster (as redis+cluster://)
    redis_prefix: str = Field("fb", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    data_dir: Path = Path(".farebox")
    admin_token: SecretStr | None = None
    admin_read_token: SecretStr | None = None    # the admin API's GET routes only (403 on writes)
    # "passthrough": a request without a farebox key is attributed by its headers and forwards the
    # client's credential; "keys": every data-plane request needs a farebox key.
    auth: Literal["passthrough", "keys"] = "passthrough"
    metrics_token: SecretStr | None = None
    metrics_project_labels: bool = False          # a project label on metrics (one series per project)
    default_project: str | None = None
    project_header: str = "X-Project-Id"
    agent_header: str = "X-Agent-Id"
    session_header: str = "X-Session-Id"
    # Read for the session, in order, when the session header is absent.
    client_session_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_CLIENT_SESSION_HEADERS))
    default_agent: str = "default"
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, gt=0)
    price_files: list[Path] = Field(default_factory=list)
    model_aliases: dict[str, str] = Field(default_factory=dict)
    unknown_model_price: FallbackPrice | None = None
    # Compute resources' prices over the defaults (pricing.resources): {"gpu": {"unit", "usd_per_unit"}}, null removes.
    resource_prices: dict[str, Any] = Field(default_factory=dict)
    fail_mode: Literal["closed", "open"] = "closed"
    clamp_max_tokens: bool = True
    min_output_tokens: int = Field(256, ge=1)
    default_max_output_tokens: int = Field(4096, ge=1)
    hold_ttl_s: float = Field(30.0, ge=1, le=3600)   # a hold lapses this long after its process's last renewal
    budget_lease_requests: int = Field(DEFAULT_LEASE_REQUESTS, ge=0)   # 0: every request reserved on its own
    stream_maxlen: int = Field(50_000, ge=0)      # events kept per project (about 15 MB); 0: every event
    stream_max_age_s: int = Field(0, ge=0)        # 0: events are kept by length only
    alert_webhook_urls: list[str] = Field(default_factory=list)   # each alert is POSTed to every one
    alert_webhook_secret: SecretStr | None = None                 # signs the alert bodies (HMAC-SHA256)
    alert_max_attempts: int = Field(5, ge=1, le=20)
    alert_retry_base_s: float = Field(0.5, gt=0, le=60)           # first wait between attempts; doubles
    alert_timeout_s: float = Field(5.0, gt=0)                     # per attempt
    # Alert e-mails (to each budget's alert_emails): smtp://, smtp+starttls:// or smtps://, see proxy.control.mail.
    smtp_url: SecretStr | None = None
    smtp_from: str = "farebox@localhost"                          # the sender of alert e-mails
    # How long usage aggregates live after their last write, per period (0 = forever).
    ttl_hour_s: int = Field(48 * 3600, ge=0)
    ttl_day_s: int = Field(400 * 86400, ge=0)
    ttl_week_s: int = Field(400 * 86400, ge=0)
    ttl_month_s: int = Field(5 * 365 * 86400, ge=0)
    # A session idle this long loses its aggregates and ranking entries, whatever their period (0: never).
    ttl_session_s: int = Field(20 * 86400, ge=0)
    # How long a settled request is remembered after the last settle of its ten minutes (exactly once).
    idempotency_window_s: int = Field(900, ge=60)
    session_ranking_size: int = Field(100, ge=0)  # sessions kept per ranking of sessions by cost; 0: every one
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The usage of record (proxy/record/): unset, nothing changes.
    postgres_url: SecretStr | None = None
    sink_in_serve: bool = True                    # each `farebox serve` process also runs a sink
    sink_process: bool = True                     # ... as a child process (false: on its event loop)
    sink_nice: int = Field(10, ge=0, le=19)       # the child's CPU priority: this much nicer than serve's
    # While the host's CPUs are busy, a sink waits as long as its oldest event not yet stored is younger (0: never).
    sink_defer_busy_s: float = Field(30.0, ge=0, le=3600)
    sink_batch: int = Field(1000, ge=1, le=100_000)     # events read per stream and call
    sink_claim_idle_s: float = Field(30.0, gt=0)  # events left pending this long by a sink are taken over
    # While the sink is on, the length a stream may reach before its oldest events go even if
    # PostgreSQL does not have them yet (memory's safety cap); trimming is otherwise the sink's.
    sink_stream_cap: int = Field(5_000_000, ge=1000)

    @field_validator("upstream", "anthropic_upstream")
    @classmethod
    def _upstream_is_http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, e.g. https://api.openai.com/v1")
        return value.rstrip("/")

    @field_validator("upstreams")
    @classmethod
    def _upstream_names(cls, value: list[UpstreamConfig]) -> list[UpstreamConfig]:
        return check_names(value)

    @field_validator("client_session_headers", mode="before")
    @classmethod
    def _header_list(cls, value: Any) -> Any:
        """The environment's form: names separated by commas (empty: none)."""
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("alert_webhook_urls", mode="before")
    @classmethod
    def _webhook_list(cls, value: Any) -> Any:
        """The environment's form: a JSON list, or URLs separated by commas."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a valid JSON list ({exc.msg})") from None
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @field_validator("alert_webhook_urls")
    @classmethod
    def _webhooks_are_http(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.fullmatch(r"https?://[^/\s?#]+(/\S*)?", url):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_form(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        SmtpServer.from_url(value.get_secret_value())   # ValueError: says what to write
        return value

    @field_validator("smtp_from")
    @classmethod
    def _smtp_from_form(cls, value: str) -> str:
        if not check_address(value):
            raise ValueError(f"{value!r} is not an e-mail address such as farebox@example.com")
        return value

    @field_validator("resource_prices")
    @classmethod
    def _resource_prices_form(cls, value: dict[str, Any]) -> dict[str, Any]:
        parse_resource_prices(value)   # ValueError: names the entry
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.match(r"^(redis|rediss|unix|redis\+cluster)://", value):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+cluster://")
        if value.startswith("redis+cluster://"):
            _check_cluster_url(value)
        return value

    @field_validator("redis_cluster")
    @classmethod
    def _cluster_needs_url(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not (info.data.get("redis_url") or "").startswith(("redis://", "redis+cluster://")):
            raise ValueError("needs redis_url set to a node of the cluster, e.g. redis://10.0.0.5:6379")
        return value

    @property
    def redis_target(self) -> str | None:
        """The Redis to open: ``redis_url``, written ``redis+cluster://`` when ``redis_cluster``
        says it names a node of a Redis Cluster; None for the embedded one."""
        url = self.redis_url
        if url and self.redis_cluster and url.startswith("redis://"):
            return "redis+cluster://" + url.removeprefix("redis://").split("/", 1)[0]
        return url

    @field_validator("postgres_url", mode="before")
    @classmethod
    def _postgres_url_scheme(cls, value: Any) -> Any:
        if value in (None, ""):
            return None
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str) or not re.match(r"^postgres(ql)?://", raw):
            raise ValueError("must start with postgresql:// or postgres://")
        return value

    @field_validator("default_project")
    @classmethod
    def _default_project_form(cls, value: str | None) -> str | None:
        if value is not None and not ID_PATTERN.fullmatch(value):
            raise ValueError("must be 1-128 characters of letters, digits and . _ - @")
        return value

    @field_validator("default_agent")
    @classmethod
    def _default_agent_form(cls, value: str) -> str:
        if not ID_PATTERN.fullmatch(value):
            raise ValueError("must be 1-128 characters of letters, digits and . _ - @")
        return value

    @field_validator("project_header", "agent_header", "session_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.fullmatch(value):
            raise ValueError("must be an HTTP header name (letters, digits, -)")
        return value

    @field_validator("client_session_headers")
    @classmethod
    def _header_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an HTTP header name (letters, digits, -)")
        return value

    @property
    def reservation_deadline_s(self) -> float:
        """How long a reservation holds budget unless renewed: its process renews the holds it
        still has in flight every third of this, so only a dead process's holds lapse."""
        return self.hold_ttl_s


def _check_cluster_url(url: str) -> None:
    from proxy.ledger.cluster import parse_cluster_url  # noqa: PLC0415 - only for this form

    try:
        parse_cluster_url(url)
    except ValueError as exc:
        raise ValueError(f"not a Redis Cluster URL (redis+cluster://host:port[,host:port...]): {exc}") from None


# Settings whose environment variable is not FAREBOX_<NAME>.
_ENV_ALIASES = {"redis_url": ("REDIS_URL", "FAREBOX_REDIS_URL")}
_STRUCTURED = {"price_files", "model_aliases", "unknown_model_price", "upstreams", "resource_prices"}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        for var in _ENV_ALIASES.get(name, (f"FAREBOX_{name.upper()}",)):
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            if name in _STRUCTURED:
                if name == "price_files" and not raw.lstrip().startswith("["):
                    values[name] = [p for p in raw.split(os.pathsep) if p]
                    break
                try:
                    values[name] = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise SettingsError(f"invalid setting {var}: not valid JSON ({exc.msg})") from None
            else:
                values[name] = raw
            break
    return values


def _from_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"invalid setting config: cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"invalid setting config: {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"invalid setting config: {path} must hold a table of settings")
    table = data.get("farebox", data)  # a [farebox] table or top-level keys
    if not isinstance(table, dict):
        raise SettingsError(f"invalid setting config: {path}: farebox must be a table of settings")
    if table is not data and "upstreams" in data and "upstreams" not in table:
        table = {**table, "upstreams": data["upstreams"]}  # [[upstreams]] beside a [farebox] table
    data = dict(table)
    base = path.parent
    if "price_files" in data and isinstance(data["price_files"], list):
        data["price_files"] = [str((base / p)) if not Path(p).is_absolute() else p for p in data["price_files"]]
    return data


def load_settings(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                  config_file: str | Path | None = None) -> Settings:
    """Build Settings from flags (None values ignored), environment and config file."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config_file = config_file or flags.pop("config", None) or env.get("FAREBOX_CONFIG")
    merged: dict[str, Any] = {}
    if config_file:
        merged.update(_from_file(Path(config_file)))
    merged.update(_from_env(env))
    merged.update(flags)
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        raise SettingsError(f"invalid setting {where}: {msg}") from None
    problem = missing_key_env(settings.upstreams, env)
    if problem is not None:
        raise SettingsError(f"invalid setting {problem}")
    return settings
