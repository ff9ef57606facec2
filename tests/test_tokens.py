"""Token counting: offline encodings, model → encoding, published chat counts, odd shapes."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

from proxy import tokens
from proxy.tokens import (
    EncodingDataError,
    count_chat_prompt,
    count_chat_prompt_async,
    count_completion,
    count_text,
    encoding_name_for_model,
    ensure_offline_encodings,
    get_encoding,
)

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def cache_name(url: str) -> str:
    return hashlib.sha1(url.encode()).hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def n(model: str, text: str) -> int:
    return len(get_encoding(model).encode_ordinary(text))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt by tiktoken to download, or to open a connection, fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """TIKTOKEN_CACHE_DIR points at an empty directory."""
    cache = tmp_path / "tiktoken"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    return cache


# --------------------------------------------------------------------------- offline seeding


def test_seeds_tiktoken_cache_dir_with_verified_files(empty_cache: Path, no_network: None) -> None:
    assert ensure_offline_encodings() == empty_cache

    assert sha256_of(empty_cache / cache_name(O200K_URL)) == O200K_SHA256
    assert sha256_of(empty_cache / cache_name(CL100K_URL)) == CL100K_SHA256
    assert sorted(p.name for p in empty_cache.iterdir()) == sorted(
        [cache_name(O200K_URL), cache_name(CL100K_URL)]
    )  # no temporary files left behind


def test_seeded_cache_loads_in_tiktoken_without_network(
    empty_cache: Path, no_network: None
) -> None:
    ensure_offline_encodings()
    # Build fresh encodings from the cache (tiktoken's registry may hold loaded ones already).
    o200k = tiktoken.Encoding(**openai_public.o200k_base())
    cl100k = tiktoken.Encoding(**openai_public.cl100k_base())

    assert o200k.encode_ordinary("hello world") == [24912, 2375]
    assert cl100k.encode_ordinary("hello world") == [15339, 1917]


def test_seeds_given_dir_and_points_tiktoken_at_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # tiktoken's default dir
    target = tmp_path / "given"

    assert ensure_offline_encodings(target) == target

    assert tokens.os.environ["TIKTOKEN_CACHE_DIR"] == str(target)
    assert sha256_of(target / cache_name(O200K_URL)) == O200K_SHA256


def test_seeds_farebox_cache_dir_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert ensure_offline_encodings() == tmp_path / "xdg" / "farebox" / "tiktoken"


def test_leaves_an_existing_tiktoken_cache_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    existing = tmp_path / "data-gym"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(existing))
    ensure_offline_encodings()
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(existing))

    assert ensure_offline_encodings(tmp_path / "unused") == existing

    assert not (tmp_path / "unused").exists()
    assert "TIKTOKEN_CACHE_DIR" not in tokens.os.environ


def test_second_call_rewrites_nothing(empty_cache: Path) -> None:
    ensure_offline_encodings()
    before = {p.name: p.stat().st_ino for p in empty_cache.iterdir()}

    ensure_offline_encodings()

    assert {p.name: p.stat().st_ino for p in empty_cache.iterdir()} == before


def test_corrupted_cache_file_is_replaced(empty_cache: Path) -> None:
    ensure_offline_encodings()
    damaged = empty_cache / cache_name(O200K_URL)
    damaged.write_bytes(b"not a bpe file\n")

    ensure_offline_encodings()

    assert sha256_of(damaged) == O200K_SHA256


def test_corrupted_bundled_data_raises_clear_error(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.tiktoken.gz"
    bad.write_bytes(gzip.compress(b"aGVsbG8= 0\n"))
    monkeypatch.setattr(tokens, "_bundled_file", lambda name: bad)

    with pytest.raises(EncodingDataError, match="corrupt: sha256 .* expected 446a9538"):
        ensure_offline_encodings()

    assert not empty_cache.exists() or list(empty_cache.iterdir()) == []


FRESH_PROCESS = """
import socket

def refuse(*args, **kwargs):
    raise OSError("network access attempted")

socket.socket.connect = refuse
socket.create_connection = refuse
from proxy.tokens import count_chat_prompt, count_text
print(count_text("gpt-4o", "hello world"), count_text("gpt-4", "hello world"),
      count_chat_prompt("gpt-4o", {"messages": [{"role": "user", "content": "hi"}]}))
"""


def test_fresh_process_counts_with_empty_caches_and_no_network(tmp_path: Path) -> None:
    unset = ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), TMPDIR=str(tmp_path))

    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert (result.returncode, result.stdout, result.stderr) == (0, "2 2 8\n", "")
    assert (tmp_path / "xdg" / "farebox" / "tiktoken" / cache_name(O200K_URL)).exists()


# --------------------------------------------------------------------------- quick-loading form

TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog. 1234567890 3.14159",
    "お誕生日おめでとう",
    "مرحبا بالعالم",
    "Привет, мир! 🙂👩‍💻🚀",
    "    indented\n\tcode = {'a': [1, 2, 3]}\r\n\n\n",
    "<|endoftext|> and <|endofprompt|> as plain text",
    "a" * 1000,
    "".join(chr(c) for c in range(0x20, 0x250)),
]
CONSTRUCTORS = {"o200k_base": openai_public.o200k_base, "cl100k_base": openai_public.cl100k_base}


@pytest.fixture
def fresh_encodings(monkeypatch: pytest.MonkeyPatch, empty_cache: Path) -> Path:
    """As in a fresh process: no encoding loaded by farebox or by tiktoken; the cache is empty."""
    monkeypatch.setattr(tokens, "_loaded", {})
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    return empty_cache


def tiktoken_refuses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make tiktoken's own loader fail the test if called; returns the names it was asked for."""
    asked: list[str] = []

    def refuse(name: str) -> tiktoken.Encoding:
        asked.append(name)
        raise AssertionError(f"tiktoken asked to build {name}")

    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    return asked


def reload(monkeypatch: pytest.MonkeyPatch, name: str) -> tiktoken.Encoding:
    monkeypatch.setattr(tokens, "_loaded", {})
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    return tokens._encoding_by_name(name)


def test_first_load_leaves_a_quick_loading_form_beside_the_files(fresh_encodings: Path) -> None:
    tokens.preload_encodings()

    assert sorted(p.name for p in fresh_encodings.iterdir()) == sorted([
        cache_name(O200K_URL), cache_name(CL100K_URL), "o200k_base.farebox-bpe", "cl100k_base.farebox-bpe",
    ])  # no temporary files left behind


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_quick_loading_form_gives_the_tokens_tiktoken_gives(
    fresh_encodings: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    tokens._encoding_by_name(name)  # built by tiktoken, form written
    reference = tiktoken.Encoding(**CONSTRUCTORS[name]())
    asked = tiktoken_refuses(monkeypatch)

    loaded = reload(monkeypatch, name)

    assert asked == []
    assert (loaded.name, loaded.n_vocab, loaded.max_token_value) == (
        reference.name, reference.n_vocab, reference.max_token_value)
    for text in TEXTS:
        assert loaded.encode_ordinary(text) == reference.encode_ordinary(text)
        assert loaded.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")


def one_token_changed(data: bytes) -> bytes:
    """Still loadable data, with the token "hello" turned into "jello": only its hash tells."""
    header_end = data.index(b"\n", data.index(b"\n") + 1)
    return data[:header_end] + data[header_end:].replace(b"hello", b"jello", 1)


def other_tiktoken_version(data: bytes) -> bytes:
    return data.replace(tiktoken.__version__.encode(), b"0.0.1", 1)


@pytest.mark.parametrize("damage", [
    one_token_changed,
    lambda data: data[: len(data) // 2],  # cut short
    other_tiktoken_version,               # stale: written by another tiktoken
    lambda data: b"",
    lambda data: b"farebox-bpe\nnot json\n" + data,
], ids=["changed-token", "truncated", "stale-header", "empty", "bad-header"])
def test_damaged_quick_loading_form_is_rebuilt_from_the_verified_file(
    fresh_encodings: Path, monkeypatch: pytest.MonkeyPatch, damage
) -> None:
    tokens._encoding_by_name("o200k_base")
    form = fresh_encodings / "o200k_base.farebox-bpe"
    good = form.read_bytes()
    form.write_bytes(damage(good))
    built: list[str] = []
    real = tiktoken.get_encoding
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: built.append(name) or real(name))

    loaded = reload(monkeypatch, "o200k_base")

    assert built == ["o200k_base"]
    reference = tiktoken.Encoding(**openai_public.o200k_base())
    assert [loaded.encode_ordinary(text) for text in TEXTS] == [reference.encode_ordinary(text) for text in TEXTS]
    assert form.read_bytes() == good
    asked = tiktoken_refuses(monkeypatch)
    assert reload(monkeypatch, "o200k_base").encode_ordinary("hello world") == [24912, 2375]
    assert asked == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file away needs root")
def test_quick_loading_form_of_another_user_is_not_read(
    fresh_encodings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens._encoding_by_name("cl100k_base")
    form = fresh_encodings / "cl100k_base.farebox-bpe"
    os.chown(form, 54321, -1)
    built: list[str] = []
    real = tiktoken.get_encoding
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: built.append(name) or real(name))

    assert reload(monkeypatch, "cl100k_base").encode_ordinary("hello world") == [15339, 1917]

    assert built == ["cl100k_base"]
    assert form.stat().st_uid == os.getuid()  # rewritten as this user's


def test_concurrent_first_uses_load_each_encoding_once(
    fresh_encodings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    real = tokens._load_encoding
    monkeypatch.setattr(tokens, "_load_encoding", lambda name: loads.append(name) or real(name))
    start = threading.Barrier(6)
    got: list[tiktoken.Encoding] = []

    def use(model: str) -> None:
        start.wait()
        got.append(get_encoding(model))

    threads = [threading.Thread(target=use, args=(model,)) for model in ["gpt-4o", "gpt-4"] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(loads) == ["cl100k_base", "o200k_base"]
    assert len({id(enc) for enc in got}) == 2


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


# --------------------------------------------------------------------------- chat prompts

# The example conversation of OpenAI's "How to count tokens with tiktoken" guide, with the
# prompt_tokens the OpenAI API reported for it there.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]

# The same guide's tools example and the prompt_tokens the API reported for it.
COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOLS_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "published"),
    [
        ("gpt-3.5-turbo", 129),
        ("gpt-4-0613", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
    ],
)
def test_published_message_counts(model: str, published: int) -> None:
    assert count_chat_prompt(model, {"model": model, "messages": COOKBOOK_MESSAGES}) == published


@pytest.mark.parametrize(
    ("model", "published"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_published_tools_counts(model: str, published: int) -> None:
    body = {"model": model, "messages": COOKBOOK_TOOLS_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert count_chat_prompt(model, body) == published


def test_single_message_framing() -> None:
    # 3 per message + "user" (1) + "hi" (1) + 3 reply priming
    assert count_chat_prompt("gpt-4o", {"messages": [{"role": "user", "content": "hi"}]}) == 8


def test_name_adds_its_tokens_plus_one() -> None:
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    named = {"messages": [{"role": "user", "name": "planner_bot", "content": "hi"}]}

    extra = count_chat_prompt("gpt-4o", named) - count_chat_prompt("gpt-4o", plain)

    assert extra == n("gpt-4o", "planner_bot") + 1


def test_text_parts_count_like_string_content() -> None:
    as_string = {"messages": [{"role": "user", "content": "Describe the weather today."}]}
    as_parts = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe the "},
                    {"type": "text", "text": "weather today."},
                ],
            }
        ]
    }
    expected = count_chat_prompt("gpt-4o", as_string) - n("gpt-4o", "Describe the weather today.")
    expected += n("gpt-4o", "Describe the ") + n("gpt-4o", "weather today.")
    assert count_chat_prompt("gpt-4o", as_parts) == expected


@pytest.mark.parametrize(
    ("model", "detail", "image_tokens"),
    [
        ("gpt-4o", "low", 85),
        ("gpt-4o", "high", 1445),
        ("gpt-4o", None, 1445),
        ("gpt-4.1", "auto", 1445),
        ("gpt-4o-mini", "low", 2833),
        ("gpt-4o-mini", "high", 2833 + 8 * 5667),
        ("gpt-4.1-mini", "low", 2489),
        ("openai/o4-mini", "high", 2642),
    ],
)
def test_image_parts_get_a_fixed_estimate(
    model: str, detail: str | None, image_tokens: int
) -> None:
    image: dict[str, object] = {"url": "https://example.invalid/cat.png"}
    if detail is not None:
        image["detail"] = detail
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": image}]}]}

    assert count_chat_prompt(model, body) == 3 + 1 + image_tokens + 3


def test_input_audio_estimated_from_its_size() -> None:
    data = "A" * 16_000  # 12 000 decoded bytes → 3 s at 4000 B/s → 30 tokens
    part = {"type": "input_audio", "input_audio": {"data": data, "format": "mp3"}}
    body = {"messages": [{"role": "user", "content": [part]}]}

    assert count_chat_prompt("gpt-4o-audio-preview", body) == 3 + 1 + 30 + 3


def test_assistant_tool_calls_are_counted() -> None:
    arguments = '{"location": "Paris, France", "unit": "celsius"}'
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_current_weather", "arguments": arguments},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
    }
    expected = 3 + n("gpt-4o", "assistant") + 3
    expected += 3 + n("gpt-4o", "get_current_weather") + n("gpt-4o", arguments)
    expected += 3 + n("gpt-4o", "get_time") + n("gpt-4o", "{}")

    assert count_chat_prompt("gpt-4o", {"messages": [message]}) == expected


def test_tool_result_message_is_counted() -> None:
    message = {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees and sunny"}
    expected = 3 + n("gpt-4o", "tool") + n("gpt-4o", "call_1")
    expected += n("gpt-4o", "22 degrees and sunny") + 3

    assert count_chat_prompt("gpt-4o", {"messages": [message]}) == expected


def test_legacy_function_call_is_counted() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "get_time", "arguments": '{"tz": "UTC"}'},
    }
    expected = 3 + n("gpt-4", "assistant") + n("gpt-4", "get_time")
    expected += n("gpt-4", '{"tz": "UTC"}') + 3

    assert count_chat_prompt("gpt-4", {"messages": [message]}) == expected


PING_TOOL = {
    "type": "function",
    "function": {"name": "ping", "description": "Check the service.", "parameters": {}},
}


@pytest.mark.parametrize(("model", "per_function"), [("gpt-4o", 7), ("gpt-4", 10)])
def test_first_tool_adds_its_definition_and_the_tools_block(model: str, per_function: int) -> None:
    messages = [{"role": "user", "content": "hi"}]
    without = count_chat_prompt(model, {"messages": messages})

    with_tool = count_chat_prompt(model, {"messages": messages, "tools": [PING_TOOL]})

    # the description's final period is dropped; 12 closes the tools block once
    assert with_tool - without == per_function + n(model, "ping:Check the service") + 12


def test_each_further_tool_adds_only_its_definition() -> None:
    messages = [{"role": "user", "content": "hi"}]
    one = count_chat_prompt("gpt-4o", {"messages": messages, "tools": COOKBOOK_TOOLS})

    tools = [*COOKBOOK_TOOLS, PING_TOOL]
    two = count_chat_prompt("gpt-4o", {"messages": messages, "tools": tools})

    assert two - one == 7 + n("gpt-4o", "ping:Check the service")


def test_legacy_functions_count_like_tools() -> None:
    messages = [{"role": "user", "content": "hi"}]
    as_tools = {"messages": messages, "tools": COOKBOOK_TOOLS}
    as_functions = {"messages": messages, "functions": [COOKBOOK_TOOLS[0]["function"]]}

    assert count_chat_prompt("gpt-4o", as_functions) == count_chat_prompt("gpt-4o", as_tools)


def test_nested_parameter_schema_counts_more_than_a_flat_one() -> None:
    flat = {"type": "array", "description": "Tags"}
    nested = {"type": "array", "description": "Tags", "items": {"type": "string"}}

    def body(prop: dict[str, object]) -> dict[str, object]:
        fn = {"name": "tag", "description": "", "parameters": {"properties": {"tags": prop}}}
        return {"messages": [], "tools": [{"type": "function", "function": fn}]}

    extra = count_chat_prompt("gpt-4o", body(nested)) - count_chat_prompt("gpt-4o", body(flat))

    assert extra == n("gpt-4o", '{"items":{"type":"string"}}')


def test_special_token_strings_in_messages_do_not_raise() -> None:
    text = "<|endoftext|><|im_start|>"
    body = {"messages": [{"role": "user", "content": text}]}
    assert count_chat_prompt("gpt-4o", body) == 3 + 1 + n("gpt-4o", text) + 3


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, 3),
        ({"messages": None}, 3),
        ({"messages": "hello"}, 3),
        ({"messages": [None, 1, "x", []]}, 3),
        ({"messages": [{}]}, 3 + 3),
        ({"messages": [{"role": "user", "content": None}]}, 3 + 1 + 3),
        ({"messages": [{"role": "user", "content": 42}]}, 3 + 1 + 3),
        ({"messages": [{"role": "user", "content": {"text": "x"}}]}, 3 + 1 + 3),
        ({"messages": [{"role": None, "content": "hi", "name": None}]}, 3 + 1 + 3),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            None,
                            7,
                            {"type": "mystery", "payload": [1, 2]},
                            {"type": "image_url"},
                            {"type": "image_url", "image_url": "https://x.invalid/a.png"},
                            {"type": "input_audio", "input_audio": None},
                            {"type": "input_audio", "input_audio": {"data": None}},
                            {"type": "file", "file": {"file_id": "file-1"}},
                            {"type": "text", "text": None},
                            {"type": "future_text_kind", "text": "hi"},
                        ],
                    }
                ]
            },
            3 + 1 + 1445 + 1445 + 1 + 3,
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": None, "function_call": "x"}]},
            3 + 1 + 3,
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [None, {}, {"function": None}]}]},
            3 + 1 + 3 + 3 + 3,
        ),
        ({"messages": [], "tools": None, "functions": "nope"}, 3),
        ({"messages": [], "tools": [None, 3, {"type": "web_search"}]}, 3),
    ],
)
def test_odd_shapes_count_what_they_can(body: dict[str, object], expected: int) -> None:
    assert count_chat_prompt("gpt-4o", body) == expected


def test_odd_tool_definitions_do_not_raise() -> None:
    fn = {
        "name": None,
        "description": 5,
        "parameters": {"properties": {"a": None, "b": {"enum": [1, None, "x"], "type": ["a"]}}},
    }
    body = {"messages": [], "tools": [{"type": "function", "function": fn}]}

    # 7 + ":" + params start 3 + ("a": 3 + "a") + ("b": 3 - 3 + 3×(3 + item) + "b:[\"a\"]:") + 12
    expected = 3 + 7 + n("gpt-4o", ":") + 3
    expected += 3 + n("gpt-4o", "a")
    expected += 3 - 3 + sum(3 + n("gpt-4o", item) for item in ("1", "null", "x"))
    expected += n("gpt-4o", 'b:["a"]:') + 12
    assert count_chat_prompt("gpt-4o", body) == expected


def test_non_string_arguments_are_counted_as_json() -> None:
    call = {"function": {"name": "f", "arguments": {"x": 1}}}
    body = {"messages": [{"role": "assistant", "tool_calls": [call]}]}

    expected = 3 + 1 + 3 + n("gpt-4o", "f") + n("gpt-4o", '{"x":1}') + 3
    assert count_chat_prompt("gpt-4o", body) == expected


# --------------------------------------------------------------------------- completions


def test_completion_counts_text_only() -> None:
    assert count_completion("gpt-4o", "hello world") == 2


def test_completion_counts_tool_calls() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]

    assert count_completion("gpt-4o", "", calls) == 3 + n("gpt-4o", "get_time") + n("gpt-4o", "{}")


def test_completion_tolerates_missing_text() -> None:
    assert count_completion("gpt-4o", None, None) == 0  # type: ignore[arg-type]


# --------------------------------------------------------------------------- async


def large_body() -> dict[str, object]:
    text = "The quick brown fox jumps over the lazy dog. " * 1000  # 45 000 characters
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": text},
        ]
    }


async def test_async_count_equals_sync_count_for_a_large_body() -> None:
    body = large_body()
    assert await count_chat_prompt_async("gpt-4o", body) == count_chat_prompt("gpt-4o", body)


async def test_async_count_of_a_small_body_runs_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = tokens.count_chat_prompt

    def recording(model: str, body: dict[str, object]) -> int:
        threads.append(threading.get_ident())
        return real(model, body)

    monkeypatch.setattr(tokens, "count_chat_prompt", recording)
    body = {"messages": [{"role": "user", "content": "hi"}]}

    assert await count_chat_prompt_async("gpt-4o", body) == 8
    assert threads == [threading.get_ident()]


async def test_async_count_of_a_large_body_leaves_the_loop_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop_ran = threading.Event()
    seen: dict[str, object] = {}
    real = tokens.count_chat_prompt

    def waiting(model: str, body: dict[str, object]) -> int:
        seen["thread"] = threading.get_ident()
        # Only a loop that is still running can set this; inline counting would never see it.
        seen["loop_ran"] = loop_ran.wait(timeout=10)
        return real(model, body)

    async def other_task() -> None:
        loop_ran.set()

    monkeypatch.setattr(tokens, "count_chat_prompt", waiting)
    body = large_body()

    count, _ = await asyncio.gather(count_chat_prompt_async("gpt-4o", body), other_task())

    assert seen == {"thread": seen["thread"], "loop_ran": True}
    assert seen["thread"] != threading.get_ident()
    assert count == real("gpt-4o", body)


async def test_async_threshold_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = tokens.count_chat_prompt

    def recording(model: str, body: dict[str, object]) -> int:
        threads.append(threading.get_ident())
        return real(model, body)

    monkeypatch.setattr(tokens, "count_chat_prompt", recording)
    body = {"messages": [{"role": "user", "content": "x" * 100}]}

    await count_chat_prompt_async("gpt-4o", body, offload_threshold_chars=50)

    assert threads != [threading.get_ident()]
    assert len(threads) == 1


async def test_async_count_loads_a_missing_encoding_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    real = tokens.count_chat_prompt

    def recording(model: str, body: dict[str, object]) -> int:
        threads.append(threading.get_ident())
        return real(model, body)

    monkeypatch.setattr(tokens, "_loaded", {})  # as in a fresh process
    monkeypatch.setattr(tokens, "count_chat_prompt", recording)
    body = {"messages": [{"role": "user", "content": "hi"}]}

    assert await count_chat_prompt_async("gpt-4o", body) == 8
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


# --------------------------------------------------------------------------- counts of repeated texts


def test_a_repeated_text_is_counted_once_and_keeps_its_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_counts", {})
    text = "An agent sends its whole conversation again with every call."
    expected = n("gpt-4o", text) + n("gpt-4o", "user") + 3 + 3  # message framing, reply priming
    encoded: list[str] = []
    enc = get_encoding("gpt-4o")
    real = enc.encode_ordinary

    def counting(value: str) -> list[int]:
        encoded.append(value)
        return real(value)

    monkeypatch.setattr(enc, "encode_ordinary", counting)
    body = {"messages": [{"role": "user", "content": text}]}

    assert count_chat_prompt("gpt-4o", body) == count_chat_prompt("gpt-4o", body) == expected
    assert encoded.count(text) == 1


def test_counts_are_kept_per_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_counts", {})
    assert count_text("gpt-4", "お誕生日おめでとう") == 9
    assert count_text("gpt-4o", "お誕生日おめでとう") == 8
    assert count_text("gpt-4", "お誕生日おめでとう") == 9


def test_the_count_cache_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_counts", {})
    monkeypatch.setattr(tokens, "_counted_chars", 0)
    monkeypatch.setattr(tokens, "COUNT_CACHE_CHARS", 20)
    count_text("gpt-4o", "hello world")        # 11 characters
    count_text("gpt-4o", "goodbye")            # 18
    assert len(tokens._counts) == 2
    assert count_text("gpt-4o", "hello again") == 2  # 29 > 20: the cache is emptied first
    assert list(tokens._counts) == [("o200k_base", "hello again")]
    assert tokens._counted_chars == 11


def test_a_text_too_large_for_the_count_cache_is_counted_but_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_counts", {})
    monkeypatch.setattr(tokens, "COUNT_CACHE_MAX_TEXT_CHARS", 10)
    assert count_text("gpt-4o", "hello world") == 2
    assert tokens._counts == {}


def test_the_encoding_of_a_model_name_is_remembered_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_encoding_names", {})
    monkeypatch.setattr(tokens, "ENCODING_NAME_CACHE_SIZE", 2)
    assert encoding_name_for_model("gpt-4o") == "o200k_base"
    assert encoding_name_for_model("gpt-4") == "cl100k_base"
    assert encoding_name_for_model("openai/gpt-4o-mini") == "o200k_base"  # full: starts over
    assert tokens._encoding_names == {"openai/gpt-4o-mini": "o200k_base"}


def test_cached_encoding_files_are_readable_by_other_users(fresh_encodings: Path) -> None:
    # An image build seeds the cache as root; the service runs as another user.
    tokens.preload_encodings()
    written = sorted(fresh_encodings.iterdir())
    assert len(written) == 4  # the two .tiktoken files and their quick-loading forms
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o644, path.name
