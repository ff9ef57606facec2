"""What both of farebox's servers do at their edge, in one place and the same way.

``proxy.http.front`` (farebox's own HTTP/1.1 server) and ``proxy.http.app`` (aiohttp's
middleware) each take an ``Edge`` and use it for:

- the request id (``new_request_id``), sent back as ``X-Request-Id`` on every answer (an
  upstream's own id, when it sent one, is passed on as ``X-Upstream-Request-Id``);
- the checks on a request's headers before anything else runs: a credential or an attribution
  id given twice, a header value to forward that is not ASCII (``check_head``, ``check_forwarded``);
- an error's answer (``render``: status, headers, body in the API family's ``ErrorShape``);
- an unexpected exception (``crashed``): logged once with its traceback, answered as an
  ``InternalError`` (500, ``server_error`` / ``internal_error``);
- the access log (``access``): one line per request on the ``farebox.access`` logger.

``ProtocolLog`` is the logger aiohttp's server is given: a malformed request becomes one
WARNING line, rate-limited, rather than an ERROR with a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from proxy.domain import ID_PATTERN
from proxy.errors import DuplicateHeader, FareboxError, InternalError, InvalidHeaderValue, render_error, shape_of
from proxy.ratelimited import RateLimitedLog
from proxy.upstream.relay import HOP_BY_HOP

__all__ = ["Edge", "ProtocolLog", "new_request_id", "family_of", "ACCESS_LOGGER", "BODY_TIMEOUT_S"]

ACCESS_LOGGER = "farebox.access"
BODY_TIMEOUT_S = 60.0  # a request body must arrive whole within this long of its head, on either server
_CREDENTIALS = ("Authorization", "x-api-key")
_MAX_LOGGED_PATH = 200
_MAX_LOGGED_ID = 128


def new_request_id() -> str:
    """A uuid4 in its 32-hex-digit form (version 4, RFC 4122 variant), made from the random
    bytes directly: building a ``uuid.UUID`` first costs three times as much, on every request."""
    data = bytearray(os.urandom(16))
    data[6] = data[6] & 0x0F | 0x40  # version 4
    data[8] = data[8] & 0x3F | 0x80  # variant RFC 4122
    return data.hex()


def _printable(text: str, limit: int) -> str:
    """``text`` safe for one log line: ASCII, no control characters, at most ``limit`` characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isascii() and text.isprintable():
        return text
    return ascii(text)[1:-1]


_ANTHROPIC_ROOT = "/v1/messages"


def family_of(path: str) -> str:
    """The API family whose clients ask for ``path`` (no query string): "anthropic" for
    ``/v1/messages`` and below it, else "openai"."""
    if path.startswith(_ANTHROPIC_ROOT) and (len(path) == len(_ANTHROPIC_ROOT) or path[len(_ANTHROPIC_ROOT)] == "/"):
        return "anthropic"
    return "openai"


class Edge:
    """The edge both servers share (see the module docstring)."""

    __slots__ = ("log", "access_log", "project_header", "body_timeout_s", "_single", "_kept")

    new_request_id = staticmethod(new_request_id)

    def __init__(self, *, project_header: str = "X-Project-Id", agent_header: str = "X-Agent-Id",
                 session_header: str = "X-Session-Id",
                 log: logging.Logger | None = None, access_log: logging.Logger | None = None,
                 body_timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.body_timeout_s = body_timeout_s  # for bodies aiohttp reads (farebox's own server has its Limits)
        self.log = log or logging.getLogger("farebox")
        self.access_log = access_log or logging.getLogger(ACCESS_LOGGER)
        self.project_header = project_header
        # Headers a request may carry at most once; the credentials first (their own error code).
        self._single = (*_CREDENTIALS, project_header, agent_header, session_header)
        # Headers never forwarded upstream (their values are farebox's to judge, or dropped).
        self._kept = HOP_BY_HOP | {project_header.lower(), agent_header.lower(), session_header.lower()}

    # checks before the request is served

    def check_head(self, headers: Any) -> None:
        """Refuse (400) a credential or an attribution header given more than once (in any
        letter case): which value counts would differ between farebox and the upstream."""
        for name in self._single:
            if len(headers.getall(name, ())) > 1:
                if name in _CREDENTIALS:
                    raise DuplicateHeader(f"The {name} header is given more than once; send one credential.",
                                          param=name, code="duplicate_credentials")
                raise DuplicateHeader(f"The {name} header is given more than once; send it once.", param=name)

    def check_forwarded(self, headers: Iterable[tuple[str, str]]) -> None:
        """Refuse (400) a header to be forwarded upstream whose value is not ASCII."""
        kept = self._kept
        for name, value in headers:
            if not value.isascii() and name.lower() not in kept:
                raise InvalidHeaderValue(f"The {_printable(name, 64)} header's value holds bytes outside ASCII; "
                                         "farebox forwards ASCII header values only.", param=name)

    # answers

    def render(self, exc: FareboxError, request_id: str | None, path: str = "") -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body answering ``exc`` to a request for ``path``: in Anthropic's
        error shape under ``/v1/messages``, OpenAI's elsewhere."""
        return render_error(exc, request_id, shape_of(family_of(path)))

    def crashed(self, request_id: str | None) -> InternalError:
        """Log the exception being handled, with its traceback; the error to answer with.
        Call it inside the ``except`` block."""
        self.log.exception("request %s failed", request_id)
        return InternalError(request_id)

    # access log

    def access(self, method: str, path: str, status: int, headers: Mapping[str, str] | None,
               request_id: str | None, started: float, answer_id: str | None = None) -> None:
        """One line on ``farebox.access``: method, path (no query string), status, the project the
        request named, request id, the provider's request id when the answer carried one
        (``answer_id``: the provider's request id, ``X-Upstream-Request-Id``, when it sent one), duration in ms
        (``started``: its ``time.perf_counter()``). Nothing is formatted when the logger does not
        take INFO."""
        access_log = self.access_log
        if not access_log.isEnabledFor(logging.INFO):
            return
        project = headers.get(self.project_header) if headers is not None else None
        if project is None:
            project = "-"
        elif not ID_PATTERN.fullmatch(project):
            project = "(invalid)"
        ms = (time.perf_counter() - started) * 1000
        upstream = (f" upstream_request_id={_printable(answer_id, _MAX_LOGGED_ID).replace(' ', '_')}"
                    if answer_id and answer_id != request_id else "")
        line = (f"{method} {_printable(path, _MAX_LOGGED_PATH)} {status} project={project} "
                f"request_id={request_id or '-'}{upstream} duration_ms={ms:.1f}")
        # The record made directly: ``info()`` would also look up its caller's frame, a third of the cost.
        access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, line, None, None))


class ProtocolLog:
    """The logger aiohttp's server is given (``AppRunner(logger=...)``). A malformed request
    (aiohttp's ``HttpProcessingError``: it answers 400 itself) is one WARNING line, throttled;
    anything else is logged as aiohttp asks, on ``log``."""

    __slots__ = ("log", "malformed")

    def __init__(self, log: logging.Logger, *, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.malformed = RateLimitedLog(log, interval_s=interval_s, clock=clock,
                                       held_note=" (%d more left out of the log)")

    def exception(self, message: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            reason = " ".join(str(exc.message).split())
            peer = args[0] if args and message.endswith("%s") else "?"
            self.malformed.warning("malformed request from %s: %s", peer, _printable(reason, 200))
            return
        self.log.exception(message, *args, exc_info=exc_info, **kwargs)

    def __getattr__(self, name: str) -> Any:  # debug, warning, error, ... as the logger has them
        return getattr(self.log, name)
