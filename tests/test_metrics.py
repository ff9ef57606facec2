"""Metrics on their own: series by label values, created only when something is counted."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from pricing.cost import Usage
from proxy.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.render().decode()) for s in family.samples}


def test_requests_with_the_same_labels_add_up_on_one_series():
    metrics = Metrics()
    metrics.request("chat.completions", 200, "gpt-4o-mini", "acme")
    metrics.request("chat.completions", "200", "gpt-4o-mini", "beta")
    metrics.request("chat.completions", 429, "gpt-4o-mini", "acme")
    m = samples(metrics)
    ok = ("farebox_requests_total", (("endpoint", "chat.completions"), ("model", "gpt-4o-mini"), ("status", "200")))
    limited = ("farebox_requests_total", (("endpoint", "chat.completions"), ("model", "gpt-4o-mini"), ("status", "429")))
    assert m[ok] == 2
    assert m[limited] == 1


def test_project_labels_keep_projects_apart():
    metrics = Metrics(project_labels=True)
    metrics.request("chat.completions", 200, "gpt-4o-mini", "acme")
    metrics.request("chat.completions", 200, "gpt-4o-mini", "acme")
    metrics.request("chat.completions", 200, "gpt-4o-mini", "beta")
    metrics.rejection("project", "acme")
    m = samples(metrics)
    base = (("endpoint", "chat.completions"), ("model", "gpt-4o-mini"))
    assert m[("farebox_requests_total", tuple(sorted((*base, ("project", "acme"), ("status", "200")))))] == 2
    assert m[("farebox_requests_total", tuple(sorted((*base, ("project", "beta"), ("status", "200")))))] == 1
    assert m[("farebox_budget_rejections_total", (("project", "acme"), ("scope", "project")))] == 1


def test_usage_counts_tokens_by_kind_and_cost_in_usd():
    metrics = Metrics()
    metrics.usage("gpt-4o-mini", "acme", Usage(100, 40, cached_tokens=30, reasoning_tokens=10), 123_000, estimated=False)
    metrics.usage("gpt-4o-mini", "acme", Usage(10, 5), 2_000, estimated=True)
    m = samples(metrics)
    tokens = {kind: m.get(("farebox_tokens_total", (("kind", kind), ("model", "gpt-4o-mini")))) for kind in
              ("prompt", "completion", "cached", "cache_creation", "reasoning")}
    # prompt and completion always get a series; other kinds only once they have tokens
    assert tokens == {"prompt": 110, "completion": 45, "cached": 30, "cache_creation": None, "reasoning": 10}
    assert m[("farebox_cost_usd_total", (("model", "gpt-4o-mini"),))] == 125_000 / 1e9
    assert m[("farebox_estimated_usage_total", ())] == 1
