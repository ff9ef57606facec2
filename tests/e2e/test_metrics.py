"""/metrics after known requests: every metric the README lists is fed, labels stay bounded."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pricing.money import usd_to_nano
from proxy.ledger.embedded import EmbeddedRedis
from proxy.ledger.reports import read_usage

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def post(stack, project="acme", **headers):
    return httpx.post(f"{stack.base_url}/chat/completions", json=BODY, timeout=30,
                      headers={"X-Project-Id": project, "X-Agent-Id": "planner", **headers})


def scrape(stack, **headers) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as ``{(name, sorted labels): value}``."""
    response = httpx.get(f"{stack.url}/metrics", headers=headers)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_tokens_cost_rejections_estimates_and_latencies_are_counted(make_stack):
    stack = make_stack()
    assert post(stack).status_code == 200
    assert post(stack, **{"X-Fake-No-Usage": "1"}).status_code == 200
    assert post(stack, **{"X-Fake-Status": "429"}).status_code == 429
    stack.run(stack.services.ledger.set_budget("project", "poor", 0, "day"))
    assert post(stack, project="poor").status_code == 402
    report = stack.run(read_usage(stack.services.ledger, "project", "acme", "day"))

    m = scrape(stack)
    chat = {"endpoint": "chat.completions", "model": "gpt-4o-mini"}
    assert value(m, "farebox_requests_total", status="200", **chat) == 2
    assert value(m, "farebox_requests_total", status="429", **chat) == 1
    assert value(m, "farebox_requests_total", status="402", **chat) == 1
    assert value(m, "farebox_tokens_total", kind="prompt", model="gpt-4o-mini") == report["prompt_tokens"]
    assert value(m, "farebox_tokens_total", kind="completion", model="gpt-4o-mini") == report["completion_tokens"]
    assert value(m, "farebox_cost_usd_total", model="gpt-4o-mini") == pytest.approx(
        usd_to_nano(report["cost_usd"]) / 1e9, rel=1e-12)
    assert value(m, "farebox_budget_rejections_total", scope="project") == 1
    assert value(m, "farebox_estimated_usage_total") == 1 == report["estimated_requests"]
    assert value(m, "farebox_upstream_latency_seconds_count") == 3       # both answers and the 429
    assert value(m, "farebox_upstream_requests_total", upstream="openai", status="200") == 2
    assert value(m, "farebox_upstream_requests_total", upstream="openai", status="429") == 1
    assert value(m, "farebox_upstream_requests_total", upstream="openai", status="402") == 0  # never sent
    assert value(m, "farebox_overhead_seconds_count") == 2               # requests that were charged
    assert value(m, "farebox_redis_errors_total") == 0
    assert not any("project" in dict(labels) for _, labels in m)         # no per-project series by default


def test_streamed_requests_are_counted_like_the_others(make_stack):
    stack = make_stack()
    response = httpx.post(f"{stack.base_url}/chat/completions", json={**BODY, "stream": True},
                          headers={"X-Project-Id": "acme"}, timeout=30)
    assert response.status_code == 200
    report = stack.run(read_usage(stack.services.ledger, "project", "acme", "day"))
    m = scrape(stack)
    assert value(m, "farebox_requests_total", endpoint="chat.completions", status="200", model="gpt-4o-mini") == 1
    assert value(m, "farebox_tokens_total", kind="completion", model="gpt-4o-mini") == report["completion_tokens"] > 0
    assert value(m, "farebox_overhead_seconds_count") == 1


def test_project_labels_are_opt_in(make_stack):
    stack = make_stack(metrics_project_labels=True)
    post(stack, project="acme")
    post(stack, project="beta")
    stack.run(stack.services.ledger.set_budget("project", "poor", 0, "day"))
    post(stack, project="poor")
    m = scrape(stack)
    chat = {"endpoint": "chat.completions", "model": "gpt-4o-mini"}
    assert value(m, "farebox_requests_total", status="200", project="acme", **chat) == 1
    assert value(m, "farebox_requests_total", status="200", project="beta", **chat) == 1
    assert value(m, "farebox_requests_total", status="402", project="poor", **chat) == 1
    assert value(m, "farebox_tokens_total", kind="prompt", model="gpt-4o-mini", project="acme") > 0
    assert value(m, "farebox_cost_usd_total", model="gpt-4o-mini", project="beta") > 0
    assert value(m, "farebox_budget_rejections_total", scope="project", project="poor") == 1


def test_an_unreachable_upstream_is_counted_as_502(make_stack):
    stack = make_stack(upstream="http://127.0.0.1:9/v1", upstream_connect_timeout_s=2)
    assert post(stack).status_code == 502
    m = scrape(stack)
    assert value(m, "farebox_requests_total", endpoint="chat.completions", status="502", model="gpt-4o-mini") == 1


def test_redis_errors_are_counted_and_health_stays_up(make_stack, tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        stack = make_stack(redis_url=server.url, fail_mode="closed")
        server.stop()
        assert post(stack).status_code == 503
        assert httpx.get(f"{stack.url}/healthz").status_code == 200
        ready = httpx.get(f"{stack.url}/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        m = scrape(stack)
        assert value(m, "farebox_redis_errors_total") == 1
        assert value(m, "farebox_requests_total", endpoint="chat.completions", status="503", model="gpt-4o-mini") == 1
    finally:
        server.stop()


def test_metrics_token_when_configured(make_stack):
    stack = make_stack(metrics_token="scrape-me")
    assert httpx.get(f"{stack.url}/metrics").status_code == 401
    allowed = httpx.get(f"{stack.url}/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert allowed.status_code == 200 and "# TYPE farebox_requests_total counter" in allowed.text


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_upstream_time_is_measured_from_the_request_written_and_not_counted_as_overhead(make_stack, key_prefix,
                                                                                       stream):
    stack = make_stack()
    for _ in range(3):
        response = httpx.post(f"{stack.base_url}/chat/completions", json={**BODY, "stream": stream}, timeout=30,
                              headers={"X-Project-Id": "acme", "X-Fake-Latency-Ms": "300"})
        assert response.status_code == 200
    stack.run(stack.services.settled())
    events = [f for _, f in stack.run(stack.services.ledger.redis.xrange(f"{key_prefix}:{{acme}}:events"))]
    assert len(events) == 3
    for event in events:
        assert int(event[b"latency_ms"]) >= 300
        assert 300 <= int(event[b"ttfb_ms"]) <= int(event[b"latency_ms"])
    m = scrape(stack)
    assert value(m, "farebox_upstream_latency_seconds_count") == 3
    assert value(m, "farebox_upstream_latency_seconds_sum") >= 0.9
    assert value(m, "farebox_upstream_ttfb_seconds_count") == 3
    assert value(m, "farebox_upstream_ttfb_seconds_sum") >= 0.9
    assert value(m, "farebox_upstream_connect_seconds_count") == 3
    assert value(m, "farebox_overhead_seconds_count") == 3
    assert value(m, "farebox_overhead_seconds_sum") / 3 < 0.25   # the upstream's 0.3 s is not farebox's
