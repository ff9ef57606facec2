"""Chat prompts counted as published (per-message framing, names, tools), odd shapes, completions."""

from __future__ import annotations

import pytest

from proxy.apis.chat_prompt import count_chat_prompt, count_completion
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
