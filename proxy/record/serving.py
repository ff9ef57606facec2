"""What the settings make of the sink: its options, and the stream length the ledger appends with."""

from __future__ import annotations

from proxy.record.sink import SinkOptions
from proxy.settings import Settings

__all__ = ["sink_options", "append_maxlen", "postgres_url"]


def postgres_url(settings: Settings) -> str | None:
    return settings.postgres_url.get_secret_value() if settings.postgres_url is not None else None


def sink_options(settings: Settings) -> SinkOptions:
    return SinkOptions(batch=settings.sink_batch, claim_idle_s=settings.sink_claim_idle_s,
                       stream_maxlen=settings.stream_maxlen, stream_max_age_s=settings.stream_max_age_s,
                       defer_busy_s=settings.sink_defer_busy_s)


def append_maxlen(settings: Settings) -> int:
    """The ``MAXLEN ~`` of every append: the length kept, or, while the sink is on (it trims by
    the acknowledged position), the safety cap."""
    if settings.postgres_url is None or settings.stream_maxlen == 0:
        return settings.stream_maxlen
    return max(settings.stream_maxlen, settings.sink_stream_cap)
