"""Event export: pages of recorded requests from the event streams, as NDJSON or CSV.

A page is read from ``since`` (exclusive when it is a stream id such as ``1732386600000-0``,
inclusive when it is a date or time) and comes with ``next_since``, the cursor of the next page.
Without ``project`` every project's stream is read, merged in id order.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from pricing.money import nano_to_usd
from proxy.control.params import parse_at
from proxy.errors import BadRequest
from proxy.ledger import events as streams
from proxy.domain import UsageEvent, check_id
from proxy.ledger.ledger import Ledger
from proxy.ledger.reports import known_projects

__all__ = ["Page", "export_page", "parse_since", "parse_limit", "parse_format", "to_ndjson", "to_csv",
           "event_row", "COLUMNS", "FORMATS", "MAX_LIMIT", "DEFAULT_LIMIT"]

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
FORMATS = ("ndjson", "csv")
COLUMNS: tuple[str, ...] = (
    "id", "time", "ts", "request_id", "project", "agent", "session", "key_id", "model", "priced_model", "endpoint",
    "upstream", "status", "stream", "estimated", "prompt_tokens", "completion_tokens", "cached_tokens",
    "cache_creation_tokens", "reasoning_tokens", "cost_usd", "cost_nano", "latency_ms", "clamped_max_tokens",
    "ttfb_ms", "cache_creation_1h_tokens", "web_search_calls",
)


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict[str, Any]]
    next_since: str


def parse_since(value: str | None) -> streams.StreamId:
    """The first stream id to read: after a stream id, from a date or time, or from the beginning."""
    if value is None or value.strip() == "":
        return (0, 0)
    entry_id = streams.parse_stream_id(value.strip())
    if entry_id is not None:
        return streams.after(entry_id)
    if value.strip().isdigit():
        raise BadRequest(f"Invalid since '{value}': use a stream id such as 1732386600000-0 (from X-Next-Since) "
                         "or a date or time such as 2026-11-22T13:00:00Z.", param="since", code="invalid_value")
    return (max(0, int(parse_at(value, param="since").timestamp() * 1000)), 0)


def parse_limit(value: str | int | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"Invalid limit '{value}': a number of events from 1 to {MAX_LIMIT}; page on with "
                         "the X-Next-Since cursor.", param="limit", code="invalid_value")
    return int(text)


def parse_format(value: str | None, accept: str = "") -> str:
    """``ndjson`` (default) or ``csv``, from ``format`` or, without it, an ``Accept: text/csv``."""
    if value is None or value == "":
        return "csv" if "text/csv" in accept else "ndjson"
    if value not in FORMATS:
        raise BadRequest(f"Invalid format '{value}': use ndjson or csv.", param="format", code="invalid_value")
    return value


def _before(entry_id: streams.StreamId) -> str:
    """The cursor whose next page starts at ``entry_id``."""
    ms, seq = entry_id
    if seq > 0:
        return streams.format_stream_id((ms, seq - 1))
    return streams.format_stream_id((ms - 1, streams.MAX_SEQ)) if ms > 0 else "0-0"


def event_row(entry: streams.StreamEntry) -> dict[str, Any]:
    """One recorded request as an export row (``COLUMNS``)."""
    ev = UsageEvent.from_fields(entry.fields)
    a = ev.attribution
    time = datetime.fromtimestamp(ev.ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "id": entry.id_text, "time": time, "ts": ev.ts, "request_id": ev.request_id, "project": a.project,
        "agent": a.agent, "session": a.session, "key_id": a.key_id, "model": ev.model,
        "priced_model": ev.priced_model, "endpoint": ev.endpoint, "upstream": ev.upstream, "status": ev.status,
        "stream": ev.stream, "estimated": ev.estimated, "prompt_tokens": ev.prompt_tokens,
        "completion_tokens": ev.completion_tokens, "cached_tokens": ev.cached_tokens,
        "cache_creation_tokens": ev.cache_creation_tokens, "reasoning_tokens": ev.reasoning_tokens,
        "cost_usd": nano_to_usd(ev.cost_nano), "cost_nano": ev.cost_nano, "latency_ms": ev.latency_ms,
        "clamped_max_tokens": ev.clamped_max_tokens, "ttfb_ms": ev.ttfb_ms,
        "cache_creation_1h_tokens": ev.cache_creation_1h_tokens, "web_search_calls": ev.web_search_calls,
    }


async def export_page(ledger: Ledger, project: str | None, since: str | None, limit: str | int | None) -> Page:
    """One page of events of ``project`` (or of every project) after the cursor ``since``."""
    start = parse_since(since)
    count = parse_limit(limit)
    if project:
        try:
            projects = [check_id(project, "project")]
        except ValueError as exc:
            raise BadRequest(str(exc), param="project", code="invalid_value") from None
    else:
        projects = await known_projects(ledger)
    entries = await streams.read_events(ledger, projects, start, count)
    next_since = entries[-1].id_text if entries else _before(start)
    return Page([event_row(e) for e in entries], next_since)


def to_ndjson(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def to_csv(rows: list[dict[str, Any]], *, header: bool = True) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in COLUMNS])
    return out.getvalue().encode()
