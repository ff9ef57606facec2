"""A project's monthly statement from PostgreSQL's rollups: per agent, per model, per day, total.

Amounts stay integer nano-USD (``cost_nano``) until ``to_json`` / ``to_csv`` show them as USD,
so the parts add up to the total exactly, as Redis's month aggregate does.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import asyncpg

from pricing.money import nano_to_usd
from proxy.record.db import next_month

__all__ = ["Statement", "read_statement", "parse_month", "FIELDS", "PART_FIELDS"]

# Every sum a rollup row has, and those each breakdown shows (as the Redis report's).
FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens",
          "reasoning_tokens", "cost_nano", "estimated")
PART_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_nano")


def parse_month(text: str) -> date:
    """``2026-11`` as the date of its first day; ValueError saying what to write."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", text or "")
    if not match or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1:
        raise ValueError(f"invalid month {text!r}: write YYYY-MM, e.g. 2026-11")
    return date(int(match[1]), int(match[2]), 1)


def _zero() -> dict[str, int]:
    return dict.fromkeys(FIELDS, 0)


@dataclass
class Statement:
    """Sums in integers: ``total``, and per agent, model and day (``YYYY-MM-DD``)."""

    project: str
    month: date
    total: dict[str, int] = field(default_factory=_zero)
    by_agent: dict[str, dict[str, int]] = field(default_factory=dict)
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    by_day: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, agent: str, model: str, values: dict[str, int]) -> None:
        """A monthly rollup row: into the total, its agent's and its model's sums."""
        for part in (self.total, self.by_agent.setdefault(agent, _zero()), self.by_model.setdefault(model, _zero())):
            for name in FIELDS:
                part[name] += values[name]

    def to_json(self) -> dict[str, Any]:
        def show(values: dict[str, int], full: bool) -> dict[str, Any]:
            names = FIELDS if full else PART_FIELDS
            out: dict[str, Any] = {("estimated_requests" if n == "estimated" else n): values[n]
                                   for n in names if n != "cost_nano"}
            out["cost_usd"] = nano_to_usd(values["cost_nano"])
            return out

        return {"project": self.project, "month": self.month.strftime("%Y-%m"), "total": show(self.total, True),
                "by_agent": {k: show(v, False) for k, v in sorted(self.by_agent.items())},
                "by_model": {k: show(v, False) for k, v in sorted(self.by_model.items())},
                "by_day": {k: show(v, True) for k, v in sorted(self.by_day.items())}}

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["project", "month", "part", "name", "requests", "prompt_tokens", "completion_tokens",
                         "cost_usd"])
        month = self.month.strftime("%Y-%m")
        rows = [("total", "", self.total)]
        rows += [("agent", k, v) for k, v in sorted(self.by_agent.items())]
        rows += [("model", k, v) for k, v in sorted(self.by_model.items())]
        rows += [("day", k, v) for k, v in sorted(self.by_day.items())]
        for part, name, v in rows:
            writer.writerow([self.project, month, part, name, v["requests"], v["prompt_tokens"],
                             v["completion_tokens"], nano_to_usd(v["cost_nano"])])
        return out.getvalue()

    def to_text(self) -> str:
        lines = [f"statement of {self.project} for {self.month.strftime('%Y-%m')}: {self.total['requests']} requests, "
                 f"{self.total['prompt_tokens']} prompt + {self.total['completion_tokens']} completion tokens, "
                 f"${nano_to_usd(self.total['cost_nano'])}"]
        for title, part in (("by agent", self.by_agent), ("by model", self.by_model), ("by day", self.by_day)):
            lines.append(f"{title}:")
            for name, v in sorted(part.items()):
                lines.append(f"  {name}: {v['requests']} requests, ${nano_to_usd(v['cost_nano'])}")
        return "\n".join(lines) + "\n"


async def read_statement(conn: asyncpg.Connection | asyncpg.Pool, project: str, month: date) -> Statement:
    """``project``'s statement for the month starting ``month``: totals, agents and models from
    ``usage_monthly``, days from ``usage_daily``."""
    sums = ", ".join(f"sum({n})::bigint AS {n}" for n in FIELDS)
    statement = Statement(project, month)
    for row in await conn.fetch(f"SELECT agent, model, {sums} FROM usage_monthly WHERE project = $1 AND month = $2 "
                                "GROUP BY agent, model ORDER BY agent, model", project, month):
        statement.add(row["agent"], row["model"], {n: int(row[n]) for n in FIELDS})
    for row in await conn.fetch(f"SELECT day, {sums} FROM usage_daily WHERE project = $1 AND day >= $2 AND day < $3 "
                                "GROUP BY day ORDER BY day", project, month, next_month(month)):
        statement.by_day[row["day"].isoformat()] = {n: int(row[n]) for n in FIELDS}
    return statement
