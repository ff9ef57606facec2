"""Content encodings: the ones farebox decodes, and the only ones it may ask an upstream for.

Usage is read from the body, so a body reaches farebox's meter, and the client, decoded:
gzip and deflate are decoded here, identity needs nothing. A response in any other encoding
(br, zstd, ...) is refused as a whole (``UndecodableBody``, a 502), never passed on with its
encoding label dropped or its bytes unread.
"""

from __future__ import annotations

import zlib
from typing import Any

__all__ = ["DECODED", "PLAIN", "decompressor", "accept_encoding"]

DECODED = frozenset({"gzip", "x-gzip", "deflate"})   # decoded by ``decompressor``
PLAIN = frozenset({"identity", ""})                  # nothing to decode


def decompressor(encoding: str, first: bytes) -> Any:
    """A zlib decompressor for an encoding of ``DECODED``: gzip, or deflate with or without its
    zlib wrapper (servers send both; ``first`` is the body's first bytes, which tell)."""
    if encoding == "deflate":
        wrapped = bool(first) and first[0] & 0x0F == 8 and first[0] >> 4 <= 7
        return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


def accept_encoding(encodings: tuple[str, ...]) -> str:
    """The ``Accept-Encoding`` value asking for ``encodings``; ValueError for one farebox does not decode."""
    unknown = [e for e in encodings if e.lower() not in DECODED | PLAIN]
    if unknown or not encodings:
        raise ValueError(f"farebox decodes only {sorted(DECODED | {'identity'})}, not {unknown or 'nothing'}")
    return ", ".join(encodings)
