"""The embeddings shape on its own: what it parses, counts, forwards and measures."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from pricing.catalog import Catalog
from pricing.cost import Usage, cost_nano, worst_case_nano
from proxy.apis import Measured
from proxy.apis.embeddings import EMBEDDINGS, MAX_INPUTS
from proxy.budgets import output_bound
from proxy.errors import BadRequest
from proxy.settings import Settings
from proxy.tokens import count_text
from proxy.tokens.counting import DEFAULT_OFFLOAD_THRESHOLD_CHARS

MODEL = "text-embedding-3-small"
CATALOG = Catalog.load()


def body(**fields) -> bytes:
    return orjson.dumps({"model": MODEL, "input": "hello world", **fields})


def counted(raw: bytes) -> int:
    request = EMBEDDINGS.parse(raw)
    return asyncio.run(EMBEDDINGS.count_prompt(request, CATALOG.resolve(request.model)))


def refusal(raw: bytes) -> tuple[int, dict]:
    with pytest.raises(BadRequest) as refused:
        EMBEDDINGS.parse(raw)
    return refused.value.status, refused.value.body()


def error(message: str, param: str | None, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def test_the_shape_names_its_endpoint_path_and_error_family():
    assert (EMBEDDINGS.name, EMBEDDINGS.upstream_path, EMBEDDINGS.family) == ("embeddings", "/embeddings", "openai")


def test_a_request_generates_nothing_and_has_no_bound_to_clamp():
    request = EMBEDDINGS.parse(body(stream=True, dimensions=8, encoding_format="base64"))
    assert (request.model, request.stream, request.max_output, request.bound_field, request.n) == (
        MODEL, False, 0, None, 1)
    assert (request.output_extra, request.hosted_calls, request.min_output, request.prompt_field) == (
        0, 0, 1, "input")
    assert output_bound(request, CATALOG.resolve(MODEL), Settings()) == (0, False)


@pytest.mark.parametrize(("value", "tokens"), [
    ("hello world", count_text(MODEL, "hello world")),
    (["hello world", "goodbye <|endoftext|>"], count_text(MODEL, "hello world") + count_text(MODEL, "goodbye <|endoftext|>")),
    ([101, 202, 303, 404], 4),
    ([[1, 2, 3], [4, 5], "two words"], 5 + count_text(MODEL, "two words")),
])
def test_the_worst_case_is_the_inputs_counted(value, tokens):
    assert counted(body(input=value)) == tokens


def test_a_large_input_is_counted_off_the_event_loop_to_the_same_count():
    text = "embedding " * (DEFAULT_OFFLOAD_THRESHOLD_CHARS // 5)
    assert counted(body(input=[text, "more"])) == count_text(MODEL, text) + count_text(MODEL, "more")


def test_the_worst_case_is_priced_at_the_input_rate_only_and_covers_the_bill():
    raw = body(input=["a longer sentence to embed", [1, 2, 3]])
    price = CATALOG.resolve(MODEL)
    prompt = counted(raw)
    billed = count_text(MODEL, "a longer sentence to embed") + 3
    assert prompt >= billed
    assert worst_case_nano(price, prompt, 0) >= cost_nano(price, Usage(billed, 0))
    assert worst_case_nano(price, prompt, 0) == prompt * 20  # $0.02 per million tokens: 20 nano-USD each


@pytest.mark.parametrize(("raw", "message", "param", "code"), [
    (b"", "The request body is empty; send a JSON object.", None, "invalid_json"),
    (b"[1]", "The request body must be a JSON object, not an array.", None, "invalid_json"),
    (orjson.dumps({"input": "x"}), "Missing required parameter: 'model'.", "model", "missing_required_parameter"),
    (orjson.dumps({"model": 3, "input": "x"}), "Invalid type for 'model': expected a non-empty string, got a number.",
     "model", "invalid_type"),
    (orjson.dumps({"model": MODEL}), "Missing required parameter: 'input'.", "input", "missing_required_parameter"),
    (body(input=None), "Missing required parameter: 'input'.", "input", "missing_required_parameter"),
    (body(input=5), "Invalid type for 'input': expected a string, an array of strings, an array of integers or an "
     "array of integer arrays, got a number.", "input", "invalid_type"),
    (body(input={"text": "x"}), "Invalid type for 'input': expected a string, an array of strings, an array of "
     "integers or an array of integer arrays, got an object.", "input", "invalid_type"),
    (body(input=""), "Invalid value for 'input': must not be an empty string.", "input", "invalid_value"),
    (body(input=[]), "Invalid value for 'input': must not be an empty array.", "input", "invalid_value"),
    (body(input=["a", ""]), "Invalid value for 'input[1]': must not be an empty string.", "input[1]", "invalid_value"),
    (body(input=["a", []]), "Invalid value for 'input[1]': must not be an empty array.", "input[1]", "invalid_value"),
    (body(input=["a", 7]), "Invalid type for 'input[1]': expected a string or an array of integers, got a number.",
     "input[1]", "invalid_type"),
    (body(input=[None]), "Invalid type for 'input[0]': expected a string or an array of integers, got null.",
     "input[0]", "invalid_type"),
    (body(input=[1, 2, "x"]), "Invalid type for 'input[2]': expected an integer, got a string.", "input[2]",
     "invalid_type"),
    (body(input=[1, 2.5]), "Invalid type for 'input[1]': expected an integer, got a number.", "input[1]",
     "invalid_type"),
    (body(input=[[1, 2], [3, True]]), "Invalid type for 'input[1][1]': expected an integer, got a boolean.",
     "input[1][1]", "invalid_type"),
    (b'{"model": "text-embedding-3-small", "input": [[1, 100000000000000000000000000000]]}', "Invalid type for 'input[0][1]': expected an integer, got a number.",
     "input[0][1]", "invalid_type"),
    (body(input=["x"] * (MAX_INPUTS + 1)), "Invalid value for 'input': must hold at most 2048 inputs, got 2049.",
     "input", "invalid_value"),
])
def test_bad_input_is_a_400_naming_the_field(raw, message, param, code):
    assert refusal(raw) == (400, error(message, param, code))


def test_the_most_inputs_are_taken():
    assert len(EMBEDDINGS.parse(body(input=["x"] * MAX_INPUTS)).inputs) == MAX_INPUTS


def test_forward_body_is_always_the_clients_bytes():
    raw = body(encoding_format="base64", dimensions=256, user="u1")
    assert EMBEDDINGS.forward_body(raw, EMBEDDINGS.parse(raw), None) is raw


@pytest.mark.parametrize(("usage", "tokens"), [
    ({"prompt_tokens": 8, "total_tokens": 8}, 8),
    ({"total_tokens": 6}, 6),
    ({"prompt_tokens": 0, "total_tokens": 0}, 0),
])
def test_measure_body_takes_the_reported_usage_all_as_prompt(usage, tokens):
    payload = orjson.dumps({"object": "list", "data": [], "model": MODEL, "usage": usage})
    assert EMBEDDINGS.measure_body(payload, EMBEDDINGS.parse(body()), 99) == Measured(
        Usage(prompt_tokens=tokens, completion_tokens=0), estimated=False)


@pytest.mark.parametrize("payload", [
    orjson.dumps({"object": "list", "data": []}),
    orjson.dumps({"object": "list", "data": [], "usage": {"prompt_tokens": "8"}}),
    orjson.dumps({"object": "list", "data": [], "usage": None}),
    b"not json",
    b"data: {}\n\n",
])
def test_measure_body_without_usage_charges_the_counted_input_as_estimated(payload):
    assert EMBEDDINGS.measure_body(payload, EMBEDDINGS.parse(body()), 12) == Measured(
        Usage(prompt_tokens=12, completion_tokens=0), estimated=True)


def test_the_stream_meter_passes_every_event_and_reads_usage_when_there_is_one():
    meter = EMBEDDINGS.stream_meter(EMBEDDINGS.parse(body()))
    events = [b"data: {\"object\": \"list\"}\n\n", b"data: {\"usage\": {\"prompt_tokens\": 4}}\n\n",
              b"data: [DONE]\n\n", b": comment\n\n", b"data: {broken\n\n"]
    assert [meter.take(e) for e in events] == [True] * len(events)
    assert meter.result(99) == Measured(Usage(prompt_tokens=4, completion_tokens=0), estimated=False)
    empty = EMBEDDINGS.stream_meter(EMBEDDINGS.parse(body()))
    assert empty.take(b"data: [DONE]\n\n")
    assert empty.result(7) == Measured(Usage(prompt_tokens=7, completion_tokens=0), estimated=True)
