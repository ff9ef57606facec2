"""The OpenAI Agents SDK through farebox: an agent with a function tool runs its loop (a tool
call, then the answer) against the fake upstream, and every model call is metered, priced and
attributed to the agent and its session."""

from __future__ import annotations

import agents
from agents import Agent, OpenAIResponsesModel, Runner, function_tool
from openai import AsyncOpenAI

from pricing.cost import Usage, cost_nano
from pricing.money import nano_to_usd
from tests.e2e.test_responses import events_of, usage_of, wait_for

MODEL = "gpt-4o-mini"
HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "weather-agent", "X-Session-Id": "trip-7"}


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}, 21 degrees."


async def test_an_agents_model_calls_are_each_metered_and_attributed(make_stack, key_prefix):
    agents.set_tracing_disabled(True)
    stack = make_stack()
    client = AsyncOpenAI(base_url=stack.base_url, api_key="sk-test-client", default_headers=HEADERS, max_retries=0)
    agent = Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather],
                  model=OpenAIResponsesModel(model=MODEL, openai_client=client))
    result = await Runner.run(agent, "What is the weather in Paris?")
    await client.close()

    assert result.final_output
    calls = result.raw_responses
    assert len(calls) >= 2, "a tool call, then the answer"
    sent = [r for r in stack.received if r["path"] == "/v1/responses"]
    assert len(sent) == len(calls)
    assert sent[1]["body"]["input"][-1]["type"] == "function_call_output"
    assert "Sunny in" in sent[1]["body"]["input"][-1]["output"]

    assert wait_for(lambda: usage_of(stack)["requests"] == len(calls))
    events = events_of(stack, key_prefix)
    assert len(events) == len(calls)
    price = stack.services.catalog.resolve(MODEL)
    for event, call in zip(events, calls):
        assert (event[b"endpoint"], event[b"agent"], event[b"session"]) == (b"responses", b"weather-agent", b"trip-7")
        assert int(event[b"prompt_tokens"]) == call.usage.input_tokens
        assert int(event[b"completion_tokens"]) == call.usage.output_tokens
        assert int(event[b"cost_nano"]) == cost_nano(price, Usage(call.usage.input_tokens, call.usage.output_tokens))
    total = sum(cost_nano(price, Usage(c.usage.input_tokens, c.usage.output_tokens)) for c in calls)
    for scope, scope_id in (("project", "acme"), ("agent", "acme/weather-agent"), ("session", "acme/trip-7")):
        report = usage_of(stack, scope, scope_id)
        assert (report["requests"], report["cost_usd"]) == (len(calls), nano_to_usd(total))
