"""Prometheus metrics, one registry per application (no process-wide globals).

Labels stay bounded: models are the catalog's names (a finite list), statuses are HTTP codes,
scopes and token kinds are fixed words. Per-project labels are not used.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("farebox_requests", "Metered requests answered, by endpoint, status and model.",
                                ["endpoint", "status", "model"], registry=r)
        self.tokens = Counter("farebox_tokens", "Tokens recorded, by kind and model.", ["kind", "model"], registry=r)
        self.cost_usd = Counter("farebox_cost_usd", "Cost recorded, in USD, by model.", ["model"], registry=r)
        self.budget_rejections = Counter("farebox_budget_rejections", "Requests refused with 402, by the scope that refused.",
                                         ["scope"], registry=r)
        self.clamped = Counter("farebox_clamped_requests", "Requests forwarded with their output bound lowered to fit a budget.",
                               registry=r)
        self.estimated = Counter("farebox_estimated_usage", "Requests whose usage was estimated with tiktoken.", registry=r)
        self.upstream_latency = Histogram("farebox_upstream_latency_seconds", "Time from forwarding to the upstream's last byte.",
                                          buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("farebox_overhead_seconds", "Time farebox spends on a request outside the upstream call.",
                                  buckets=_OVERHEAD_BUCKETS, registry=r)
        self.redis_errors = Counter("farebox_redis_errors", "Redis calls that failed.", registry=r)
        self.reservation_overruns = Counter("farebox_reservation_overruns",
                                            "Requests whose actual cost exceeded their reservation.", registry=r)
        self.spooled = Counter("farebox_spooled_events", "Usage events written to the spool while Redis was unavailable.",
                               registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
