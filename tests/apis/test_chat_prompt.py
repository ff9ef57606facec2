"""Chat prompts counted as published (per-message framing, names), every other billed part bounded
from above (tools, schemas, tool calls, images, audio, files, prediction), odd shapes, completions."""

from __future__ import annotations

import pytest

import orjson

from proxy.apis.chat_media import AUDIO_PRICE_RATIO, FILE_MAX_PAGES, UNKNOWN_CONTEXT_TOKENS
from proxy.apis.chat_prompt import ChatCount, count_chat, count_chat_prompt, count_completion
from proxy.tokens import get_encoding


def n(model: str, text: str) -> int:
    return len(get_encoding(model).encode_ordinary(text))


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


def test_tool_result_message_is_counted() -> None:
    message = {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees and sunny"}
    expected = 3 + n("gpt-4o", "tool") + n("gpt-4o", "call_1")
    expected += n("gpt-4o", "22 degrees and sunny") + 3

    assert count_chat_prompt("gpt-4o", {"messages": [message]}) == expected


def test_special_token_strings_in_messages_do_not_raise() -> None:
    text = "<|endoftext|><|im_start|>"
    body = {"messages": [{"role": "user", "content": text}]}
    assert count_chat_prompt("gpt-4o", body) == 3 + 1 + n("gpt-4o", text) + 3



def j(model: str, value: object) -> int:
    return n(model, orjson.dumps(value).decode())


@pytest.mark.parametrize(("model", "per_function"), [("gpt-3.5-turbo", 10), ("gpt-4", 10), ("gpt-4o", 7)])
def test_tools_count_as_their_json_plus_the_published_framing(model: str, per_function: int) -> None:
    body = {"model": model, "messages": COOKBOOK_TOOLS_MESSAGES, "tools": COOKBOOK_TOOLS}
    messages_only = count_chat_prompt(model, {"messages": COOKBOOK_TOOLS_MESSAGES})

    expected = messages_only + sum(j(model, tool) + per_function for tool in COOKBOOK_TOOLS) + 12
    assert count_chat_prompt(model, body) == expected


@pytest.mark.parametrize(("model", "published"), [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101)])
def test_tools_never_count_below_what_the_api_reported(model: str, published: int) -> None:
    body = {"model": model, "messages": COOKBOOK_TOOLS_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert count_chat_prompt(model, body) > published


def test_legacy_functions_count_their_json_too() -> None:
    function = COOKBOOK_TOOLS[0]["function"]
    body = {"messages": [], "functions": [function]}
    assert count_chat_prompt("gpt-4o", body) == 3 + j("gpt-4o", function) + 7 + 12


def test_tool_calls_count_as_their_json_plus_three() -> None:
    calls = [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": {"x": 1}}},
    ]
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    expected = 3 + n("gpt-4o", "assistant") + sum(3 + j("gpt-4o", call) for call in calls) + 3

    assert count_chat_prompt("gpt-4o", {"messages": [message]}) == expected


def test_legacy_function_call_counts_as_its_json() -> None:
    call = {"name": "get_time", "arguments": '{"tz": "UTC"}'}
    message = {"role": "assistant", "content": None, "function_call": call}

    assert count_chat_prompt("gpt-4", {"messages": [message]}) == 3 + n("gpt-4", "assistant") + j("gpt-4", call) + 3


SCHEMA_FORMAT = {"type": "json_schema",
                 "json_schema": {"name": "answer", "schema": {"type": "object", "description": "word " * 2000}}}


def test_a_response_format_schema_counts_as_its_json() -> None:
    messages = [{"role": "user", "content": "hi"}]
    plain = count_chat_prompt("gpt-4o", {"messages": messages})

    with_schema = count_chat_prompt("gpt-4o", {"messages": messages, "response_format": SCHEMA_FORMAT})

    assert with_schema - plain == j("gpt-4o", SCHEMA_FORMAT) > 2000


def test_the_same_text_counts_alike_in_a_schema_and_in_tools() -> None:
    text = "word " * 2000
    in_schema = {"messages": [], "response_format": {"type": "json_schema",
                                                    "json_schema": {"name": "a", "description": text}}}
    in_tools = {"messages": [], "tools": [{"type": "function", "function": {"name": "a", "description": text}}]}

    assert abs(count_chat_prompt("gpt-4o", in_schema) - count_chat_prompt("gpt-4o", in_tools)) < 40


def test_unknown_top_level_fields_count_as_their_json_and_settings_do_not() -> None:
    messages = [{"role": "user", "content": "hi"}]
    settings = {"model": "gpt-4o", "temperature": 0.2, "max_tokens": 5, "n": 2, "stream": False, "seed": 7,
                "stop": ["x"], "metadata": {"a": "b"}, "user": "u", "stream_options": {"include_usage": True}}
    extra = {"tool_choice": {"type": "function", "function": {"name": "f"}}, "future_field": ["some", "text"]}

    plain = count_chat_prompt("gpt-4o", {"messages": messages})
    assert count_chat_prompt("gpt-4o", {"messages": messages, **settings}) == plain
    assert count_chat_prompt("gpt-4o", {"messages": messages, **extra}) == plain + sum(j("gpt-4o", v) for v in extra.values())


def test_prediction_is_output_not_prompt() -> None:
    messages = [{"role": "user", "content": "hi"}]
    code = "def add(a, b):\n    return a + b\n" * 10

    as_string = count_chat("gpt-4o", {"messages": messages, "prediction": {"type": "content", "content": code}})
    as_parts = count_chat("gpt-4o", {"messages": messages, "prediction": {
        "type": "content", "content": [{"type": "text", "text": code}, {"type": "text", "text": code}]}})

    assert as_string == ChatCount(count_chat_prompt("gpt-4o", {"messages": messages}), n("gpt-4o", code))
    assert as_parts.predicted == 2 * n("gpt-4o", code)


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
        ("gpt-5-nano", "low", 3779),
        ("openai/o4-mini", "high", 2642),
    ],
)
def test_an_image_of_unknown_size_counts_the_most_its_detail_allows(
    model: str, detail: str | None, image_tokens: int
) -> None:
    image: dict[str, object] = {"url": "https://example.invalid/cat.png"}
    if detail is not None:
        image["detail"] = detail
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": image}]}]}

    assert count_chat_prompt(model, body) == 3 + 1 + image_tokens + 3


def test_input_audio_bounded_by_its_size_at_the_lowest_bitrate() -> None:
    data = "A" * 16_000  # 12 000 decoded bytes → at most 12 s at 8 kbit/s → 120 audio tokens
    part = {"type": "input_audio", "input_audio": {"data": data, "format": "mp3"}}
    body = {"messages": [{"role": "user", "content": [part]}]}

    assert count_chat_prompt("gpt-4o-audio-preview", body) == 3 + 1 + 120 * AUDIO_PRICE_RATIO + 3


def test_a_file_counts_a_context_window_and_its_pages_as_images() -> None:
    part = {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,AAAA"}}
    body = {"messages": [{"role": "user", "content": [part]}]}
    fixed = 3 + 1 + n("gpt-4o", "report.pdf") + 3

    assert count_chat_prompt("gpt-4o", body, 128_000) == fixed + 128_000 + FILE_MAX_PAGES * 1445
    assert count_chat_prompt("gpt-4o", body) == fixed + UNKNOWN_CONTEXT_TOKENS + FILE_MAX_PAGES * 1445


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, 3),
        ({"messages": None}, 3),
        ({"messages": "hello"}, 3 + 3),  # "\"hello\"" as JSON
        ({"messages": [None, 1, "x", []]}, 3 + 1 + 2 + 1),
        ({"messages": [{}]}, 3 + 3),
        ({"messages": [{"role": "user", "content": None}]}, 3 + 1 + 3),
        ({"messages": [{"role": "user", "content": 42}]}, 3 + 1 + 1 + 3),
        ({"messages": [{"role": "user", "content": {"text": "x"}}]}, 3 + 1 + 5 + 3),
        ({"messages": [{"role": None, "content": "hi", "name": None}]}, 3 + 1 + 3),
        (
            {"messages": [{"role": "assistant", "tool_calls": [None, {}, {"function": None}]}]},
            3 + 1 + 3 + 3 + 3 + 5 + 3,
        ),
        ({"messages": [], "tools": None, "functions": "nope"}, 3 + 4),
        ({"messages": [], "tools": [None, 3]}, 3 + 1 + 7 + 12),
    ],
)
def test_odd_shapes_count_what_they_hold(body: dict[str, object], expected: int) -> None:
    assert count_chat_prompt("gpt-4o", body) == expected


def test_odd_content_parts_are_bounded_never_skipped() -> None:
    parts = [
        None,
        7,
        {"type": "mystery", "payload": [1, 2]},
        {"type": "image_url"},
        {"type": "image_url", "image_url": "https://x.invalid/a.png"},
        {"type": "input_audio", "input_audio": None},
        {"type": "text", "text": None},
        {"type": "future_text_kind", "text": "hi"},
    ]
    body = {"messages": [{"role": "user", "content": parts}]}
    expected = 3 + 1 + 3 + n("gpt-4o", "7") + j("gpt-4o", parts[2]) + 1445 + 1445 + 10 * AUDIO_PRICE_RATIO
    expected += j("gpt-4o", parts[7])

    assert count_chat_prompt("gpt-4o", body) == expected


# --------------------------------------------------------------------------- completions


def test_completion_counts_text_only() -> None:
    assert count_completion("gpt-4o", "hello world") == 2


def test_completion_counts_tool_calls() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]

    assert count_completion("gpt-4o", "", calls) == 3 + n("gpt-4o", "get_time") + n("gpt-4o", "{}")


def test_completion_tolerates_missing_text() -> None:
    assert count_completion("gpt-4o", None, None) == 0  # type: ignore[arg-type]
