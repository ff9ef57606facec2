"""``X-Farebox-Budget-Remaining-USD``: what the tightest hard budget has left. On a whole answer
it is after the request's actual cost; on a stream, whose headers go out before its body, after
its worst case."""

from __future__ import annotations

import httpx

from pricing.cost import Usage, cost_nano, worst_case_nano
from pricing.money import nano_to_usd, usd_to_nano
from proxy.apis.chat_prompt import count_chat_prompt

ADMIN = {"Authorization": "Bearer admin-secret"}
HEADERS = {"X-Project-Id": "acme", "X-Fake-Reply-Tokens": "4"}
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Give me one line."}]
BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16}


def start(make_stack, limit_usd: str):
    stack = make_stack(admin_token="admin-secret", budget_lease_requests=0)
    response = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                         json={"limit_usd": limit_usd, "period": "day", "mode": "hard"})
    assert response.status_code == 200, response.text
    price = stack.services.catalog.resolve(MODEL)
    prompt = count_chat_prompt(MODEL, {"messages": MESSAGES})
    return stack, worst_case_nano(price, prompt, 16), cost_nano(price, Usage(prompt, 4))


def test_a_whole_answer_reports_the_room_left_after_its_actual_cost(make_stack):
    stack, worst, actual = start(make_stack, "0.0001")
    assert actual < worst   # 4 tokens answered of the 16 reserved
    limit = usd_to_nano("0.0001")
    seen = []
    for _ in range(2):
        response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS, json=BODY, timeout=30)
        assert response.status_code == 200
        assert response.headers["X-Farebox-Cost-USD"] == nano_to_usd(actual)
        seen.append(response.headers["X-Farebox-Budget-Remaining-USD"])
    assert seen == [nano_to_usd(limit - actual), nano_to_usd(limit - 2 * actual)]
    stack.run(stack.services.settled())
    status = httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).json()
    assert status["remaining_usd"] == seen[-1]


def test_a_stream_reports_the_room_left_after_its_worst_case(make_stack):
    stack, worst, actual = start(make_stack, "0.0001")
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", headers=HEADERS, json={**BODY, "stream": True},
                      timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["X-Farebox-Budget-Remaining-USD"] == nano_to_usd(usd_to_nano("0.0001") - worst)
        response.read()
