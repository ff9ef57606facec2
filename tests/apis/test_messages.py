"""The Anthropic Messages shape on its own: what it parses, refuses, forwards and measures."""

from __future__ import annotations

import orjson
import pytest

from pricing.cost import Usage
from proxy.apis import Measured
from proxy.apis.chat_prompt import count_completion
from proxy.apis.messages import DEFAULT_MAX_USES, MESSAGES
from proxy.errors import BadRequest

MODEL = "claude-sonnet-4-5"
USER = [{"role": "user", "content": "Say something."}]


def body(**fields) -> dict:
    return {"model": MODEL, "max_tokens": 100, "messages": USER, **fields}


def raw(**fields) -> bytes:
    return orjson.dumps(body(**fields))


def test_the_shape_names_its_endpoint_path_and_error_family():
    assert (MESSAGES.name, MESSAGES.upstream_path, MESSAGES.family) == ("messages", "/v1/messages", "anthropic")


def test_parse_reads_what_the_flow_needs():
    request = MESSAGES.parse(raw(stream=True, system=[{"type": "text", "text": "Be terse."}]))
    assert (request.model, request.stream, request.max_output, request.bound_field) == (MODEL, True, 100, "max_tokens")
    assert (request.n, request.output_extra, request.hosted_calls, request.min_output) == (1, 0, 0, 1)
    assert request.prompt_field == "messages"


def test_thinking_raises_the_smallest_output_bound():
    request = MESSAGES.parse(raw(max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2000}))
    assert (request.thinking_budget, request.min_output) == (2000, 1025)
    assert MESSAGES.parse(raw(thinking={"type": "disabled"})).min_output == 1
    # Interleaved thinking (a beta) lets the budget exceed max_tokens: the upstream judges.
    interleaved = MESSAGES.parse(raw(max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 5000}))
    assert (interleaved.max_output, interleaved.thinking_budget, interleaved.min_output) == (2000, 5000, 1025)


def without(name: str) -> bytes:
    return orjson.dumps({k: v for k, v in body().items() if k != name})


@pytest.mark.parametrize(("sent", "message", "param", "code"), [
    (b"", "The request body is empty; send a JSON object.", None, "invalid_json"),
    (b"[1]", "The request body must be a JSON object, not an array.", None, "invalid_json"),
    (without("model"), "model: Field required", "model", "missing_required_parameter"),
    (raw(model=3), "model: Input should be a non-empty string, got a number", "model", "invalid_type"),
    (raw(model=" "), "model: Input should be a non-empty string, got a string", "model", "invalid_type"),
    (without("messages"), "messages: Field required", "messages", "missing_required_parameter"),
    (raw(messages="hi"), "messages: Input should be a valid list, got a string", "messages", "invalid_type"),
    (without("max_tokens"), "max_tokens: Field required", "max_tokens", "missing_required_parameter"),
    (raw(max_tokens=None), "max_tokens: Field required", "max_tokens", "missing_required_parameter"),
    (raw(max_tokens="9"), "max_tokens: Input should be a valid integer, got a string", "max_tokens", "invalid_type"),
    (raw(max_tokens=True), "max_tokens: Input should be a valid integer, got a boolean", "max_tokens", "invalid_type"),
    (raw(max_tokens=1.5), "max_tokens: Input should be a valid integer, got a number", "max_tokens", "invalid_type"),
    (raw(max_tokens=0), "max_tokens: Input should be greater than or equal to 1", "max_tokens", "invalid_value"),
    (raw(max_tokens=2**31), "max_tokens: Input should be less than or equal to 2147483647", "max_tokens",
     "invalid_value"),
    (raw(stream="yes"), "stream: Input should be a valid boolean, got a string", "stream", "invalid_type"),
    (raw(system=5), "system: Input should be a string or a list of content blocks, got a number", "system",
     "invalid_type"),
    (raw(tools={}), "tools: Input should be a valid list, got an object", "tools", "invalid_type"),
    (raw(tools=["f"]), "tools.0: Input should be an object, got a string", "tools.0", "invalid_type"),
    (raw(tools=[{"type": 1}]), "tools.0.type: Input should be a valid string, got a number", "tools.0.type",
     "invalid_type"),
    (raw(tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 0}]),
     "tools.0.max_uses: Input should be greater than or equal to 1", "tools.0.max_uses", "invalid_value"),
    (raw(tools=[{"type": "web_fetch_20250910", "name": "web_fetch", "max_content_tokens": "x"}]),
     "tools.0.max_content_tokens: Input should be a valid integer, got a string", "tools.0.max_content_tokens",
     "invalid_type"),
    (raw(thinking="on"), "thinking: Input should be an object, got a string", "thinking", "invalid_type"),
    (raw(thinking={"type": None}), "thinking.type: Input should be a valid string, got null", "thinking.type",
     "invalid_type"),
    (raw(thinking={"type": "enabled"}), "thinking.budget_tokens: Field required", "thinking.budget_tokens",
     "missing_required_parameter"),
    (raw(max_tokens=5000, thinking={"type": "enabled", "budget_tokens": 1023}),
     "thinking.budget_tokens: Input should be greater than or equal to 1024", "thinking.budget_tokens",
     "invalid_value"),
])
def test_parse_refuses_bad_input_with_400_naming_the_param(sent, message, param, code):
    with pytest.raises(BadRequest) as refused:
        MESSAGES.parse(sent)
    assert (refused.value.status, refused.value.message, refused.value.param, refused.value.code) == (
        400, message, param, code)


@pytest.mark.parametrize("tool", [
    {"type": "code_execution_20250825", "name": "code_execution"},
    {"type": "some_future_tool_20270101", "name": "x"},
])
def test_server_tools_farebox_cannot_price_are_refused(tool):
    with pytest.raises(BadRequest) as refused:
        MESSAGES.parse(raw(tools=[{"name": "f", "input_schema": {}}, tool]))
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, "tools.1.type", "unsupported_tool")
    assert f"the server tool '{tool['type']}'" in refused.value.message


def test_mcp_servers_are_refused():
    with pytest.raises(BadRequest) as refused:
        MESSAGES.parse(raw(mcp_servers=[{"type": "url", "url": "https://example.com", "name": "x"}]))
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, "mcp_servers", "unsupported_tool")


def test_client_tools_are_accepted():
    tools = [{"name": "f", "input_schema": {}}, {"type": "custom", "name": "g", "input_schema": {}},
             {"type": "bash_20250124", "name": "bash"}, {"type": "text_editor_20250728", "name": "str_replace"},
             {"type": "computer_20250124", "name": "computer", "display_width_px": 1, "display_height_px": 1}]
    assert MESSAGES.parse(raw(tools=tools)).hosted_calls == 0


def test_web_search_calls_are_the_sum_of_max_uses_with_a_default_set_in_the_forwarded_body():
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
             {"type": "web_search_20250305", "name": "web_search2"},
             {"type": "web_fetch_20250910", "name": "web_fetch"}]
    sent = raw(tools=tools)
    request = MESSAGES.parse(sent)
    assert request.hosted_calls == 3 + DEFAULT_MAX_USES
    assert request.fetches == [(DEFAULT_MAX_USES, None)]
    forwarded = orjson.loads(MESSAGES.forward_body(sent, request, None))
    assert [t["max_uses"] for t in forwarded["tools"]] == [3, DEFAULT_MAX_USES, DEFAULT_MAX_USES]


def test_forward_body_is_the_clients_bytes_when_nothing_changes():
    sent = raw(tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}])
    assert MESSAGES.forward_body(sent, MESSAGES.parse(sent), None) is sent


def test_forward_body_sets_the_clamped_bound():
    sent = raw(max_tokens=500)
    assert orjson.loads(MESSAGES.forward_body(sent, MESSAGES.parse(sent), 120))["max_tokens"] == 120


@pytest.mark.parametrize(("bound", "budget"), [(3000, 2000), (2000, 1999), (1500, 1499), (1025, 1024)])
def test_a_clamped_bound_lowers_the_thinking_budget_below_it(bound, budget):
    sent = raw(max_tokens=8000, thinking={"type": "enabled", "budget_tokens": 2000})
    forwarded = orjson.loads(MESSAGES.forward_body(sent, MESSAGES.parse(sent), bound))
    assert forwarded["max_tokens"] == bound
    assert forwarded["thinking"] == {"type": "enabled", "budget_tokens": budget}


USAGE = {"input_tokens": 100, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 300,
         "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100},
         "output_tokens": 50, "server_tool_use": {"web_search_requests": 2}}
EXPECTED = Usage(prompt_tokens=1400, completion_tokens=50, cached_tokens=1000, cache_creation_tokens=300,
                 cache_creation_1h_tokens=100, web_search_calls=2)


def test_measure_body_adds_cache_tokens_to_the_input_and_reads_searches():
    request = MESSAGES.parse(raw())
    payload = orjson.dumps({"type": "message", "content": [{"type": "text", "text": "Hi"}], "usage": USAGE})
    assert MESSAGES.measure_body(payload, request, 999) == Measured(EXPECTED, estimated=False)


def test_measure_body_without_the_cache_split_takes_the_total_as_5_minute_writes():
    request = MESSAGES.parse(raw())
    payload = orjson.dumps({"usage": {"input_tokens": 10, "cache_creation_input_tokens": 7, "output_tokens": 3}})
    assert MESSAGES.measure_body(payload, request, 0).usage == Usage(17, 3, cache_creation_tokens=7)


def test_measure_body_without_usage_estimates_from_the_content():
    request = MESSAGES.parse(raw())
    content = [{"type": "thinking", "thinking": "Hmm."}, {"type": "text", "text": "Hello there."},
               {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}]
    measured = MESSAGES.measure_body(orjson.dumps({"content": content}), request, 77)
    expected = count_completion(MODEL, 'Hmm.Hello there.f{"a":1}')
    assert measured == Measured(Usage(77, expected), estimated=True)
    assert MESSAGES.measure_body(b"not json", request, 77) == Measured(Usage(77, 0), estimated=True)


def sse(name: str, payload: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def delta(kind: str, key: str, text: str) -> bytes:
    return sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": kind, key: text}})


START = sse("message_start", {"type": "message_start", "message": {"id": "msg_1", "usage": {
    "input_tokens": 100, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 300,
    "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100}, "output_tokens": 1}}})


def test_the_stream_meter_combines_message_start_with_the_last_message_delta():
    meter = MESSAGES.stream_meter(MESSAGES.parse(raw(stream=True)))
    events = [START, delta("text_delta", "text", "Hello"), sse("ping", {"type": "ping"}),
              sse("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 10}}),
              sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": 50, "server_tool_use": {"web_search_requests": 2}}}),
              sse("message_stop", {"type": "message_stop"})]
    assert all(meter.take(event) for event in events)
    assert meter.result(5) == Measured(EXPECTED, estimated=False)


def test_input_and_cache_fields_in_message_delta_replace_message_starts():
    meter = MESSAGES.stream_meter(MESSAGES.parse(raw(stream=True)))
    meter.take(START)
    meter.take(sse("message_delta", {"type": "message_delta", "usage": {
        "output_tokens": 9, "input_tokens": 600, "cache_read_input_tokens": None}}))
    assert meter.result(5) == Measured(Usage(1900, 9, cached_tokens=1000, cache_creation_tokens=300,
                                             cache_creation_1h_tokens=100), estimated=False)


def test_a_cut_stream_is_charged_the_reported_input_and_the_output_seen():
    meter = MESSAGES.stream_meter(MESSAGES.parse(raw(stream=True)))
    for event in (START, delta("thinking_delta", "thinking", "Let me see."),
                  delta("text_delta", "text", " Hello"), delta("input_json_delta", "partial_json", '{"a":'),
                  delta("signature_delta", "signature", "c2ln")):
        meter.take(event)
    output = count_completion(MODEL, 'Let me see. Hello{"a":')
    assert meter.result(5) == Measured(Usage(1400, output, cached_tokens=1000, cache_creation_tokens=300,
                                             cache_creation_1h_tokens=100), estimated=True)


def test_a_stream_without_any_usage_is_estimated_on_the_counted_prompt():
    meter = MESSAGES.stream_meter(MESSAGES.parse(raw(stream=True)))
    meter.take(delta("text_delta", "text", "Hello there"))
    meter.take(b"data: not json\n\n")
    meter.take(b": comment\n\n")
    assert meter.result(321) == Measured(Usage(321, count_completion(MODEL, "Hello there")), estimated=True)


def test_zeros_in_message_delta_do_not_undo_message_starts_input():
    meter = MESSAGES.stream_meter(MESSAGES.parse(raw(stream=True)))
    meter.take(START)
    meter.take(sse("message_delta", {"type": "message_delta", "usage": {
        "output_tokens": 9, "input_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}}}))
    assert meter.result(5) == Measured(Usage(1400, 9, cached_tokens=1000, cache_creation_tokens=300,
                                             cache_creation_1h_tokens=100), estimated=False)
