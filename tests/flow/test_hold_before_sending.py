"""A request whose reservation was made but whose bytes never left for the upstream (the
forwarded body could not be built) gives its hold back at once: nothing stays held, nothing is
renewed, nothing is recorded or forwarded."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from multidict import CIMultiDict

from proxy.apis.chat import ChatCompletions
from proxy.flow import serve

BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}'


class BrokenForwardBody(ChatCompletions):
    """Chat completions whose forwarded body cannot be built, as a bug would."""

    def forward_body(self, raw: bytes, request, bound):  # type: ignore[override]
        raise RuntimeError("no body to forward")


class Unanswered:
    """An exchange that must never be answered: the flow raises before any answer."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.request_id = "held-then-dropped"
        self.headers = CIMultiDict(headers)
        self.body = BODY

    def reply(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        raise AssertionError("answered")

    async def start(self, status: int, headers: CIMultiDict[str]) -> None:
        raise AssertionError("answered")

    async def write(self, data: bytes) -> None:
        raise AssertionError("answered")

    async def finish(self) -> None:
        raise AssertionError("answered")

    def cut(self) -> None:
        raise AssertionError("answered")


def test_a_hold_whose_request_was_never_sent_is_given_back(make_stack):
    stack = make_stack()
    ledger = stack.services.ledger
    stack.run(ledger.set_budget("project", "acme", 5_000_000_000, "month"))
    exchange = Unanswered({"X-Project-Id": "acme", "Authorization": "Bearer sk-test"})

    with pytest.raises(RuntimeError, match="no body to forward"):
        stack.run(serve(stack.services, exchange, BrokenForwardBody()))

    status = stack.run(ledger.get_budget("project", "acme"))
    assert (status["reserved_usd"], status["spent_usd"]) == ("0.00", "0.00")
    assert stack.run(ledger.renew_holds()) == 0  # nothing of it is held, so nothing is renewed
    assert stack.received == []
