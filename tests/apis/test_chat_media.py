"""Upper bounds for images, audio and files in a chat prompt."""

from __future__ import annotations

import base64
import struct

import pytest

from proxy.apis.chat_media import (
    AUDIO_PRICE_RATIO,
    audio_tokens,
    data_url_image_size,
    file_tokens,
    image_tokens,
    image_tokens_max,
)


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def png(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + b"\x08\x02\0\0\0"


def jpeg(width: int, height: int, exif: int = 0) -> bytes:
    app1 = b"\xff\xe1" + struct.pack(">H", exif + 2) + b"\0" * exif if exif else b""
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\0" * 65
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\0"
    return b"\xff\xd8" + app1 + dqt + sof + b"\xff\xd9"


def webp(kind: bytes, width: int, height: int) -> bytes:
    if kind == b"VP8X":
        chunk = b"\0" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif kind == b"VP8L":
        chunk = b"\x2f" + ((width - 1) | (height - 1) << 14).to_bytes(4, "little")
    else:
        chunk = b"\0\0\0\x9d\x01\x2a" + struct.pack("<HH", width, height)
    body = b"WEBP" + kind + struct.pack("<I", len(chunk)) + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        (png(1920, 1080), (1920, 1080)),
        (b"GIF89a" + struct.pack("<HH", 320, 200) + b"\0" * 8, (320, 200)),
        (jpeg(4032, 3024), (4032, 3024)),
        (jpeg(640, 480, exif=30_000), (640, 480)),
        (webp(b"VP8X", 5000, 7), (5000, 7)),
        (webp(b"VP8L", 1024, 768), (1024, 768)),
        (webp(b"VP8 ", 800, 600), (800, 600)),
    ],
)
def test_the_size_of_a_base64_image_is_read_from_its_header(raw: bytes, size: tuple[int, int]) -> None:
    assert data_url_image_size(data_url(raw)) == size


@pytest.mark.parametrize(
    "url",
    [
        "https://example.invalid/1920x1080.png",  # never fetched, never guessed from its name
        "data:image/png;base64,!!!!",
        "data:image/png,rawbytes",
        data_url(b"BM" + b"\0" * 40),  # a bitmap: not read
        data_url(jpeg(640, 480, exif=60_000)),  # the size lies beyond the header farebox reads
    ],
)
def test_an_image_whose_size_farebox_cannot_read_is_unknown(url: str) -> None:
    assert data_url_image_size(url) is None


@pytest.mark.parametrize(
    ("size", "tiles"),
    [
        ((512, 512), 4),     # scaled up to 768×768 for the bound: 2×2
        ((1024, 1024), 4),   # down to 768×768
        ((2048, 4096), 6),   # 1024×2048, then 768×1536: 2×3
        ((100, 100), 4),
        ((100, 3000), 4),    # 68×2048 can only grow to 68×2048: 1×4
        ((4000, 768), 4),    # 2048×393, whose long side cannot grow: 4×1
        ((1500, 700), 8),    # scaled up to 1646×768: 4×2
        ((1, 1), 4),
    ],
)
def test_a_known_size_counts_its_tiles_after_scaling(size: tuple[int, int], tiles: int) -> None:
    assert image_tokens("gpt-4o", "high", size) == 85 + 170 * tiles
    assert image_tokens("gpt-4o-mini", "auto", size) == 2833 + 5667 * tiles


def test_a_known_size_never_counts_more_than_an_unknown_one() -> None:
    for width in (1, 200, 511, 512, 513, 767, 768, 769, 1024, 2047, 2048, 2049, 9000):
        for height in (1, 300, 768, 1536, 2048, 4096):
            assert image_tokens("gpt-4o", None, (width, height)) <= image_tokens_max("gpt-4o") == 1445


def test_low_detail_is_the_base_whatever_the_size() -> None:
    assert image_tokens("gpt-4o", "low", (4000, 4000)) == 85
    assert image_tokens("gpt-4o", "low", None) == 85


def test_patch_models_count_their_cap_whatever_the_detail() -> None:
    assert image_tokens("gpt-4.1-mini", "low", (10, 10)) == 2489
    assert image_tokens("gpt-4.1-nano", "high", None) == 3779
    assert image_tokens("azure/o4-mini", None, (32, 32)) == 2642


@pytest.mark.parametrize(
    ("data", "seconds"),
    [
        ("A" * 16_000, 12),       # 12 000 bytes at 1000 B/s
        ("A" * 4, 1),             # 3 bytes: at least a second
        ("", 1),                  # an audio part with nothing in it still bounds a second
        (None, 1),
        ("A" * 1_333_336, 1001),  # 1 000 002 bytes: 1000.002 s, rounded up
    ],
)
def test_audio_is_bounded_by_its_size_at_the_lowest_bitrate(data: object, seconds: int) -> None:
    assert audio_tokens(data) == seconds * 10 * AUDIO_PRICE_RATIO


def test_a_file_counts_the_context_window_and_a_hundred_page_images() -> None:
    assert file_tokens("gpt-4o", 128_000) == 128_000 + 100 * 1445
    assert file_tokens("gpt-4o-mini", 128_000) == 128_000 + 100 * (2833 + 8 * 5667)
