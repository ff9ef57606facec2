"""Reading a request head on farebox's own server (``proxy.http.front``): which heads it answers
itself, which it refuses, which it hands over to aiohttp."""

from __future__ import annotations

import re
from collections.abc import Iterable

from multidict import CIMultiDict

from proxy.errors import BadRequest, FareboxError, VersionNotSupported

__all__ = ["CHAT_PATH", "HAND_OVER", "MAX_FIELDS", "MAX_HEAD_BYTES", "Refusal", "Request", "head_pattern", "read_head"]

MAX_HEAD_BYTES = 8190         # a longer head (request line and fields) is aiohttp's to judge
MAX_FIELDS = 128              # as aiohttp's own limit; more fields go to aiohttp too

CHAT_PATH = "/v1/chat/completions"
_PREFIX = b"POST /v1/"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_VALUE = r"(?:[!-~]+(?:[ \t]+[!-~]+)*)?"
_FIELD = re.compile(rf"({_TOKEN}):[ \t]*({_VALUE})[ \t]*\r\n")


def head_pattern(paths: Iterable[str]) -> re.Pattern[str]:
    """The heads answered here: ``POST`` to one of ``paths`` (each below ``/v1/``), an optional
    query string, HTTP/1.1, printable-ASCII fields. Group 1 is the request line, ``path`` and
    ``query`` (without its ``?``) its parts."""
    alternatives = "|".join(re.escape(path) for path in sorted(paths, key=len, reverse=True))
    return re.compile(rf"(POST (?P<path>{alternatives})(?:\?(?P<query>[!-~]*))? HTTP/1\.1\r\n)"
                      rf"(?:{_TOKEN}:[ \t]*{_VALUE}[ \t]*\r\n)*")


CHAT_ONLY = head_pattern([CHAT_PATH])
_REQUEST_LINE = re.compile(rb"([!-~]+) ([!-~]+) HTTP/(\d)\.(\d)")
_HANDED_OVER = frozenset({"Transfer-Encoding", "Expect", "Upgrade"})


class Request:
    """A head read and checked, waiting for (or with) its body."""

    __slots__ = ("path", "query", "headers", "keep_alive", "body_start", "end")

    def __init__(self, path: str, query: str, headers: CIMultiDict[str], keep_alive: bool, body_start: int,
                 end: int) -> None:
        self.path, self.query = path, query
        self.headers, self.keep_alive, self.body_start, self.end = headers, keep_alive, body_start, end


class Refusal:
    """A head answered with an error here, the connection closed after it."""

    __slots__ = ("error", "method", "path")

    def __init__(self, error: FareboxError, head: bytes) -> None:
        parts = head[:head.find(b"\n")].split(b" ")
        self.error = error
        self.method = parts[0].decode("ascii", "replace") or "-"
        self.path = parts[1].split(b"?")[0].decode("ascii", "replace") if len(parts) > 1 else "-"


HAND_OVER = object()  # not a request farebox's own server answers: aiohttp takes the connection


def read_head(buf: bytes | bytearray, scan_from: int, max_body: int,
              pattern: re.Pattern[str] = CHAT_ONLY) -> Request | Refusal | int | object:
    """What the bytes at the start of ``buf`` are: a ``Request`` to answer (a head ``pattern``
    matches, from ``head_pattern``), a ``Refusal``, ``HAND_OVER``, or not enough yet: an int,
    where to resume looking for the head's end."""
    end = buf.find(b"\r\n\r\n", scan_from)
    if end < 0:
        if len(buf) > MAX_HEAD_BYTES:
            return HAND_OVER
        if buf.count(b"\n") != buf.count(b"\r\n"):
            return _not_ours(bytes(buf))
        return max(0, len(buf) - 3)
    if end + 2 > MAX_HEAD_BYTES:
        return HAND_OVER
    if not buf.startswith(_PREFIX):
        return _not_ours(bytes(buf[:end + 4]))
    head = bytes(buf[:end + 2])
    if not head.isascii():
        return HAND_OVER
    text = head.decode("ascii")
    matched = pattern.fullmatch(text)
    if matched is None:
        return _not_ours(head + b"\r\n")
    fields = _FIELD.findall(text, matched.end(1))
    if len(fields) > MAX_FIELDS:
        return HAND_OVER
    headers = CIMultiDict(fields)
    for name in _HANDED_OVER:
        if name in headers:
            return HAND_OVER
    lengths = headers.getall("Content-Length", ())
    if len(lengths) != 1 or not lengths[0].isdigit() or int(lengths[0]) > max_body:
        return HAND_OVER
    keep_alive = True
    connection = headers.get("Connection")
    if connection is not None:
        options = {option.strip().lower() for option in connection.split(",")}
        if "upgrade" in options:
            return HAND_OVER
        keep_alive = "close" not in options
    return Request(matched["path"], matched["query"] or "", headers, keep_alive, end + 4, end + 4 + int(lengths[0]))


def _not_ours(head: bytes) -> Refusal | object:
    """A head (whole, or the part received) this server does not answer itself: refused here when
    no server should take it (bare-LF line ends, an HTTP version other than 1.x), else aiohttp's."""
    if head.count(b"\n") != head.count(b"\r\n"):
        return Refusal(BadRequest("Malformed request head: lines must end with CR LF.", code="malformed_request"),
                        head)
    line = _REQUEST_LINE.fullmatch(head[:head.find(b"\r\n")])
    if line is not None and line[3] != b"1":
        return Refusal(VersionNotSupported(f"HTTP/{line[3].decode()}.{line[4].decode()} is not supported: "
                                            "farebox speaks HTTP/1.1."), head)
    return HAND_OVER
