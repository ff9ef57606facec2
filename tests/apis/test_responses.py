"""The Responses API shape on its own: what it parses, refuses, reserves and forwards."""

from __future__ import annotations

import orjson
import pytest

from pricing.catalog import Catalog, ModelPrice
from proxy.apis.registry import METERED
from proxy.apis.responses import DEFAULT_MAX_TOOL_CALLS, MIN_OUTPUT_TOKENS, RESPONSES
from proxy.apis.responses_prompt import count_responses
from proxy.errors import BadRequest

CATALOG = Catalog.load()
MINI = CATALOG.resolve("gpt-4o-mini")  # 128,000 tokens of context, a price per web search
GOOD = {"model": "gpt-4o-mini", "input": "Say something."}
SEARCH = {"type": "web_search"}
FUNCTION = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}


def body(**fields) -> bytes:
    return orjson.dumps({**GOOD, **fields})


def refusal(raw: bytes) -> tuple[int, dict]:
    with pytest.raises(BadRequest) as refused:
        RESPONSES.parse(raw)
    return refused.value.status, refused.value.body()


def error(message: str, param: str | None, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def test_the_shape_names_its_endpoint_path_and_error_family_and_is_metered():
    assert (RESPONSES.name, RESPONSES.upstream_path, RESPONSES.family) == ("responses", "/responses", "openai")
    assert METERED["/v1/responses"] is RESPONSES


def test_parse_reads_what_the_flow_needs():
    request = RESPONSES.parse(body(stream=True, max_output_tokens=300))
    assert (request.model, request.stream, request.max_output, request.n) == ("gpt-4o-mini", True, 300, 1)
    assert (request.bound_field, request.prompt_field, request.min_output) == ("max_output_tokens", "input",
                                                                                MIN_OUTPUT_TOKENS)
    assert (request.output_extra, request.hosted_calls, request.tool_calls) == (0, 0, 0)


@pytest.mark.parametrize(("fields", "missing_input_ok"), [
    ({"previous_response_id": "resp_1"}, True),
    ({"conversation": "conv_1"}, True),
    ({"conversation": {"id": "conv_1"}}, True),
    ({"prompt": {"id": "pmpt_1"}}, True),
])
def test_input_may_be_left_out_when_earlier_context_gives_it(fields, missing_input_ok):
    request = RESPONSES.parse(orjson.dumps({"model": "gpt-4o-mini", **fields}))
    assert request.model == "gpt-4o-mini"


BAD = [
    ("missing model", {"input": "hi"}, "Missing required parameter: 'model'.", "model", "missing_required_parameter"),
    ("empty model", {**GOOD, "model": " "}, "Invalid type for 'model': expected a non-empty string, got a string.",
     "model", "invalid_type"),
    ("missing input", {"model": "gpt-4o-mini"}, "Missing required parameter: 'input'.", "input",
     "missing_required_parameter"),
    ("input a number", {**GOOD, "input": 3},
     "Invalid type for 'input': expected a string or an array of items, got a number.", "input", "invalid_type"),
    ("input an object", {**GOOD, "input": {"role": "user"}},
     "Invalid type for 'input': expected a string or an array of items, got an object.", "input", "invalid_type"),
    ("stream a string", {**GOOD, "stream": "yes"}, "Invalid type for 'stream': expected a boolean, got a string.",
     "stream", "invalid_type"),
    ("max_output_tokens zero", {**GOOD, "max_output_tokens": 0},
     "Invalid value for 'max_output_tokens': must be at least 1, got 0.", "max_output_tokens", "invalid_value"),
    ("max_output_tokens a string", {**GOOD, "max_output_tokens": "10"},
     "Invalid type for 'max_output_tokens': expected an integer, got a string.", "max_output_tokens", "invalid_type"),
    ("max_output_tokens 2**31", {**GOOD, "max_output_tokens": 2**31},
     "Invalid value for 'max_output_tokens': must be at most 2147483647, got 2147483648.", "max_output_tokens",
     "invalid_value"),
    ("max_tool_calls a float", {**GOOD, "max_tool_calls": 1.5},
     "Invalid type for 'max_tool_calls': expected an integer, got a number.", "max_tool_calls", "invalid_type"),
    ("max_tool_calls negative", {**GOOD, "max_tool_calls": -1},
     "Invalid value for 'max_tool_calls': must be between 0 and 1024, got -1.", "max_tool_calls", "invalid_value"),
    ("max_tool_calls huge", {**GOOD, "max_tool_calls": 5000},
     "Invalid value for 'max_tool_calls': must be between 0 and 1024, got 5000.", "max_tool_calls", "invalid_value"),
    ("background a string", {**GOOD, "background": "yes"},
     "Invalid type for 'background': expected a boolean, got a string.", "background", "invalid_type"),
    ("previous_response_id a number", {**GOOD, "previous_response_id": 7},
     "Invalid type for 'previous_response_id': expected a string, got a number.", "previous_response_id",
     "invalid_type"),
    ("conversation a list", {**GOOD, "conversation": []},
     "Invalid type for 'conversation': expected a string or an object, got an array.", "conversation", "invalid_type"),
    ("prompt a string", {**GOOD, "prompt": "pmpt_1"}, "Invalid type for 'prompt': expected an object, got a string.",
     "prompt", "invalid_type"),
    ("instructions a list", {**GOOD, "instructions": ["be terse"]},
     "Invalid type for 'instructions': expected a string, got an array.", "instructions", "invalid_type"),
    ("text a string", {**GOOD, "text": "json"}, "Invalid type for 'text': expected an object, got a string.", "text",
     "invalid_type"),
    ("tools an object", {**GOOD, "tools": SEARCH}, "Invalid type for 'tools': expected an array, got an object.",
     "tools", "invalid_type"),
    ("a tool a string", {**GOOD, "tools": [FUNCTION, "web_search"]},
     "Invalid type for 'tools[1]': expected an object, got a string.", "tools[1]", "invalid_type"),
    ("a tool without a type", {**GOOD, "tools": [{"name": "x"}]},
     "Invalid type for 'tools[0].type': expected a string, got null.", "tools[0].type", "invalid_type"),
]


@pytest.mark.parametrize(("fields", "message", "param", "code"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_parse_refuses_a_bad_body_with_400_naming_the_param(fields, message, param, code):
    assert refusal(orjson.dumps(fields)) == (400, error(message, param, code))


def test_a_background_response_is_refused_saying_why():
    status, refused = refusal(body(background=True))
    assert status == 400
    assert refused == error(
        "farebox cannot meter a background response: it is generated after this request ends, with nothing left "
        "to measure and settle it. Send the request without 'background' (a stream gives the same freedom to "
        "leave and come back to nothing).", "background", "unsupported_parameter")
    assert RESPONSES.parse(body(background=False)).stream is False


@pytest.mark.parametrize("kind", ["file_search", "code_interpreter", "image_generation", "computer_use_preview",
                                  "local_shell", "something_new"])
def test_hosted_tools_farebox_cannot_price_are_refused_naming_the_tool(kind):
    status, refused = refusal(body(tools=[FUNCTION, {"type": kind}]))
    assert status == 400
    assert refused == error(
        f"farebox cannot meter the hosted tool '{kind}' (tools[1]): the provider bills it at prices farebox does "
        f"not know, so a budget could not hold. Tools farebox meters: function, custom, web_search, "
        f"web_search_preview and mcp.", "tools[1]", "unsupported_tool")


@pytest.mark.parametrize(("tools", "limit", "tool_calls", "hosted", "set_limit"), [
    ([FUNCTION], None, 0, 0, False),
    ([SEARCH], None, DEFAULT_MAX_TOOL_CALLS, DEFAULT_MAX_TOOL_CALLS, True),
    ([{"type": "web_search_preview"}], 3, 3, 3, False),
    ([{"type": "web_search_2025_08_26"}, FUNCTION], 0, 0, 0, False),
    ([{"type": "mcp", "server_url": "https://mcp.example"}], None, DEFAULT_MAX_TOOL_CALLS, 0, True),
    ([{"type": "mcp", "server_url": "https://mcp.example"}, SEARCH], 2, 2, 2, False),
])
def test_built_in_tool_calls_are_bounded_and_web_searches_priced(tools, limit, tool_calls, hosted, set_limit):
    fields = {"tools": tools} if limit is None else {"tools": tools, "max_tool_calls": limit}
    request = RESPONSES.parse(body(**fields))
    assert (request.tool_calls, request.hosted_calls, request.set_tool_calls) == (tool_calls, hosted, set_limit)


def test_a_stored_prompt_may_bring_web_search_so_its_calls_are_bounded_too():
    request = RESPONSES.parse(orjson.dumps({"model": "gpt-4o-mini", "prompt": {"id": "pmpt_1"}}))
    assert (request.tool_calls, request.hosted_calls, request.set_tool_calls) == (8, 8, True)


async def test_the_worst_case_prompt_is_the_counted_body_capped_at_the_context_window():
    raw = body(instructions="Be terse.")
    request = RESPONSES.parse(raw)
    assert await RESPONSES.count_prompt(request, MINI) == count_responses("gpt-4o-mini", request.body).prompt
    small = ModelPrice(name="tiny", provider="openai", mode="chat", input=1, output=1, max_input_tokens=5)
    assert await RESPONSES.count_prompt(RESPONSES.parse(raw), small) == 5


@pytest.mark.parametrize("fields", [{"previous_response_id": "resp_1"}, {"conversation": "conv_1"},
                                    {"prompt": {"id": "pmpt_1"}},
                                    {"input": [{"type": "item_reference", "id": "msg_1"}]},
                                    {"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}])
async def test_context_farebox_cannot_see_reserves_the_models_context_window(fields):
    request = RESPONSES.parse(body(**fields))
    calls = request.tool_calls  # a stored prompt may search
    assert await RESPONSES.count_prompt(request, MINI) == 128_000 * (1 + calls)


async def test_each_built_in_call_adds_a_context_window():
    request = RESPONSES.parse(body(tools=[SEARCH], max_tool_calls=3))
    counted = count_responses("gpt-4o-mini", request.body).prompt
    assert await RESPONSES.count_prompt(request, MINI) == counted + 3 * 128_000


@pytest.mark.parametrize(("fields", "param", "why"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id",
     "previous_response_id carries over context farebox does not see"),
    ({"tools": [FUNCTION, SEARCH]}, "tools[1]", "each built-in tool call can add up to a context window"),
    ({"tools": [{"type": "mcp", "server_url": "https://mcp.example"}]}, "tools[0]",
     "an mcp tool's definitions come from its remote server"),
])
async def test_without_a_context_window_in_the_catalog_such_a_request_is_refused(fields, param, why):
    request = RESPONSES.parse(body(**fields))
    unknown = ModelPrice(name="no-window", provider="openai", mode="chat", input=1, output=1, web_search_call=1)
    with pytest.raises(BadRequest) as refused:
        await RESPONSES.count_prompt(request, unknown)
    assert refused.value.body() == error(
        f"farebox cannot bound this request's prompt: {why}, and the catalog gives no max_input_tokens (context "
        f"window) for model 'no-window'. Add max_input_tokens to its price in a price file.", param,
        "unknown_context_window")
    assert await RESPONSES.count_prompt(RESPONSES.parse(body()), unknown) > 0  # a plain body needs no window


def test_forward_body_is_the_clients_bytes_when_nothing_changes():
    raw = body(max_output_tokens=50, tools=[FUNCTION])
    assert RESPONSES.forward_body(raw, RESPONSES.parse(raw), None) is raw


def test_forward_body_sets_the_bound_and_the_built_in_call_limit():
    raw = body(max_output_tokens=500, tools=[SEARCH], extra_field={"kept": True})
    sent = orjson.loads(RESPONSES.forward_body(raw, RESPONSES.parse(raw), 120))
    assert sent == {**orjson.loads(raw), "max_output_tokens": 120, "max_tool_calls": DEFAULT_MAX_TOOL_CALLS}
    raw = body(tools=[SEARCH], max_tool_calls=2)
    assert RESPONSES.forward_body(raw, RESPONSES.parse(raw), None) is raw


@pytest.mark.parametrize(("fields", "param"), [({"tools": [FUNCTION, SEARCH]}, "tools[1]"),
                                               ({"prompt": {"id": "pmpt_1"}}, "prompt")])
async def test_web_search_on_a_model_without_a_per_call_price_is_refused(fields, param):
    gpt_4o = CATALOG.resolve("gpt-4o")
    assert gpt_4o.web_search_call is None
    with pytest.raises(BadRequest) as refused:
        await RESPONSES.count_prompt(RESPONSES.parse(body(**fields)), gpt_4o)
    assert refused.value.body() == error(
        "farebox has no price for web search calls on model 'gpt-4o' (the catalog's web_search_call), so this "
        "request's searches could not be metered. Add web_search_call to its price in a price file, or set "
        "'max_tool_calls' to 0.", param, "unsupported_tool")
    assert await RESPONSES.count_prompt(RESPONSES.parse(body(**fields, max_tool_calls=0)), gpt_4o) > 0
