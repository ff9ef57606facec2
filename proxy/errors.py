"""Errors farebox answers with, and how an API family's clients are shown one.

    FareboxError                      500 internal_error
    ├── InternalError                 500 server_error / internal_error (a bug, answered alike everywhere)
    ├── BadRequest                    400 invalid_request_error
    │   ├── UnknownModel              400 invalid_request_error / model_not_found
    │   ├── InvalidId                 400 invalid_request_error / invalid_id
    │   ├── DuplicateHeader           400 invalid_request_error / duplicate_credentials, duplicate_header
    │   └── InvalidHeaderValue        400 invalid_request_error / invalid_header_value
    ├── Unauthorized                  401 authentication_error
    ├── Forbidden                     403 permission_error
    ├── NotFound                      404 not_found_error
    ├── Conflict                      409 invalid_request_error (a usage hold already settled or released)
    ├── RequestTimeout                408 invalid_request_error / request_timeout
    ├── PayloadTooLarge               413 invalid_request_error / request_too_large
    ├── VersionNotSupported           505 invalid_request_error / http_version_not_supported
    ├── BudgetExceeded                402 budget_exceeded
    ├── RateLimited                   429 rate_limit_exceeded (a key's or project's rpm / tpm)
    ├── LedgerUnavailable             503 service_unavailable (Redis unreachable, fail_mode closed)
    ├── UpstreamUnreachable           502 upstream_unreachable
    └── UpstreamTimeout               504 upstream_timeout

Each class carries its HTTP status and OpenAI ``type``/``code``. ``render_error`` turns one into
status, headers and body with an ``ErrorShape``, the body of one API family: ``openai_shape``
(``{"error": {...}}``) or ``anthropic_shape`` (``{"type": "error", "error": {...}}``), chosen by
``shape_of(family)``.
``proxy.http.edge`` renders for both servers. The upstream client's errors are mapped to these
in ``proxy.upstream.relay``, ``redis.RedisError`` in ``proxy.ledger``, nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

__all__ = [
    "ErrorShape",
    "openai_shape",
    "anthropic_shape",
    "shape_of",
    "render_error",
    "FareboxError",
    "InternalError",
    "BadRequest",
    "UnknownModel",
    "InvalidId",
    "DuplicateHeader",
    "InvalidHeaderValue",
    "RequestTimeout",
    "VersionNotSupported",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "BudgetExceeded",
    "RateLimited",
    "LedgerUnavailable",
    "UpstreamUnreachable",
    "UpstreamTimeout",
]


class FareboxError(Exception):
    """Something went wrong inside farebox."""

    status = 500
    type = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped body (``openai_shape``)."""
        return openai_shape(self)


class InternalError(FareboxError):
    """farebox failed while answering (a bug): logged with its traceback, answered without detail."""

    type = "server_error"
    code = "internal_error"

    def __init__(self, request_id: str | None = None) -> None:
        where = f" (request {request_id})" if request_id else ""
        super().__init__(f"Internal error: farebox failed while answering this request{where}; see its log.")


class BadRequest(FareboxError):
    """The request is malformed or names something farebox cannot accept."""

    status = 400
    type = "invalid_request_error"


class UnknownModel(BadRequest):
    """The model has no price in the catalog and no fallback price is configured."""

    code = "model_not_found"


class InvalidId(BadRequest):
    """A project, agent, session or key id is outside the allowed form."""

    code = "invalid_id"


class DuplicateHeader(BadRequest):
    """A header that must appear once (a credential, an attribution id) came more than once."""

    code = "duplicate_header"


class InvalidHeaderValue(BadRequest):
    """A header value farebox would forward holds bytes outside ASCII."""

    code = "invalid_header_value"


class RequestTimeout(FareboxError):
    """The client did not send its whole request in time."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class VersionNotSupported(FareboxError):
    """A request line naming an HTTP version other than 1.0 or 1.1."""

    status = 505
    type = "invalid_request_error"
    code = "http_version_not_supported"


class Unauthorized(FareboxError):
    """A missing or wrong token."""

    status = 401
    type = "authentication_error"
    code = "invalid_token"


class Forbidden(FareboxError):
    """The caller may not do this (a key used for another project)."""

    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(FareboxError):
    """No such path or object."""

    status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(FareboxError):
    """The object is no longer in a state that allows this (a hold settled, released or expired)."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(FareboxError):
    """The request body is larger than the configured limit."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class BudgetExceeded(FareboxError):
    """A hard budget has no room for this request's worst-case cost."""

    status = 402
    type = "budget_exceeded"
    code = "budget_exceeded"


class RateLimited(FareboxError):
    """A rate limit (requests or tokens per minute, of a farebox key or a project) has no room
    for this request in the current minute."""

    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class LedgerUnavailable(FareboxError):
    """Redis did not answer and fail_mode is closed: usage that cannot be recorded is not served."""

    status = 503
    type = "service_unavailable"
    code = "ledger_unavailable"


class UpstreamUnreachable(FareboxError):
    """The upstream could not be connected to, or dropped the connection."""

    status = 502
    type = "upstream_unreachable"
    code = "upstream_unreachable"


class UpstreamTimeout(FareboxError):
    """The upstream did not answer in time."""

    status = 504
    type = "upstream_timeout"
    code = "upstream_timeout"


ErrorShape = Callable[[FareboxError], dict[str, Any]]
"""The body one API family's clients expect for an error."""


def openai_shape(exc: FareboxError) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code", ...extra}}``, as OpenAI's API answers."""
    error: dict[str, Any] = {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}
    error.update(exc.extra)
    return {"error": error}


# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors); the SDKs
# raise their exception classes by status, and show the type and message.
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 504: "timeout_error"}


def anthropic_shape(exc: FareboxError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message", "code", ...extra}}``, as Anthropic's API
    answers, with farebox's own code and details (a budget's scope, limit, ...) inside ``error``."""
    error: dict[str, Any] = {"type": _ANTHROPIC_TYPES.get(exc.status, "api_error"), "message": exc.message,
                             "code": exc.code}
    if exc.param is not None:
        error["param"] = exc.param
    error.update(exc.extra)
    return {"type": "error", "error": error}


_SHAPES: dict[str, ErrorShape] = {"openai": openai_shape, "anthropic": anthropic_shape}


def shape_of(family: str) -> ErrorShape:
    """The error shape of an API family ("openai" or "anthropic")."""
    return _SHAPES[family]


def render_error(exc: FareboxError, request_id: str | None,
                 shape: ErrorShape = openai_shape) -> tuple[int, dict[str, str], bytes]:
    """The answer for ``exc``: status, headers (the error's own, JSON, the request id), body."""
    headers = {**exc.headers, "Content-Type": "application/json"}
    if request_id:
        headers["X-Request-Id"] = request_id
    return exc.status, headers, orjson.dumps(shape(exc))
