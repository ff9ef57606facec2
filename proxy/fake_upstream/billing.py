"""What the fake upstream bills for a chat request, the way a provider does: every text in the
body, images by their size, audio by its length, a prediction as output.

Written on its own, simply, from the providers' published rules, not with farebox's counting
code (``proxy.apis.chat_prompt``): the tests hold farebox's worst case against this bill. Only
the tokenizer is shared (``proxy.tokens.count_text``: tiktoken with the model's encoding).

- 3 tokens per message, 1 more for a name, 3 priming the reply; every string in a message;
- a tool call: its function's name and arguments, plus 3;
- tool definitions, ``response_format``, ``tool_choice`` and other fields that are not
  settings: every string in them (keys too), plus 7 per function (10 on cl100k models) and 12
  for the block of tools;
- an image: 85 at ``detail: "low"``; else scaled down to fit 2048×2048, then down to a 768 px
  short side, 170 per 512 px tile plus 85 (gpt-4o-mini: 2833 + 5667 per tile); on the
  patch-based minis, 32 px patches (at most 1536) times the model's factor. The size is read
  from a base64 PNG or GIF's header, or from a ``WIDTHxHEIGHT`` in an image URL; an image of
  another kind counts as 768×2048;
- audio: 10 tokens a second; a wav's length from its header, other audio at 8 kbit/s;
- a file: its name, and a token per 4 bytes of its data;
- ``prediction``: its text, billed per choice as completion tokens (all of it rejected).
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Callable
from typing import Any

from proxy.tokens import count_text, encoding_name_for_model

__all__ = ["bill_chat", "base64_image_size"]

SETTINGS = {"model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n", "temperature",
            "top_p", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "seed",
            "stop", "user", "parallel_tool_calls", "store", "metadata", "service_tier", "reasoning_effort",
            "modalities", "audio", "prompt_cache_key", "safety_identifier", "verbosity"}
PATCH_FACTORS = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "gpt-5-mini": 1.62, "gpt-5-nano": 2.46,
                 "o4-mini": 1.72}
_DECLARED_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")


def _strings(count: Callable[[str], int], value: Any) -> int:
    if isinstance(value, str):
        return count(value)
    if isinstance(value, dict):
        return sum(count(str(k)) + _strings(count, v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_strings(count, v) for v in value)
    if value is None:
        return 0
    return count(str(value).lower())


def base64_image_size(data: str) -> tuple[int, int] | None:
    """The width and height a PNG or GIF in base64 declares in its header; None for others."""
    try:
        head = base64.b64decode(data[:64])
    except ValueError:
        return None
    if head.startswith(b"\x89PNG"):
        return struct.unpack(">II", head[16:24])
    if head.startswith(b"GIF8"):
        return struct.unpack("<HH", head[6:10])
    return None


def _image_size(url: str) -> tuple[int, int] | None:
    if url.startswith("data:"):
        _, comma, data = url.partition(",")
        return base64_image_size(data) if comma else None
    found = _DECLARED_SIZE.search(url)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _image(model: str, image: Any) -> int:
    url = image.get("url", "") if isinstance(image, dict) else str(image)
    detail = image.get("detail") if isinstance(image, dict) else None
    width, height = _image_size(url) or (768, 2048)
    factor = next((f for prefix, f in PATCH_FACTORS.items() if model.startswith(prefix)), None)
    if factor is not None:
        patches = math.ceil(width / 32) * math.ceil(height / 32)
        return round(min(patches, 1536) * factor)
    base, tile = (2833, 5667) if model.startswith("gpt-4o-mini") else (85, 170)
    if detail == "low":
        return base
    if width > 2048 or height > 2048:
        scale = 2048 / max(width, height)
        width, height = int(width * scale), int(height * scale)
    if min(width, height) > 768:
        scale = 768 / min(width, height)
        width, height = int(width * scale), int(height * scale)
    return base + tile * math.ceil(width / 512) * math.ceil(height / 512)


def _audio(audio: Any) -> int:
    data = audio.get("data") if isinstance(audio, dict) else None
    if not isinstance(data, str):
        return 0
    raw = base64.b64decode(data + "=" * (-len(data) % 4))
    if raw[:4] == b"RIFF" and len(raw) >= 44:
        byte_rate = struct.unpack("<I", raw[28:32])[0] or 1000
        seconds = (len(raw) - 44) / byte_rate
    else:
        seconds = len(raw) / 1000
    return math.ceil(seconds * 10)


def _content(model: str, count: Callable[[str], int], content: Any) -> int:
    if not isinstance(content, list):
        return _strings(count, content)
    total = 0
    for part in content:
        if not isinstance(part, dict):
            total += _strings(count, part)
        elif part.get("type") == "image_url":
            total += _image(model, part.get("image_url"))
        elif part.get("type") == "input_audio":
            total += _audio(part.get("input_audio"))
        elif part.get("type") == "file":
            file = part.get("file") or {}
            total += count(file.get("filename") or "") + math.ceil(len(file.get("file_data") or "") * 3 / 16)
        elif part.get("type") in ("text", "refusal"):
            total += _strings(count, part.get(part["type"]))
        else:
            total += _strings(count, part)
    return total


def bill_chat(model: str, body: dict[str, Any]) -> tuple[int, int]:
    """(prompt tokens, prediction tokens billed per choice) of a chat completions ``body``."""
    name = model.lower().rsplit("/", 1)[-1]

    def count(text: str) -> int:
        return count_text(model, text)

    prompt = 3
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        prompt += 3
        for key, value in message.items():
            if key == "content":
                prompt += _content(name, count, value)
            elif key == "tool_calls" and isinstance(value, list):
                for call in value:
                    function = (call.get("function") or {}) if isinstance(call, dict) else {}
                    prompt += 3 + _strings(count, function.get("name")) + _strings(count, function.get("arguments"))
            else:
                prompt += _strings(count, value) + (1 if key == "name" and isinstance(value, str) else 0)
    functions = [t for t in (body.get("tools") or []) + (body.get("functions") or []) if isinstance(t, dict)]
    if functions:
        per_function = 7 if encoding_name_for_model(model) == "o200k_base" else 10
        prompt += sum(_strings(count, t) + per_function for t in functions) + 12
    for key, value in body.items():
        if key not in SETTINGS and key not in ("messages", "tools", "functions", "prediction"):
            prompt += _strings(count, value)
    prediction = body.get("prediction")
    content = prediction.get("content") if isinstance(prediction, dict) else None
    if isinstance(content, list):
        predicted = sum(count(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    else:
        predicted = _strings(count, content)
    return prompt, predicted
