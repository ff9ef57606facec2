"""Counting: model → encoding, texts counted exactly and remembered."""

from __future__ import annotations

import pytest

from proxy.apis.chat_prompt import count_chat_prompt
from proxy.tokens import count_text, counting, encoding_name_for_model, get_encoding


def n(model: str, text: str) -> int:
    return len(get_encoding(model).encode_ordinary(text))

# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o-2024-08-06",
        "chatgpt-4o-latest",
        "gpt-4.1",
        "gpt-4.1-nano-2025-04-14",
        "gpt-4.5-preview",
        "gpt-5",
        "gpt-5-mini",
        "o1",
        "o1-mini",
        "o3",
        "o3-pro",
        "o4-mini",
        "gpt-oss-120b",
        "openai/gpt-4o",
        "azure/gpt-4.1-mini",
        "openrouter/openai/gpt-5",
        "ft:gpt-4o-mini:acme::abc123",
        "GPT-4o",
    ],
)
def test_o200k_models(model: str) -> None:
    assert encoding_name_for_model(model) == "o200k_base"


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4",
        "gpt-4-0613",
        "gpt-4-turbo",
        "gpt-4-32k",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "gpt-35-turbo",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "openai/gpt-4",
        # not OpenAI: an estimate with cl100k_base
        "claude-3-5-sonnet-20241022",
        "anthropic/claude-sonnet-4",
        "llama-3.1-70b",
        "mistral-large",
        "o1x-custom",
        "",
    ],
)
def test_cl100k_models(model: str) -> None:
    assert encoding_name_for_model(model) == "cl100k_base"


def test_encodings_are_reused() -> None:
    assert get_encoding("gpt-4o") is get_encoding("o3-mini")
    assert get_encoding("gpt-4") is get_encoding("claude-3-opus")
    assert get_encoding("gpt-4o").name == "o200k_base"


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4"])
def test_hello_world_is_two_tokens(model: str) -> None:
    assert count_text(model, "hello world") == 2


def test_empty_text_is_zero_tokens() -> None:
    assert count_text("gpt-4o", "") == 0


def test_known_counts_differ_by_encoding() -> None:
    # Published in the same guide: "お誕生日おめでとう" is 9 tokens in cl100k_base, 8 in o200k_base.
    assert count_text("gpt-4", "お誕生日おめでとう") == 9
    assert count_text("gpt-4o", "お誕生日おめでとう") == 8


def test_special_token_strings_count_as_plain_text() -> None:
    assert count_text("gpt-4o", "<|endoftext|>") == 7
    assert count_text("gpt-4", "a <|endoftext|> b <|fim_prefix|>") == 14


# --------------------------------------------------------------------------- counts of repeated texts


def test_a_repeated_text_is_counted_once_and_keeps_its_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counting, "_counts", {})
    text = "An agent sends its whole conversation again with every call."
    expected = n("gpt-4o", text) + n("gpt-4o", "user") + 3 + 3  # message framing, reply priming
    encoded: list[str] = []
    enc = get_encoding("gpt-4o")
    real = enc.encode_ordinary

    def recording(value: str) -> list[int]:
        encoded.append(value)
        return real(value)

    monkeypatch.setattr(enc, "encode_ordinary", recording)
    body = {"messages": [{"role": "user", "content": text}]}

    assert count_chat_prompt("gpt-4o", body) == count_chat_prompt("gpt-4o", body) == expected
    assert encoded.count(text) == 1


def test_counts_are_kept_per_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counting, "_counts", {})
    assert count_text("gpt-4", "お誕生日おめでとう") == 9
    assert count_text("gpt-4o", "お誕生日おめでとう") == 8
    assert count_text("gpt-4", "お誕生日おめでとう") == 9


def test_the_count_cache_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counting, "_counts", {})
    monkeypatch.setattr(counting, "_counted_chars", 0)
    monkeypatch.setattr(counting, "COUNT_CACHE_CHARS", 20)
    count_text("gpt-4o", "hello world")        # 11 characters
    count_text("gpt-4o", "goodbye")            # 18
    assert len(counting._counts) == 2
    assert count_text("gpt-4o", "hello again") == 2  # 29 > 20: the cache is emptied first
    assert list(counting._counts) == [("o200k_base", "hello again")]
    assert counting._counted_chars == 11


def test_a_text_too_large_for_the_count_cache_is_counted_but_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counting, "_counts", {})
    monkeypatch.setattr(counting, "COUNT_CACHE_MAX_TEXT_CHARS", 10)
    assert count_text("gpt-4o", "hello world") == 2
    assert counting._counts == {}


def test_the_encoding_of_a_model_name_is_remembered_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counting, "_encoding_names", {})
    monkeypatch.setattr(counting, "ENCODING_NAME_CACHE_SIZE", 2)
    assert encoding_name_for_model("gpt-4o") == "o200k_base"
    assert encoding_name_for_model("gpt-4") == "cl100k_base"
    assert encoding_name_for_model("openai/gpt-4o-mini") == "o200k_base"  # full: starts over
    assert counting._encoding_names == {"openai/gpt-4o-mini": "o200k_base"}
