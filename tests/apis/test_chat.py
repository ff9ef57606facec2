"""The chat completions shape on its own: what it parses, forwards and measures."""

from __future__ import annotations

import orjson
import pytest

from pricing.catalog import Catalog
from pricing.cost import Usage
from proxy.apis import Measured
from proxy.apis.chat import CHAT
from proxy.apis.chat_prompt import count_completion
from proxy.errors import BadRequest

MESSAGES = [{"role": "user", "content": "Say something."}]


def chat_body(**fields) -> bytes:
    return orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, **fields})


def event(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def test_the_shape_names_its_endpoint_path_and_error_family():
    assert (CHAT.name, CHAT.upstream_path, CHAT.family) == ("chat.completions", "/chat/completions", "openai")


@pytest.mark.parametrize(("fields", "max_output", "bound_field"), [
    ({}, None, "max_completion_tokens"),
    ({"max_tokens": 50}, 50, "max_tokens"),
    ({"max_completion_tokens": 40, "max_tokens": 50}, 40, "max_completion_tokens"),
])
def test_parse_reads_the_output_bound_and_the_field_to_clamp(fields, max_output, bound_field):
    request = CHAT.parse(chat_body(n=2, **fields))
    assert (request.model, request.stream, request.n) == ("gpt-4o-mini", False, 2)
    assert (request.max_output, request.bound_field) == (max_output, bound_field)


def test_parse_refuses_a_body_without_messages_with_400():
    with pytest.raises(BadRequest) as refused:
        CHAT.parse(orjson.dumps({"model": "gpt-4o-mini"}))
    assert (refused.value.status, refused.value.param, refused.value.code) == (
        400, "messages", "missing_required_parameter")


def test_forward_body_is_the_clients_bytes_when_nothing_changes():
    raw = chat_body(max_tokens=50)
    assert CHAT.forward_body(raw, CHAT.parse(raw), None) is raw


def test_forward_body_of_a_stream_asks_for_usage_and_sets_the_bound():
    raw = chat_body(stream=True, stream_options={"other": 1}, max_tokens=50)
    sent = orjson.loads(CHAT.forward_body(raw, CHAT.parse(raw), 20))
    assert sent["stream_options"] == {"other": 1, "include_usage": True}
    assert sent["max_tokens"] == 20


def test_measure_body_takes_the_reported_usage():
    payload = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3,
                                                     "prompt_tokens_details": {"cached_tokens": 2}}})
    measured = CHAT.measure_body(payload, CHAT.parse(chat_body()), 99)
    assert measured == Measured(Usage(prompt_tokens=7, completion_tokens=3, cached_tokens=2), estimated=False)


def test_measure_body_without_usage_estimates_from_the_text():
    payload = orjson.dumps({"choices": [{"message": {"content": "hello world"}}]})
    measured = CHAT.measure_body(payload, CHAT.parse(chat_body()), 12)
    assert measured == Measured(Usage(prompt_tokens=12, completion_tokens=2), estimated=True)


def test_the_stream_meter_keeps_the_usage_chunk_from_a_client_that_did_not_ask_for_it():
    meter = CHAT.stream_meter(CHAT.parse(chat_body(stream=True)))
    content = event({"choices": [{"index": 0, "delta": {"content": "hello world"}}], "usage": None})
    usage = event({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})
    assert [meter.take(e) for e in (content, usage, b"data: [DONE]\n\n")] == [True, False, True]
    assert meter.result(99) == Measured(Usage(prompt_tokens=9, completion_tokens=2), estimated=False)


def test_the_stream_meter_passes_the_usage_chunk_to_a_client_that_asked_for_it():
    meter = CHAT.stream_meter(CHAT.parse(chat_body(stream=True, stream_options={"include_usage": True})))
    assert meter.take(event({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})) is True


def test_the_stream_meter_estimates_a_stream_without_usage_from_its_text_and_tool_calls():
    meter = CHAT.stream_meter(CHAT.parse(chat_body(stream=True)))
    call = {"index": 0, "function": {"name": "get_time", "arguments": "{}"}}
    meter.take(event({"choices": [{"index": 0, "delta": {"content": "hello world"}}]}))
    meter.take(event({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}))
    expected = count_completion("gpt-4o-mini", "hello world",
                                [{"type": "function", "function": {"name": "get_time", "arguments": "{}"}}])
    assert meter.result(12) == Measured(Usage(prompt_tokens=12, completion_tokens=expected), estimated=True)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_tokens", 2**31, "Invalid value for 'max_tokens': must be at most 2147483647, got 2147483648."),
        ("max_completion_tokens", 2**62,
         f"Invalid value for 'max_completion_tokens': must be at most 2147483647, got {2**62}."),
        ("n", 129, "Invalid value for 'n': must be at most 128, got 129."),
        ("n", 2**40, f"Invalid value for 'n': must be at most 128, got {2**40}."),
    ],
)
def test_numbers_too_large_to_price_are_refused_naming_the_field(field: str, value: int, message: str) -> None:
    body = {"model": "gpt-4o", "messages": [], field: value}

    with pytest.raises(BadRequest) as refused:
        CHAT.parse(orjson.dumps(body))

    assert (refused.value.message, refused.value.param, refused.value.code) == (message, field, "invalid_value")


def test_the_largest_numbers_that_can_be_priced_are_taken() -> None:
    body = {"model": "gpt-4o", "messages": [], "max_completion_tokens": 2**31 - 1, "n": 128}

    request = CHAT.parse(orjson.dumps(body))

    assert (request.max_output, request.n, request.output_extra) == (2**31 - 1, 128, 0)


async def test_counting_a_body_sets_its_prediction_as_output_per_choice() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
            "prediction": {"type": "content", "content": "hello world"}}
    request = CHAT.parse(orjson.dumps(body))

    prompt = await CHAT.count_prompt(request, Catalog.load().resolve("gpt-4o"))

    assert (prompt, request.output_extra) == (8, 2)
