"""Builders shared by the ledger tests."""

from __future__ import annotations

from datetime import datetime, timezone

from proxy.domain import Attribution, UsageEvent


def epoch(text: str) -> float:
    """``"2026-11-23T18:30:00"`` (UTC) as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def set(self, text: str) -> None:
        self.now = epoch(text)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def event(request_id: str, who: Attribution, *, ts: float, cost_nano: int = 1_000, prompt: int = 100,
          completion: int = 20, cached: int = 0, cache_creation: int = 0, reasoning: int = 0,
          model: str = "gpt-4o-mini", priced_model: str | None = None, estimated: bool = False,
          status: int = 200, stream: bool = False, clamped: int | None = None) -> UsageEvent:
    return UsageEvent(
        request_id=request_id, ts=ts, attribution=who, model=model, priced_model=priced_model or model,
        endpoint="/v1/chat/completions", upstream="http://127.0.0.1:9000/v1", status=status, stream=stream,
        estimated=estimated, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
        cache_creation_tokens=cache_creation, reasoning_tokens=reasoning, cost_nano=cost_nano, latency_ms=42,
        clamped_max_tokens=clamped,
    )
