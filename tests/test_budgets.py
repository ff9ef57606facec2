"""The reserve step on its own, against a real Redis: the worst case, clamping in the request's
bound field, and a 402 when a request has no field to clamp."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pricing.catalog import Catalog
from proxy.apis.chat import parse_chat
from proxy.budgets import reserve_budget
from proxy.domain import Attribution
from proxy.errors import BudgetExceeded
from proxy.ledger.ledger import Ledger
from proxy.settings import Settings

WHO = Attribution("acme", "planner", None, None)
PROMPT_TOKENS = 1000        # 150,000 nano-USD at gpt-4o-mini's input price
ROOM_NANO = 450_000         # pays for the prompt and 500 output tokens at 600 nano-USD each
PRICE = Catalog.load().resolve("gpt-4o-mini")


@dataclass
class UnboundedRequest:
    """A request of an API whose output no body field bounds (``bound_field`` None)."""

    model: str = "gpt-4o-mini"
    max_output: int | None = 1000
    bound_field: str | None = None
    n: int = 1
    output_extra: int = 0
    hosted_calls: int = 0
    min_output: int = 1
    prompt_field: str = "input"
    stream: bool = False
    body: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
async def ledger(redis_client, key_prefix) -> Ledger:
    ledger = Ledger(redis_client, prefix=key_prefix)
    await ledger.set_budget("project", "acme", ROOM_NANO, "day")
    return ledger



async def test_a_request_that_does_not_fit_is_clamped_in_its_bound_field(ledger):
    chat = parse_chat(b'{"model": "gpt-4o-mini", "messages": [], "max_tokens": 1000}')
    grant = await reserve_budget(ledger, Settings(), "r1", WHO, PRICE, PROMPT_TOKENS, chat)
    assert (grant.clamped, grant.enforce_bound, grant.output_bound, grant.reserved_nano) == (True, True, 500, 450_000)


async def test_a_request_without_a_bound_field_is_refused_rather_than_clamped(ledger):
    with pytest.raises(BudgetExceeded) as refused:
        await reserve_budget(ledger, Settings(), "r1", WHO, PRICE, PROMPT_TOKENS, UnboundedRequest())
    assert refused.value.status == 402
    assert refused.value.extra["request_max_cost_usd"] == "0.00075"
