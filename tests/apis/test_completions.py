"""The legacy completions shape on its own: what it parses, counts, forwards and measures."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from pricing.catalog import Catalog
from pricing.cost import Usage
from proxy.apis import Measured
from proxy.apis.completions import COMPLETIONS, DEFAULT_MAX_TOKENS, SUFFIX_FRAMING
from proxy.budgets import output_bound, reserve_budget
from proxy.domain import Attribution
from proxy.errors import BadRequest
from proxy.settings import Settings
from proxy.tokens import count_text, get_encoding

MODEL = "gpt-3.5-turbo-instruct"
CATALOG = Catalog.load()


def body(**fields) -> bytes:
    return orjson.dumps({"model": MODEL, "prompt": "Once upon a time", **fields})


def counted(raw: bytes) -> int:
    request = COMPLETIONS.parse(raw)
    return asyncio.run(COMPLETIONS.count_prompt(request, CATALOG.resolve(request.model)))


def event(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def tokens(text: str) -> int:
    return count_text(MODEL, text)


def test_the_shape_names_its_endpoint_path_and_error_family():
    assert (COMPLETIONS.name, COMPLETIONS.upstream_path, COMPLETIONS.family) == (
        "completions", "/completions", "openai")


def test_without_max_tokens_the_bound_is_the_apis_default_of_16():
    request = COMPLETIONS.parse(body())
    assert (request.max_output, request.bound_field, request.n, request.stream) == (16, "max_tokens", 1, False)
    assert (request.output_extra, request.hosted_calls, request.min_output, request.prompt_field) == (
        0, 0, 1, "prompt")
    assert output_bound(request, CATALOG.resolve(MODEL), Settings()) == (DEFAULT_MAX_TOKENS, False)


@pytest.mark.parametrize(("fields", "max_output", "n"), [
    ({"max_tokens": 50}, 50, 1),
    ({"max_tokens": 0, "echo": True}, 0, 1),
    ({"max_tokens": None, "n": 3}, 16, 3),
    ({"max_tokens": 7, "n": 2, "best_of": 5}, 7, 5),
    ({"max_tokens": 7, "n": 4, "best_of": 2}, 7, 4),
    ({"max_tokens": 7, "n": 2, "best_of": 3, "prompt": ["a", "b", [1, 2], "d"]}, 7, 12),
    ({"prompt": [1, 2, 3], "n": 2}, 16, 2),
])
def test_every_completion_generated_counts_once_in_n(fields, max_output, n):
    request = COMPLETIONS.parse(body(**fields))
    assert (request.max_output, request.n) == (max_output, n)


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, tokens("Once upon a time")),
    ({"prompt": ["Once upon", "a time <|endoftext|>"]}, tokens("Once upon") + tokens("a time <|endoftext|>")),
    ({"prompt": [464, 2068, 7586]}, 3),
    ({"prompt": [[464, 2068], [7586], "words here"]}, 3 + tokens("words here")),
    ({"prompt": ""}, 1),
    ({"prompt": ["", "x"]}, 1 + tokens("x")),
    ({"suffix": "    return x"}, tokens("Once upon a time") + tokens("    return x") + SUFFIX_FRAMING),
    ({"prompt": ["a b", [1, 2]], "suffix": "end"}, tokens("a b") + 2 + 2 * (tokens("end") + SUFFIX_FRAMING)),
    ({"suffix": "", "n": 5, "echo": True}, tokens("Once upon a time")),
])
def test_the_prompt_is_every_prompt_and_the_suffix_with_each(fields, expected):
    assert counted(body(**fields)) == expected


def test_a_large_prompt_is_counted_off_the_event_loop_to_the_same_count():
    text = "completion " * 4000
    assert counted(body(prompt=[text, text], suffix=text)) == 4 * tokens(text) + 2 * SUFFIX_FRAMING


def bad(message: str, param: str, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


@pytest.mark.parametrize(("raw", "expected"), [
    (orjson.dumps({"prompt": "x"}), bad("Missing required parameter: 'model'.", "model", "missing_required_parameter")),
    (orjson.dumps({"model": "", "prompt": "x"}),
     bad("Invalid type for 'model': expected a non-empty string, got a string.", "model", "invalid_type")),
    (orjson.dumps({"model": MODEL}), bad("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")),
    (body(prompt=12), bad("Invalid type for 'prompt': expected a string, an array of strings, an array of integers "
                          "or an array of integer arrays, got a number.", "prompt", "invalid_type")),
    (body(prompt=[]), bad("Invalid value for 'prompt': must not be an empty array.", "prompt", "invalid_value")),
    (body(prompt=["a", {"text": "b"}]),
     bad("Invalid type for 'prompt[1]': expected a string or an array of integers, got an object.", "prompt[1]",
         "invalid_type")),
    (body(prompt=[[1], []]), bad("Invalid value for 'prompt[1]': must not be an empty array.", "prompt[1]",
                                 "invalid_value")),
    (body(prompt=[5, "x"]), bad("Invalid type for 'prompt[1]': expected an integer, got a string.", "prompt[1]",
                                "invalid_type")),
    (body(suffix=3), bad("Invalid type for 'suffix': expected a string, got a number.", "suffix", "invalid_type")),
    (body(echo="yes"), bad("Invalid type for 'echo': expected a boolean, got a string.", "echo", "invalid_type")),
    (body(max_tokens="16"), bad("Invalid type for 'max_tokens': expected an integer, got a string.", "max_tokens",
                                "invalid_type")),
    (body(max_tokens=True), bad("Invalid type for 'max_tokens': expected an integer, got a boolean.", "max_tokens",
                                "invalid_type")),
    (body(max_tokens=1.5), bad("Invalid type for 'max_tokens': expected an integer, got a number.", "max_tokens",
                               "invalid_type")),
    (body(max_tokens=-1), bad("Invalid value for 'max_tokens': must be between 0 and 2147483647, got -1.",
                              "max_tokens", "invalid_value")),
    (body(max_tokens=2**31), bad("Invalid value for 'max_tokens': must be between 0 and 2147483647, got 2147483648.",
                                 "max_tokens", "invalid_value")),
    (body(n=0), bad("Invalid value for 'n': must be at least 1, got 0.", "n", "invalid_value")),
    (body(n=129), bad("Invalid value for 'n': must be at most 128, got 129.", "n", "invalid_value")),
    (body(best_of="3"), bad("Invalid type for 'best_of': expected an integer, got a string.", "best_of",
                            "invalid_type")),
    (body(best_of=0), bad("Invalid value for 'best_of': must be at least 1, got 0.", "best_of", "invalid_value")),
    (body(best_of=200), bad("Invalid value for 'best_of': must be at most 128, got 200.", "best_of",
                            "invalid_value")),
    (body(stream="true"), bad("Invalid type for 'stream': expected a boolean, got a string.", "stream",
                              "invalid_type")),
    (body(stream=True, stream_options=[]),
     bad("Invalid type for 'stream_options': expected an object, got an array.", "stream_options", "invalid_type")),
    (body(stream=True, stream_options={"include_usage": 1}),
     bad("Invalid type for 'stream_options.include_usage': expected a boolean, got a number.",
         "stream_options.include_usage", "invalid_type")),
])
def test_bad_input_is_a_400_naming_the_field(raw, expected):
    with pytest.raises(BadRequest) as refused:
        COMPLETIONS.parse(raw)
    assert (refused.value.status, refused.value.body()) == (400, expected)


def test_a_body_that_is_not_a_json_object_is_a_400():
    with pytest.raises(BadRequest) as refused:
        COMPLETIONS.parse(b'"prompt"')
    assert (refused.value.status, refused.value.body()) == (400, {"error": {
        "message": "The request body must be a JSON object, not a string.", "type": "invalid_request_error",
        "param": None, "code": "invalid_json"}})


# --- forwarding ------------------------------------------------------------------------------

def test_forward_body_is_the_clients_bytes_when_it_sets_max_tokens_and_nothing_changes():
    raw = body(max_tokens=50, n=2)
    assert COMPLETIONS.forward_body(raw, COMPLETIONS.parse(raw), None) is raw
    asked = body(max_tokens=50, stream=True, stream_options={"include_usage": True})
    assert COMPLETIONS.forward_body(asked, COMPLETIONS.parse(asked), None) is asked


def test_forward_body_writes_the_default_max_tokens_the_bound_was_priced_with():
    raw = body(max_tokens=None)
    sent = orjson.loads(COMPLETIONS.forward_body(raw, COMPLETIONS.parse(raw), None))
    assert sent == {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 16}


def test_forward_body_of_a_stream_asks_for_usage_and_sets_a_clamped_bound():
    raw = body(stream=True, stream_options={"other": 1}, max_tokens=500)
    sent = orjson.loads(COMPLETIONS.forward_body(raw, COMPLETIONS.parse(raw), 300))
    assert sent["stream_options"] == {"other": 1, "include_usage": True}
    assert sent["max_tokens"] == 300


# --- measuring -------------------------------------------------------------------------------

def test_measure_body_takes_the_reported_usage():
    payload = orjson.dumps({"object": "text_completion", "choices": [{"text": "x", "index": 0}],
                            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
    assert COMPLETIONS.measure_body(payload, COMPLETIONS.parse(body()), 99) == Measured(
        Usage(prompt_tokens=7, completion_tokens=3), estimated=False)


def test_measure_body_without_usage_counts_the_texts_of_every_choice():
    payload = orjson.dumps({"choices": [{"text": " hello world", "index": 0}, {"text": " goodbye", "index": 1}]})
    assert COMPLETIONS.measure_body(payload, COMPLETIONS.parse(body(n=2)), 12) == Measured(
        Usage(prompt_tokens=12, completion_tokens=tokens(" hello world") + tokens(" goodbye")), estimated=True)


def test_an_estimate_leaves_an_echoed_prompt_out_of_the_completion():
    prompt = get_encoding(MODEL).encode("Hello there")
    request = COMPLETIONS.parse(body(prompt=["Once upon", prompt], echo=True))
    payload = orjson.dumps({"choices": [{"text": "Once upon a time", "index": 0},
                                        {"text": "Hello there friend", "index": 1}]})
    assert COMPLETIONS.measure_body(payload, request, 5).usage.completion_tokens == tokens(" a time") + tokens(" friend")


def test_an_estimate_counts_the_best_of_candidates_not_returned():
    request = COMPLETIONS.parse(body(n=2, best_of=5))
    payload = orjson.dumps({"choices": [{"text": " one two three", "index": 0}, {"text": " four", "index": 1}]})
    seen = tokens(" one two three") + tokens(" four")
    assert COMPLETIONS.measure_body(payload, request, 5).usage.completion_tokens == -(-seen * 5 // 2)


@pytest.mark.parametrize("payload", [b"not json", b"[]", orjson.dumps({"choices": None})])
def test_a_body_farebox_cannot_read_charges_the_prompt_estimated(payload):
    assert COMPLETIONS.measure_body(payload, COMPLETIONS.parse(body()), 9) == Measured(
        Usage(prompt_tokens=9, completion_tokens=0), estimated=True)


def chunk(text: str, index: int = 0, **extra) -> bytes:
    return event({"object": "text_completion", "choices": [{"text": text, "index": index, "logprobs": None,
                                                            "finish_reason": None}], **extra})


def test_the_stream_meter_keeps_the_usage_chunk_from_a_client_that_did_not_ask_for_it():
    meter = COMPLETIONS.stream_meter(COMPLETIONS.parse(body(stream=True)))
    usage = event({"object": "text_completion", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2,
                                                                         "total_tokens": 11}})
    events = [chunk(" hello", usage=None), chunk(" world", usage=None), usage, b"data: [DONE]\n\n"]
    assert [meter.take(e) for e in events] == [True, True, False, True]
    assert meter.result(99) == Measured(Usage(prompt_tokens=9, completion_tokens=2), estimated=False)


def test_the_stream_meter_passes_the_usage_chunk_to_a_client_that_asked_for_it():
    meter = COMPLETIONS.stream_meter(COMPLETIONS.parse(body(stream=True, stream_options={"include_usage": True})))
    usage = event({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})
    assert [meter.take(e) for e in (chunk(" hi"), usage, b"data: [DONE]\n\n")] == [True, True, True]
    assert meter.result(99).usage.completion_tokens == 2


def test_a_stream_without_usage_is_estimated_from_its_texts_by_choice():
    meter = COMPLETIONS.stream_meter(COMPLETIONS.parse(body(stream=True, n=2, echo=True, prompt="Tell")))
    for e in (chunk("Tell", 0), chunk("Tell", 1), chunk(" me", 0), chunk(" a", 1), chunk(" story", 0),
              b"data: {broken\n\n", b": keep-alive\n\n", b"data: [DONE]\n\n"):
        assert meter.take(e)
    assert meter.result(4) == Measured(Usage(prompt_tokens=4, completion_tokens=tokens(" me story") + tokens(" a")),
                                       estimated=True)


async def test_a_worst_case_too_large_to_price_is_a_400_naming_max_tokens():
    request = COMPLETIONS.parse(body(prompt=["a", "b"], n=128, max_tokens=2**31 - 1))
    with pytest.raises(BadRequest) as refused:
        await reserve_budget(None, Settings(), "r1", Attribution("acme", "default", None, None),
                             CATALOG.resolve(MODEL), 2, request)
    assert refused.value.param == "max_tokens"
    assert refused.value.message.endswith("lower 'max_tokens'.")


def test_an_echoed_token_array_the_encoding_cannot_decode_is_counted_whole():
    request = COMPLETIONS.parse(body(prompt=[[10**9, 5]], echo=True))
    payload = orjson.dumps({"choices": [{"text": "odd text", "index": 0}]})
    assert COMPLETIONS.measure_body(payload, request, 2) == Measured(
        Usage(prompt_tokens=2, completion_tokens=tokens("odd text")), estimated=True)
