"""An incremental Server-Sent Events splitter that knows no provider.

Bytes go in as they arrive from the upstream; complete events come out as the raw bytes
that make them up (so they can be forwarded unchanged) together with their ``data`` payload.
Nothing waits for more than one event: a partial event is kept only until its blank line.
"""

from __future__ import annotations

__all__ = ["SSESplitter", "event_data"]

_SEPARATORS = (b"\n\n", b"\r\n\r\n", b"\r\r")


def event_data(raw: bytes) -> bytes | None:
    """The joined ``data:`` lines of one raw event, or None if it has none."""
    if raw.startswith(b"data: ") and raw.count(b"\n") <= 2 and b"\r" not in raw:
        return raw[6:].rstrip(b"\n")  # the common single-line case
    parts: list[bytes] = []
    for line in raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None


class SSESplitter:
    """Feed bytes, get back complete raw events (each ending with its blank line)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        events: list[bytes] = []
        start = 0
        while True:
            end, sep_len = self._next_separator(buffer, start)
            if end < 0:
                break
            events.append(buffer[start:end + sep_len])
            start = end + sep_len
        self._buffer = buffer[start:]
        return events

    @staticmethod
    def _next_separator(buffer: bytes, start: int) -> tuple[int, int]:
        best, best_len = -1, 0
        for sep in _SEPARATORS:
            at = buffer.find(sep, start)
            if at >= 0 and (best < 0 or at < best):
                best, best_len = at, len(sep)
        return best, best_len

    def rest(self) -> bytes:
        """Bytes of an unfinished event left when the stream ended."""
        rest, self._buffer = self._buffer, b""
        return rest
