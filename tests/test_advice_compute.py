"""Recommendations pass over usage records of compute, even when unknown models get a fallback price."""

from __future__ import annotations

from proxy.compute import usage_event
from proxy.control.advice import Window, advise
from proxy.domain import Attribution
from proxy.http.app import build_catalog
from proxy.settings import Settings


def test_usage_records_of_compute_get_no_model_advice():
    catalog = build_catalog(Settings(unknown_model_price={"input_per_million_usd": "1",
                                                          "output_per_million_usd": "2"}))
    assert catalog.resolve("compute:gpu") is not None       # the fallback would price it as a model
    who = Attribution("acme", "runner", "job-7")
    events = [usage_event(f"u{n}", 1_800_000_000 + n, who, "compute:gpu", 750_000_000, 201) for n in range(40)]
    window = Window(1_800_000_000_000, 1_800_003_600_000, 30_000_000_000, 30_000_000_000)
    assert advise(events, catalog, window) == []
