"""The fake upstream bills a chat prompt as a provider does: every text, images by their size,
audio by its length, a prediction as rejected completion tokens."""

from __future__ import annotations

import base64
import struct

import pytest

from proxy.fake_upstream.billing import bill_chat
from proxy.tokens import count_text
from tests.fake_upstream.conftest import post_chat

USER_HI = {"role": "user", "content": "hi"}


def t(text: str, model: str = "gpt-4o") -> int:
    return count_text(model, text)


def png(width: int, height: int) -> str:
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + b"\x08\x02\0\0\0"
    return "data:image/png;base64," + base64.b64encode(head).decode()


def image_body(url: str, detail: str | None = None, model: str = "gpt-4o") -> dict:
    image = {"url": url} if detail is None else {"url": url, "detail": detail}
    return {"model": model, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": image}]}]}


def test_plain_messages_bill_the_published_framing() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief.", "name": "rules"}, USER_HI],
            "max_tokens": 5, "temperature": 0.1, "stream": True, "stream_options": {"include_usage": True}}

    assert bill_chat("gpt-4o", body) == (3 + 3 + t("system") + t("Be brief.") + t("rules") + 1 + 3 + t("user") + t("hi"), 0)


@pytest.mark.parametrize(
    ("url", "detail", "model", "tokens"),
    [
        (png(1024, 1024), None, "gpt-4o", 85 + 170 * 4),           # 768×768: 2×2 tiles
        (png(512, 512), "high", "gpt-4o", 85 + 170),               # small images are not scaled up
        (png(4096, 2048), "auto", "gpt-4o", 85 + 170 * 6),         # 2048×1024, then 1536×768: 3×2
        (png(4096, 2048), "low", "gpt-4o", 85),
        ("https://img.test/cat-800x600.png", None, "gpt-4o-mini", 2833 + 5667 * 4),  # declared in its name
        ("https://img.test/cat.png", None, "gpt-4o", 85 + 170 * 8),  # unknown: the largest
        (png(64, 64), None, "gpt-4.1-mini", round(4 * 1.62)),        # 2×2 patches of 32 px
        (png(4096, 4096), None, "gpt-4.1-mini", round(1536 * 1.62)),
    ],
)
def test_images_bill_by_their_size(url: str, detail: str | None, model: str, tokens: int) -> None:
    assert bill_chat(model, image_body(url, detail, model)) == (3 + 3 + t("user", model) + tokens, 0)


def test_audio_bills_ten_tokens_a_second() -> None:
    data = b"\0" * 32_000  # 2 s at 16 000 bytes a second
    head = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 16000, 1, 8)
    wav = base64.b64encode(head + b"data" + struct.pack("<I", len(data)) + data).decode()
    mp3 = base64.b64encode(b"\xff" * 3000).decode()  # 3 s at 8 kbit/s
    parts = [{"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
             {"type": "input_audio", "input_audio": {"data": mp3, "format": "mp3"}}]
    body = {"model": "gpt-4o-audio-preview", "messages": [{"role": "user", "content": parts}]}

    assert bill_chat("gpt-4o-audio-preview", body) == (3 + 3 + t("user") + 20 + 30, 0)


def test_tools_schemas_and_other_fields_bill_every_string_in_them() -> None:
    tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    body = {"model": "gpt-4o", "messages": [USER_HI], "tools": [tool], "tool_choice": "auto",
            "response_format": {"type": "json_object"}, "seed": 3}
    tool_strings = sum(map(t, ["type", "function", "function", "name", "get_time", "parameters", "type", "object"]))
    expected = 3 + 3 + t("user") + t("hi") + tool_strings + 7 + 12 + t("auto") + t("type") + t("json_object")

    assert bill_chat("gpt-4o", body) == (expected, 0)


async def test_a_prediction_is_billed_as_rejected_completion_tokens_per_choice(fake) -> None:
    code = "def add(a, b):\n    return a + b\n"
    body = {"model": "gpt-4o", "messages": [USER_HI], "n": 2, "max_tokens": 4,
            "prediction": {"type": "content", "content": code}}

    status, completion = await post_chat(fake, body)

    assert status == 200
    usage = completion["usage"]
    assert usage["prompt_tokens"] == 3 + 3 + t("user") + t("hi")
    assert usage["completion_tokens"] == 2 * 4 + 2 * t(code)
    assert usage["completion_tokens_details"]["rejected_prediction_tokens"] == 2 * t(code)
