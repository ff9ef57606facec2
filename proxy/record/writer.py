"""Writing a batch of events: ``usage_events`` rows and their rollups, in one transaction.

One statement per batch: the rows go in as arrays (``unnest``), ``ON CONFLICT DO NOTHING``
keeps one row per request id, and only the rows actually inserted are added to
``usage_daily`` and ``usage_monthly`` (data-modifying CTEs reading the insert's ``RETURNING``),
so an event delivered twice changes nothing. Rows are sorted by request id and rollup keys so
two sinks writing at once take their locks in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Sequence

import asyncpg

from proxy.ledger.events import StreamEntry
from proxy.record.db import ensure_partitions

__all__ = ["Row", "row_of", "write_batch", "COLUMNS"]

COLUMNS = ("request_id", "ts", "stream_id", "project", "agent", "session", "key_id", "model", "priced_model",
           "endpoint", "upstream", "status", "stream", "estimated", "prompt_tokens", "completion_tokens",
           "cached_tokens", "cache_creation_tokens", "cache_creation_1h_tokens", "reasoning_tokens",
           "web_search_calls", "cost_nano", "latency_ms", "ttfb_ms", "clamped_max_tokens")
_TYPES = ("text", "timestamptz", "text", "text", "text", "text", "text", "text", "text", "text", "text", "int4",
          "bool", "bool", "int8", "int8", "int8", "int8", "int8", "int8", "int8", "int8", "int8", "int8", "int8")
_SUMS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens", "reasoning_tokens",
         "cost_nano")


def _rollup(table: str, period: str, bucket: str) -> str:
    cols = ", ".join(_SUMS)
    sums = ", ".join(f"sum({c})::bigint" for c in _SUMS)
    updates = ", ".join(f"{c} = r.{c} + EXCLUDED.{c}" for c in (*_SUMS, "requests", "estimated"))
    return (f"INSERT INTO {table} AS r (project, {period}, agent, model, key_id, requests, {cols}, estimated) "
            f"SELECT project, {bucket}, agent, priced_model, coalesce(key_id, ''), count(*), {sums}, "
            f"count(*) FILTER (WHERE estimated) FROM ins GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 "
            f"ON CONFLICT (project, {period}, agent, model, key_id) DO UPDATE SET {updates} RETURNING 1")


_DAY = "(ts AT TIME ZONE 'UTC')::date"
_MONTH = "date_trunc('month', ts AT TIME ZONE 'UTC')::date"
_UNNEST = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES))
_INSERT = (
    f"WITH rows AS (SELECT * FROM unnest({_UNNEST}) AS u({', '.join(COLUMNS)})), "
    f"ins AS (INSERT INTO usage_events ({', '.join(COLUMNS)}) SELECT * FROM rows ORDER BY request_id, ts "
    f"ON CONFLICT DO NOTHING RETURNING project, ts, agent, priced_model, key_id, estimated, {', '.join(_SUMS)}), "
    f"daily AS ({_rollup('usage_daily', 'day', _DAY)}), "
    f"monthly AS ({_rollup('usage_monthly', 'month', _MONTH)}) "
    f"SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM daily), (SELECT count(*) FROM monthly)"
)


@dataclass(frozen=True, slots=True)
class Row:
    values: tuple
    month: date


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None


def row_of(entry: StreamEntry) -> Row:
    """An event stream entry (``UsageEvent.to_fields``) as a ``usage_events`` row, read straight
    from its string fields; a field added after an entry was written reads as its default
    (``ValueError`` / ``KeyError`` when the entry is not a usage event)."""
    f = entry.fields
    ts = datetime.fromtimestamp(float(f["ts"]), tz=timezone.utc)
    values = (f["request_id"], ts, entry.id_text, f["project"], f["agent"], f["session"] or None,
              f["key_id"] or None, f["model"], f["priced_model"], f["endpoint"], f["upstream"], int(f["status"]),
              f["stream"] == "1", f["estimated"] == "1", int(f["prompt_tokens"]), int(f["completion_tokens"]),
              int(f["cached_tokens"]), int(f["cache_creation_tokens"]), int(f.get("cache_creation_1h_tokens") or 0),
              int(f["reasoning_tokens"]), int(f.get("web_search_calls") or 0), int(f["cost_nano"]),
              int(f["latency_ms"]), _int_or_none(f.get("ttfb_ms")), _int_or_none(f.get("clamped_max_tokens")))
    return Row(values, ts.date().replace(day=1))


async def write_batch(conn: asyncpg.Connection, rows: Sequence[Row], partitions: set[date]) -> int:
    """Write ``rows`` and their rollups in one transaction; returns how many rows were new."""
    unique = {(r.values[0], r.values[1]): r for r in rows}
    if not unique:
        return 0
    await ensure_partitions(conn, {r.month for r in unique.values()}, partitions)
    columns = list(zip(*(r.values for r in unique.values())))
    async with conn.transaction():
        inserted, _, _ = await conn.fetchrow(_INSERT, *columns)
    return int(inserted)
