"""Upper bounds for the parts of a chat prompt that are not text: images, audio, files.

None of these is fetched or decoded in full. Each gets the most its provider can bill for it,
from what the request itself says (an image's detail, the width and height in a base64 image's
header, the size of base64 audio), so the worst case never falls short of the bill.

Images, OpenAI's rules: ``detail: "low"`` is a fixed base; otherwise the image is scaled to fit
2048×2048, then so that its short side is 768 px, and billed per 512 px tile plus the base. The
bound scales a small image *up* to a 768 px short side too (never beyond 2048 px), which is at
least what downscaling alone gives, so it holds whichever way the provider treats small images;
at most that is 2×4 tiles. An image of unknown size (a URL farebox does not fetch, a header it
cannot read) gets those 8 tiles. Models that bill by 32 px patches (gpt-4.1-mini/nano,
gpt-5-mini/nano, o4-mini) get their cap of 1536 patches times the model's factor, whatever the
detail or size.

Audio: OpenAI bills input audio at 10 tokens a second. The lowest bitrate the accepted formats
allow is 8 kbit/s (MPEG-2.5 layer III; wav is at least 8 kHz × 8 bit = 64 kbit/s), so a clip
of N bytes lasts at most N / 1000 s. Audio tokens cost more than text tokens (up to 67 times
the model's text input price: gpt-4o-mini-audio, $10 vs $0.15 a million) and the catalog
prices text only, so each audio token counts as 67 text tokens.

Files (PDFs) are extracted upstream, text plus an image of each page, and cannot be bounded by
their size; a file counts as the model's whole context window of text plus an image at the
most per page for the 100 pages a request may carry.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct

from proxy.tokens import bare_model

__all__ = ["image_tokens", "image_tokens_max", "data_url_image_size", "audio_tokens", "file_tokens",
           "IMAGE_TILE_RATES", "IMAGE_PATCH_FACTORS", "AUDIO_TOKENS_PER_SECOND", "AUDIO_MIN_BYTES_PER_SECOND",
           "AUDIO_PRICE_RATIO", "FILE_MAX_PAGES", "UNKNOWN_CONTEXT_TOKENS"]

# (base tokens, tokens per 512 px tile) by model prefix; the first match wins, else the default.
IMAGE_TILE_RATES: tuple[tuple[str, tuple[int, int]], ...] = (
    ("gpt-4o-mini", (2833, 5667)),
)
DEFAULT_TILE_RATES = (85, 170)
# Patch-based models: the most they bill for one image is 1536 patches times this factor.
IMAGE_PATCH_FACTORS: tuple[tuple[str, float], ...] = (
    ("gpt-4.1-mini", 1.62), ("gpt-4.1-nano", 2.46), ("gpt-5-mini", 1.62), ("gpt-5-nano", 2.46),
    ("o4-mini", 1.72),
)
_MAX_PATCHES = 1536
_MAX_TILES = 8

AUDIO_TOKENS_PER_SECOND = 10
AUDIO_MIN_BYTES_PER_SECOND = 1000  # 8 kbit/s
AUDIO_PRICE_RATIO = 67

FILE_MAX_PAGES = 100
UNKNOWN_CONTEXT_TOKENS = 2_000_000  # a model whose catalog entry names no context window

# Enough base64 to reach the size in any PNG, GIF or WebP header, and in most JPEGs (whose
# size follows their EXIF data); an image whose size is not found in it counts as unknown.
_HEADER_BASE64_CHARS = 65536


def _patch_factor(model: str) -> float | None:
    bare = bare_model(model)
    for prefix, factor in IMAGE_PATCH_FACTORS:
        if bare.startswith(prefix):
            return factor
    return None


def _tile_rates(model: str) -> tuple[int, int]:
    bare = bare_model(model)
    for prefix, rates in IMAGE_TILE_RATES:
        if bare.startswith(prefix):
            return rates
    return DEFAULT_TILE_RATES


def _tiles_bound(width: int, height: int) -> int:
    """512 px tiles of an image after the fit, with small images scaled up (see above)."""
    if width <= 0 or height <= 0:
        return _MAX_TILES
    scale = min(2048 / width, 2048 / height, 1.0)
    w, h = width * scale, height * scale
    up = 768 / min(w, h)
    up = min(up, 2048 / max(w, h))
    w, h = w * up, h * up
    tiles = math.ceil(w / 512) * math.ceil(h / 512)  # float error only ever adds a tile
    return min(max(tiles, 1), _MAX_TILES)


def image_tokens(model: str, detail: object, size: tuple[int, int] | None) -> int:
    """The most one image can bill on ``model`` at ``detail``, of ``size`` (None: unknown)."""
    factor = _patch_factor(model)
    if factor is not None:
        return math.ceil(_MAX_PATCHES * factor)
    base, per_tile = _tile_rates(model)
    if detail == "low":
        return base
    tiles = _MAX_TILES if size is None else _tiles_bound(*size)
    return base + per_tile * tiles


def image_tokens_max(model: str) -> int:
    """The most any one image can bill on ``model``."""
    return image_tokens(model, "high", None)


def data_url_image_size(url: str) -> tuple[int, int] | None:
    """(width, height) from the header of a base64 ``data:`` URL's PNG, GIF, WebP or JPEG."""
    if not url.startswith("data:"):
        return None
    comma = url.find(",", 0, 256)
    if comma < 0 or not url[:comma].endswith(";base64"):
        return None
    size = _decoded_size(url, comma + 1, 1024)  # PNG, GIF and WebP: in the first bytes
    if size is None and url.startswith("/9j/", comma + 1):  # a JPEG: its size may follow its EXIF
        size = _decoded_size(url, comma + 1, _HEADER_BASE64_CHARS)
    return size


def _decoded_size(url: str, start: int, chars: int) -> tuple[int, int] | None:
    chunk = url[start:start + chars]
    chunk = chunk[:len(chunk) - len(chunk) % 4]
    try:
        head = base64.b64decode(chunk, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _header_size(head)


def _header_size(head: bytes) -> tuple[int, int] | None:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24 and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head[:4] == b"GIF8" and len(head) >= 10:
        return struct.unpack("<HH", head[6:10])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 25:
        kind = head[12:16]
        if kind == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            return ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        if len(head) < 30:
            return None
        if kind == b"VP8X":
            return (int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1)
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", head[26:30])
            return (w & 0x3FFF, h & 0x3FFF)
        return None
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", head[at + 5:at + 9])
            return (w, h)
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        at += 2 + int.from_bytes(head[at + 2:at + 4], "big")
    return None


def audio_tokens(data: object) -> int:
    """The most a base64 clip ``data`` can bill, in text-price tokens (at least one second's)."""
    size = len(data) if isinstance(data, str) else 0
    decoded = math.ceil(size * 3 / 4)
    seconds = max(math.ceil(decoded / AUDIO_MIN_BYTES_PER_SECOND), 1)
    return seconds * AUDIO_TOKENS_PER_SECOND * AUDIO_PRICE_RATIO


def file_tokens(model: str, context_tokens: int | None) -> int:
    """The most one file part can bill on ``model`` (whose context window is ``context_tokens``)."""
    context = context_tokens or UNKNOWN_CONTEXT_TOKENS
    return context + FILE_MAX_PAGES * image_tokens_max(model)
