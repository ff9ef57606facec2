"""What the Responses API shape measures: a whole response, and a stream event by event."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from pricing.catalog import Catalog
from pricing.cost import Usage
from proxy.apis import Measured
from proxy.apis.chat_prompt import count_completion
from proxy.apis.responses import RESPONSES

MINI = Catalog.load().resolve("gpt-4o-mini")
USAGE = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1000}, "output_tokens": 300,
         "output_tokens_details": {"reasoning_tokens": 250}, "total_tokens": 1500}
SEARCH_ITEM = {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search"}}
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "hello world", "annotations": []}]}
CALL = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"q\":\"x\"}"}


def request(**fields):
    return RESPONSES.parse(orjson.dumps({"model": "gpt-4o-mini", "input": "hi", **fields}))


def event(kind: str, **fields) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"


def test_measure_body_takes_cached_and_reasoning_tokens_and_counts_web_searches():
    payload = orjson.dumps({"object": "response", "output": [SEARCH_ITEM, {**SEARCH_ITEM, "id": "ws_2"}, MESSAGE],
                            "usage": USAGE})
    measured = RESPONSES.measure_body(payload, request(tools=[{"type": "web_search"}]), 99)
    assert measured == Measured(Usage(prompt_tokens=1200, completion_tokens=300, cached_tokens=1000,
                                      reasoning_tokens=250, web_search_calls=2), estimated=False)


def test_the_billable_searches_the_response_reports_win_over_its_items():
    payload = orjson.dumps({"output": [SEARCH_ITEM, {**SEARCH_ITEM, "id": "ws_2"}], "usage": USAGE,
                            "tool_usage": {"web_search": {"num_requests": 1}}})
    assert RESPONSES.measure_body(payload, request(), 99).usage.web_search_calls == 1


def test_cache_writes_are_kept_as_cache_creation_tokens():
    usage = {**USAGE, "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 400}}
    measured = RESPONSES.measure_body(orjson.dumps({"output": [], "usage": usage}), request(), 99)
    assert (measured.usage.cached_tokens, measured.usage.cache_creation_tokens) == (100, 400)


def test_measure_body_without_usage_estimates_from_the_text_and_calls():
    payload = orjson.dumps({"output": [MESSAGE, CALL], "usage": None})
    measured = RESPONSES.measure_body(payload, request(), 12)
    calls = [{"function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]
    assert measured == Measured(Usage(prompt_tokens=12, completion_tokens=count_completion("gpt-4o-mini",
                                      "hello world", calls)), estimated=True)


def test_an_estimate_leaves_out_the_context_of_built_in_calls_that_did_not_happen():
    asked = request(tools=[{"type": "web_search"}], max_tool_calls=3)
    prompt = asyncio.run(RESPONSES.count_prompt(asked, MINI))
    seen = asked.seen_prompt
    payload = orjson.dumps({"output": [SEARCH_ITEM]})
    measured = RESPONSES.measure_body(payload, asked, prompt)
    assert measured.usage.prompt_tokens == seen + 128_000
    assert measured.usage.web_search_calls == 1 and measured.estimated
    broken = RESPONSES.measure_body(b'{"output": [', asked, prompt)  # an answer that broke off
    assert (broken.usage.prompt_tokens, broken.usage.completion_tokens, broken.estimated) == (seen, 0, True)


def stream_events(*, usage=USAGE, terminal="response.completed", searches=1):
    events = [event("response.created", sequence_number=0, response={"id": "resp_1", "output": [], "usage": None}),
              event("response.in_progress", sequence_number=1, response={"id": "resp_1"})]
    output = []
    for index in range(searches):
        item = {**SEARCH_ITEM, "id": f"ws_{index}"}
        events += [event("response.output_item.added", output_index=index, item={**item, "status": "in_progress"}),
                   event("response.web_search_call.completed", output_index=index, item_id=item["id"]),
                   event("response.output_item.done", output_index=index, item=item)]
        output.append(item)
    at = searches
    events += [event("response.output_item.added", output_index=at, item={**MESSAGE, "content": []}),
               event("response.output_text.delta", output_index=at, delta="hello"),
               event("response.output_text.delta", output_index=at, delta=" world"),
               event("response.output_item.done", output_index=at, item=MESSAGE),
               event("response.output_item.added", output_index=at + 1, item={**CALL, "arguments": ""}),
               event("response.function_call_arguments.delta", output_index=at + 1, delta="{\"q\":"),
               event("response.function_call_arguments.delta", output_index=at + 1, delta="\"x\"}")]
    output += [MESSAGE, CALL]
    events.append(event(terminal, response={"id": "resp_1", "output": output, "usage": usage}))
    return events


@pytest.mark.parametrize("terminal", ["response.completed", "response.incomplete", "response.failed"])
def test_the_stream_meter_takes_usage_from_the_terminal_event_and_forwards_every_event(terminal):
    meter = RESPONSES.stream_meter(request(stream=True))
    assert all(meter.take(e) for e in stream_events(terminal=terminal, searches=2))
    assert meter.result(99) == Measured(Usage(prompt_tokens=1200, completion_tokens=300, cached_tokens=1000,
                                              reasoning_tokens=250, web_search_calls=2), estimated=False)


def test_events_split_oddly_still_meter():
    meter = RESPONSES.stream_meter(request(stream=True))
    crlf = event("response.output_text.delta", delta="hi").replace(b"\n", b"\r\n")
    data_only = b"data: " + orjson.dumps({"type": "response.completed", "response": {"usage": USAGE}}) + b"\n\n"
    for raw in (crlf, b": keep-alive\n\n", b"event: x\ndata: not json\n\n", b"data: [1]\n\n", data_only):
        assert meter.take(raw) is True
    assert meter.result(5).usage.prompt_tokens == 1200


def test_a_stream_that_ends_without_usage_is_estimated_from_what_it_carried():
    asked = request(stream=True, tools=[{"type": "web_search"}], max_tool_calls=4)
    prompt = asyncio.run(RESPONSES.count_prompt(asked, MINI))
    meter = RESPONSES.stream_meter(asked)
    events = stream_events(searches=2)[:-1]  # cut before the terminal event
    for raw in events:
        meter.take(raw)
    calls = [{"function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]
    assert meter.result(prompt) == Measured(Usage(
        prompt_tokens=asked.seen_prompt + 2 * 128_000,
        completion_tokens=count_completion("gpt-4o-mini", "hello world", calls), web_search_calls=2), estimated=True)


def test_refusal_deltas_count_towards_an_estimate():
    meter = RESPONSES.stream_meter(request(stream=True))
    meter.take(event("response.refusal.delta", delta="I cannot help with that"))
    assert meter.result(7) == Measured(Usage(7, count_completion("gpt-4o-mini", "I cannot help with that")),
                                       estimated=True)


def test_events_the_meter_does_not_read_are_forwarded_and_reasoning_text_counts():
    meter = RESPONSES.stream_meter(request(stream=True))
    broken = b"event: response.output_text.done\ndata: {not json\n\n"
    assert meter.take(broken) is True
    assert meter.take(event("response.reasoning_summary_text.delta", delta="thinking")) is True
    assert meter.result(3).usage.completion_tokens == count_completion("gpt-4o-mini", "thinking")
