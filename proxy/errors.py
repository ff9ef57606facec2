"""Errors farebox answers with, rendered once as OpenAI-shaped error bodies.

    FareboxError                      500 internal_error
    ├── BadRequest                    400 invalid_request_error
    │   ├── UnknownModel              400 invalid_request_error / model_not_found
    │   └── InvalidId                 400 invalid_request_error / invalid_id
    ├── Unauthorized                  401 authentication_error
    ├── Forbidden                     403 permission_error
    ├── NotFound                      404 not_found_error
    ├── PayloadTooLarge               413 invalid_request_error / request_too_large
    ├── BudgetExceeded                402 budget_exceeded
    ├── LedgerUnavailable             503 service_unavailable (Redis unreachable, fail_mode closed)
    ├── UpstreamUnreachable           502 upstream_unreachable
    └── UpstreamTimeout               504 upstream_timeout

Each class carries its HTTP status and OpenAI ``type``/``code``; ``error_response_parts``
renders one for both servers (``proxy.http.app``'s middleware, ``proxy.http.front``). The upstream
client's errors are mapped to these in ``proxy.upstream.relay``, ``redis.RedisError`` in
``proxy.ledger``, nowhere else.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "error_response_parts",
    "FareboxError",
    "BadRequest",
    "UnknownModel",
    "InvalidId",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "BudgetExceeded",
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
        error: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        error.update(self.extra)
        return {"error": error}


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


def error_response_parts(exc: FareboxError, request_id: str | None) -> tuple[int, dict[str, str], bytes]:
    """The answer for ``exc``: status, headers (the error's own, JSON, the request id), body."""
    headers = {**exc.headers, "Content-Type": "application/json"}
    if request_id:
        headers["X-Request-Id"] = request_id
    return exc.status, headers, orjson.dumps(exc.body())
