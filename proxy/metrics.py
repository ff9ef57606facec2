"""Prometheus metrics, one registry per application (no process-wide globals).

Labels stay bounded: models are the catalog's names (a finite list), statuses are HTTP codes,
scopes and token kinds are fixed words, upstreams the names the configuration gives them. A
``project`` label on requests, tokens, cost and budget rejections is opt-in
(``metrics_project_labels``): one series per project is fine for tens of projects, not for one
project per customer. Agents and sessions are never labels.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics import MetricWrapperBase

from pricing.cost import Usage

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

_TOKEN_KINDS = ("prompt", "completion", "cached", "cache_creation", "reasoning")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class _Children:
    """A labelled metric's children by label values. ``labels()`` validates its arguments and
    takes a lock on every call; the children it returns live as long as the metric, so each
    is looked up once and then found here."""

    __slots__ = ("_metric", "_children")

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], MetricWrapperBase] = {}

    def get(self, values: tuple[str, ...]) -> MetricWrapperBase:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    def __init__(self, *, project_labels: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.project_labels = project_labels
        p = ["project"] if project_labels else []
        self.requests = Counter("farebox_requests", "Metered requests answered, by endpoint, status and model.",
                                ["endpoint", "status", "model", *p], registry=r)
        self.tokens = Counter("farebox_tokens", "Tokens recorded, by kind and model.", ["kind", "model", *p], registry=r)
        self.cost_usd = Counter("farebox_cost_usd", "Cost recorded, in USD, by model.", ["model", *p], registry=r)
        self.budget_rejections = Counter("farebox_budget_rejections", "Requests refused with 402, by the scope that refused.",
                                         ["scope", *p], registry=r)
        self.rate_rejections = Counter("farebox_rate_limited", "Requests refused with 429 by a rate limit, by its scope "
                                       "(project, key) and kind (requests, tokens).", ["scope", "limit", *p], registry=r)
        self.clamped = Counter("farebox_clamped_requests", "Requests forwarded with their output bound lowered to fit a budget.",
                               registry=r)
        self.estimated = Counter("farebox_estimated_usage", "Requests whose usage was estimated with tiktoken.", registry=r)
        self.upstream_requests = Counter("farebox_upstream_requests",
                                         "Metered requests sent to an upstream, by its name (the events' `upstream`) "
                                         "and the status farebox answered with.", ["upstream", "status"], registry=r)
        self.upstream_latency = Histogram("farebox_upstream_latency_seconds",
                                          "Time from the request written to the upstream to the answer's last byte.",
                                          buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_ttfb = Histogram("farebox_upstream_ttfb_seconds",
                                       "Time from the request written to the upstream to the answer's first byte.",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_connect = Histogram("farebox_upstream_connect_seconds",
                                          "Time to get a connection to the upstream: reusing an idle one, opening one, "
                                          "or waiting for one under upstream_max_connections.",
                                          buckets=_OVERHEAD_BUCKETS + _LATENCY_BUCKETS[7:], registry=r)
        self.overhead = Histogram("farebox_overhead_seconds",
                                  "Time farebox spends on a request outside the upstream call (before asking for a "
                                  "connection, and after the answer's last byte).",
                                  buckets=_OVERHEAD_BUCKETS, registry=r)
        self.redis_errors = Counter("farebox_redis_errors", "Redis calls that failed.", registry=r)
        self.redis_redirections = Gauge("farebox_redis_redirections",
                                        "MOVED and ASK answers of a Redis Cluster followed on the request path so far.",
                                        registry=r)
        self.reservation_overruns = Counter("farebox_reservation_overruns",
                                            "Requests whose actual cost exceeded their reservation.", registry=r)
        self.spooled = Counter("farebox_spooled_events", "Usage events written to the spool while Redis was unavailable.",
                               registry=r)
        self.alerts = Counter("farebox_alerts", "Budget alert thresholds crossed (outcome crossed) and their webhook "
                              "deliveries, one per URL (delivered, failed, dropped), and e-mails (emailed, email_failed), by scope "
                              "and threshold percent.",
                              ["scope", "threshold", "outcome"], registry=r)
        self._requests = _Children(self.requests)
        self._tokens = _Children(self.tokens)
        self._cost_usd = _Children(self.cost_usd)
        self._budget_rejections = _Children(self.budget_rejections)
        self._rate_rejections = _Children(self.rate_rejections)
        self._upstream_requests = _Children(self.upstream_requests)

    def watch_redirections(self, read: Callable[[], int]) -> None:
        """``farebox_redis_redirections`` is ``read()`` at each scrape (the cluster pipe's count)."""
        self.redis_redirections.set_function(read)

    def _with_project(self, labels: tuple[str, ...], project: str) -> tuple[str, ...]:
        return (*labels, project) if self.project_labels else labels

    def request(self, endpoint: str, status: int | str, model: str, project: str) -> None:
        """A metered request answered with ``status`` (charged or not)."""
        self._requests.get(self._with_project((endpoint, str(status), model), project)).inc()

    def upstream_request(self, upstream: str, status: int | str) -> None:
        """A metered request sent to the upstream named ``upstream``, answered with ``status``."""
        self._upstream_requests.get((upstream, str(status))).inc()

    def usage(self, model: str, project: str, usage: Usage, cost_nano: int, *, estimated: bool) -> None:
        """What a recorded request used: tokens by kind, cost, and whether it was estimated."""
        counts = (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_creation_tokens,
                  usage.reasoning_tokens)
        for kind, count in zip(_TOKEN_KINDS, counts):
            if count or kind in ("prompt", "completion"):
                self._tokens.get(self._with_project((kind, model), project)).inc(count)
        self._cost_usd.get(self._with_project((model,), project)).inc(cost_nano / 1e9)
        if estimated:
            self.estimated.inc()

    def rejection(self, scope: str, project: str) -> None:
        """A request refused with 402 by a budget of ``scope``."""
        self._budget_rejections.get(self._with_project((scope,), project)).inc()

    def rate_limited(self, scope: str, limit: str, project: str) -> None:
        """A request refused with 429 by a rate limit of ``scope`` on ``limit`` (requests, tokens)."""
        self._rate_rejections.get(self._with_project((scope, limit), project)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
