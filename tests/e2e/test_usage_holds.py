"""Holds of compute budget end to end: held like a reservation, settled once for the use (the rest
released), released unused, lapsing at expiry, never overspending under concurrency, and every
bad input refused with nothing recorded."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timezone

import httpx
import pytest

ADMIN = {"Authorization": "Bearer admin-secret"}
HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "runner"}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def stack(make_stack, clock):
    return make_stack(admin_token="admin-secret", clock=clock)


def hold(stack, body, headers=HEADERS) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/usage-records/holds", headers=headers, json=body, timeout=30)


def settle(stack, hold_id, body, headers=HEADERS) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/usage-records/holds/{hold_id}/settle", headers=headers, json=body, timeout=30)


def release(stack, hold_id, headers=HEADERS) -> httpx.Response:
    return httpx.delete(f"{stack.url}/v1/usage-records/holds/{hold_id}", headers=headers, timeout=30)


def budget(stack, limit="10", period="total"):
    put = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                    json={"limit_usd": limit, "period": period, "mode": "hard"})
    assert put.status_code == 200, put.text


def budget_now(stack):
    return httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).json()


def events(stack, project="acme"):
    stack.run(stack.services.settled())
    return stack.events(project)


def iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_hold_is_held_like_a_reservation_until_settled_for_the_use(stack, clock):
    budget(stack)
    made = hold(stack, {"resource": "gpu", "quantity": "1", "execution_id": "job-7"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert re.fullmatch(r"hold_[0-9a-f]{24}", body["id"])
    assert body == {"id": body["id"], "reserved_usd": "1.50", "expires_at": iso(int(clock.now) + 3600)}
    assert (budget_now(stack)["reserved_usd"], budget_now(stack)["spent_usd"]) == ("1.50", "0.00")
    assert events(stack) == []

    done = settle(stack, body["id"], {"quantity": "0.4"})
    assert done.status_code == 200, done.text
    view = {"id": body["id"], "status": "settled", "resource": "gpu", "unit": "gpu-hour", "usd_per_unit": "1.50",
            "max_quantity": "1", "reserved_usd": "1.50", "execution_id": "job-7", "expires_at": body["expires_at"],
            "quantity": "0.4", "cost_usd": "0.60", "released_usd": "0.90"}
    assert done.json() == view
    assert done.headers["X-Farebox-Cost-USD"] == "0.60"
    assert (budget_now(stack)["reserved_usd"], budget_now(stack)["spent_usd"]) == ("0.00", "0.60")
    (event,) = events(stack)
    assert {k: event[k] for k in ("request_id", "session", "agent", "model", "endpoint", "status", "cost_nano")} == {
        "request_id": body["id"], "session": "job-7", "agent": "runner", "model": "compute:gpu",
        "endpoint": "usage-records", "status": "200", "cost_nano": "600000000"}

    again = settle(stack, body["id"], {"quantity": "0.40"})       # the same quantity: the same answer
    assert (again.status_code, again.json()) == (200, view)
    other = settle(stack, body["id"], {"quantity": "0.5"})
    assert (other.status_code, other.json()) == (409, {"error": {
        "message": f"Usage hold '{body['id']}' was already settled with quantity 0.4; a hold is settled once.",
        "type": "invalid_request_error", "param": "id", "code": "hold_settled"}})
    gone = release(stack, body["id"])
    assert (gone.status_code, gone.json()["error"]["code"]) == (409, "hold_settled")
    assert len(events(stack)) == 1 and budget_now(stack)["spent_usd"] == "0.60"


def test_a_hold_released_unused_records_nothing(stack):
    budget(stack)
    hold_id = hold(stack, {"resource": "cpu", "quantity": "10", "expires_in": "15m"}).json()["id"]
    assert budget_now(stack)["reserved_usd"] == "0.50"
    gone = release(stack, hold_id)
    assert gone.status_code == 200, gone.text
    view = gone.json()
    assert (view["status"], view["quantity"], view["cost_usd"], view["released_usd"]) == ("released", "0", "0.00",
                                                                                          "0.50")
    assert (budget_now(stack)["reserved_usd"], budget_now(stack)["spent_usd"]) == ("0.00", "0.00")
    assert (release(stack, hold_id).status_code, release(stack, hold_id).json()) == (200, view)
    late = settle(stack, hold_id, {"quantity": "1"})
    assert (late.status_code, late.json()) == (409, {"error": {
        "message": f"Usage hold '{hold_id}' was released; nothing can be recorded on it.",
        "type": "invalid_request_error", "param": "id", "code": "hold_released"}})
    assert events(stack) == []


def test_an_abandoned_hold_expires_like_any_reservation(stack, clock):
    budget(stack, "2")
    hold_id = hold(stack, {"resource": "gpu", "quantity": "1", "expires_in": "90s"}).json()["id"]
    refused = hold(stack, {"resource": "gpu", "quantity": "1"})
    assert refused.status_code == 402
    expires_at = int(clock.now) + 90
    clock.now = expires_at + 0.001
    late = settle(stack, hold_id, {"quantity": "1"})
    assert (late.status_code, late.json()) == (409, {"error": {
        "message": f"Usage hold '{hold_id}' expired at {iso(expires_at)}: its budget is no longer held. Record the "
                   "use with POST /v1/usage-records instead.",
        "type": "invalid_request_error", "param": "id", "code": "hold_expired"}})
    clock.now = expires_at + 10.001           # past the settle grace: the next reservation reclaims it
    assert hold(stack, {"resource": "gpu", "quantity": "1"}).status_code == 201
    assert events(stack) == []


def test_a_settle_above_the_held_quantity_is_refused_and_the_hold_stays(stack):
    hold_id = hold(stack, {"resource": "memory", "quantity": "8"}).json()["id"]
    over = settle(stack, hold_id, {"quantity": "8.000001"})
    assert (over.status_code, over.json()) == (400, {"error": {
        "message": "Invalid quantity 8.000001: more than the 8 gb-hour this hold reserved.",
        "type": "invalid_request_error", "param": "quantity", "code": "quantity_above_hold"}})
    assert events(stack) == []
    assert settle(stack, hold_id, {"quantity": "8"}).json()["cost_usd"] == "0.08"


def test_a_hold_needs_room_on_every_hard_budget(stack):
    budget(stack, "1")
    refused = hold(stack, {"resource": "gpu", "quantity": "1"})
    assert (refused.status_code, refused.json()) == (402, {"error": {
        "message": "Budget exceeded for project 'acme': total limit $1.00, spent $0.00, this request may cost up to "
                   "$1.50; this budget never resets",
        "type": "budget_exceeded", "param": None, "code": "budget_exceeded", "scope": "project", "scope_id": "acme",
        "period": "total", "limit_usd": "1.00", "spent_usd": "0.00", "reserved_usd": "0.00",
        "request_max_cost_usd": "1.50", "resets_at": None}})
    assert budget_now(stack)["reserved_usd"] == "0.00"


def test_a_hold_counts_as_a_request_on_the_rate_limits(stack):
    httpx.put(f"{stack.url}/admin/limits/project/acme", headers=ADMIN, json={"rpm": 1}).raise_for_status()
    assert hold(stack, {"resource": "cpu", "quantity": "1"}).status_code == 201
    assert hold(stack, {"resource": "cpu", "quantity": "1"}).status_code == 429


def test_concurrent_holds_never_hold_more_than_the_budget(make_stack, clock):
    first = make_stack(admin_token="admin-secret", clock=clock)
    second = make_stack(admin_token="admin-secret", clock=clock)   # another process on the same ledger
    budget(first, "10")

    async def burst():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(
                client.post(f"{(first, second)[i % 2].url}/v1/usage-records/holds", headers=HEADERS,
                            json={"resource": "gpu", "quantity": "1"}) for i in range(50)))

    answers = asyncio.run(burst())
    granted = [a.json()["id"] for a in answers if a.status_code == 201]
    assert sorted({a.status_code for a in answers}) == [201, 402]
    assert len(granted) == 6                                       # 6 × $1.50 <= $10 < 7 × $1.50
    assert budget_now(first)["reserved_usd"] == "9.00"
    # Any process settles any hold: the use is recorded once, the rest released.
    for i, hold_id in enumerate(granted):
        assert settle((second, first)[i % 2], hold_id, {"quantity": "0.5"}).status_code == 200
    state = budget_now(first)
    assert (state["spent_usd"], state["reserved_usd"]) == ("4.50", "0.00")
    assert len(events(first)) == 6


def _bad(message: str, param: str | None, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


@pytest.mark.parametrize("body, error", [
    ({"resource": "tpu", "quantity": "1"}, _bad(
        "Unknown resource \"tpu\": farebox prices bandwidth, cpu, gpu, memory, sandbox, storage (resource_prices "
        "adds others).", "resource", "unknown_resource")),
    ({"resource": "gpu", "quantity": "0"}, _bad(
        "Invalid quantity \"0\": a positive decimal string such as \"0.5\" (greater than 0).", "quantity",
        "invalid_value")),
    ({"resource": "gpu", "quantity": "1", "expires_in": "8d"}, _bad(
        "Invalid expires_in '8d': use a duration such as 90s, 15m, 12h or 7d (at most 7d).", "expires_in",
        "invalid_value")),
    ({"resource": "gpu", "quantity": "1", "expires_in": 60}, _bad(
        "Invalid expires_in 60: use a duration such as 90s, 15m, 12h or 7d (at most 7d).", "expires_in",
        "invalid_value")),
    ({"resource": "gpu", "quantity": "1", "max": "2"}, _bad(
        "Unknown parameter 'max': a usage record has resource, quantity, execution_id, expires_in.", "max",
        "unknown_parameter")),
])
def test_a_bad_hold_is_refused_and_nothing_held(stack, body, error):
    budget(stack)
    answer = hold(stack, body)
    assert (answer.status_code, answer.json()) == (400, error)
    assert budget_now(stack)["reserved_usd"] == "0.00"


def test_a_bad_settle_is_refused_and_nothing_recorded(stack):
    hold_id = hold(stack, {"resource": "gpu", "quantity": "1"}).json()["id"]
    cases = [
        (settle(stack, hold_id, {"quantity": "0.5", "resource": "cpu"}), 400,
         _bad("Unknown parameter 'resource': a settle has quantity.", "resource", "unknown_parameter")),
        (settle(stack, hold_id, {}), 400,
         _bad("Missing required parameter: 'quantity'.", "quantity", "missing_required_parameter")),
        (settle(stack, hold_id, {"quantity": 0.5}), 400, _bad(
            "Invalid quantity 0.5: a positive decimal string such as \"0.5\" (a JSON number with a fraction is not "
            "exact: send it as a string).", "quantity", "invalid_value")),
        (settle(stack, hold_id, {"quantity": "0.5"}, headers={"X-Project-Id": "beta"}), 404, {"error": {
            "message": f"No usage hold '{hold_id}' in project 'beta'.", "type": "not_found_error", "param": "id",
            "code": "hold_not_found"}}),
        (settle(stack, "hold_000000000000000000000000", {"quantity": "0.5"}), 404, {"error": {
            "message": "No usage hold 'hold_000000000000000000000000' in project 'acme'.", "type": "not_found_error",
            "param": "id", "code": "hold_not_found"}}),
        (release(stack, "nope"), 404, {"error": {
            "message": "No usage hold 'nope' in project 'acme'.", "type": "not_found_error", "param": "id",
            "code": "hold_not_found"}}),
        (release(stack, hold_id, headers={"X-Agent-Id": "runner"}), 400, _bad(
            "Missing X-Project-Id header: every request must name its project.", "X-Project-Id", "missing_project")),
    ]
    for answer, status, error in cases:
        assert (answer.status_code, answer.json()) == (status, error)
    assert events(stack) == [] and events(stack, "beta") == []
    assert settle(stack, hold_id, {"quantity": "0.5"}).status_code == 200


def test_a_repeated_settle_records_a_use_whose_first_record_was_lost_and_only_once(stack, clock):
    hold_id = hold(stack, {"resource": "gpu", "quantity": "1"}).json()["id"]
    # A process closed the hold for its settle and died before writing the record.
    won, _ = stack.run(stack.services.ledger.close_hold("acme", hold_id, f"settled|0.4|600000000|{clock.now:.3f}"))
    assert won and events(stack) == []
    for _ in range(2):
        again = settle(stack, hold_id, {"quantity": "0.4"})
        assert (again.status_code, again.json()["cost_usd"]) == (200, "0.60")
    assert [(e["request_id"], e["cost_nano"]) for e in events(stack)] == [(hold_id, "600000000")]
    clock.now += 900 - 60          # the ledger may forget the first record now: the repeat sends nothing
    assert settle(stack, hold_id, {"quantity": "0.4"}).status_code == 200
    assert len(events(stack)) == 1
