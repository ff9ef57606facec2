"""``farebox usage`` (report and --series), ``farebox forecast`` and ``farebox events export``
against a real Redis holding known records."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time

import pytest
import redis.asyncio as aioredis

from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from tests.ledger.helpers import epoch, event
from tests.test_cli import run


def record(redis_url: str, prefix: str, records) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            ledger = Ledger(client, prefix=prefix)
            for rid, who, ts, cost in records:
                await ledger.settle(event(rid, who, ts=ts, cost_nano=cost, prompt=100, completion=10))
        finally:
            await client.aclose()
    asyncio.run(go())


@pytest.fixture
def env(redis_url, key_prefix):
    now = time.time()
    record(redis_url, key_prefix, [
        ("r1", Attribution("acme", "planner", "run-1"), epoch("2026-11-10T23:30:00"), 430_000_000),
        ("r2", Attribution("acme", "coder", "run-2"), epoch("2026-11-11T05:15:00"), 240_000_000),
        ("r3", Attribution("acme", "coder", "run-3"), now, 10_000_000),
        ("r4", Attribution("beta"), now, 20_000_000),
    ])
    return {"REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": key_prefix}


def test_usage_series_as_json_and_text(env):
    args = ["usage", "project", "acme", "--series", "--from", "2026-11-10T22:00:00Z", "--to", "2026-11-11T06:00:00Z"]
    result = run(args + ["--json"], env)
    assert result.returncode == 0, result.stderr
    series = json.loads(result.stdout)
    assert [p["cost_usd"] for p in series["points"]] == ["0.00", "0.43", "0.00", "0.00", "0.00", "0.00", "0.00",
                                                         "0.24"]
    assert series["totals"]["cost_usd"] == "0.67"
    text = run(args, env).stdout.splitlines()
    assert text[0] == "project acme — per hour from 2026-11-10T22:00:00Z to 2026-11-11T06:00:00Z"
    assert text[3].split() == ["2026-11-10T23:00:00Z", "1", "100", "10", "$0.43"]
    assert text[-1].split() == ["total", "2", "200", "20", "$0.67"]
    daily = json.loads(run(["usage", "project", "acme", "--series", "--granularity", "day", "--from", "2026-11-10",
                            "--to", "2026-11-12", "--json"], env).stdout)
    assert [p["cost_usd"] for p in daily["points"]] == ["0.43", "0.24"]


def test_usage_report_lists_top_sessions_and_a_model_across_projects(env):
    text = run(["usage", "project", "acme", "--period", "month", "--at", "2026-11-11"], env).stdout
    assert "top sessions:" in text and "run-1" in text and "run-2" in text
    model = json.loads(run(["usage", "model", "gpt-4o-mini", "--period", "total", "--json"], env).stdout)
    assert model["requests"] == 4 and model["cost_usd"] == "0.70"
    assert set(model["by_project"]) == {"acme", "beta"}


def test_forecast_json_and_text(env):
    assert run(["budget", "set", "project", "acme", "1000", "--period", "month"], env).returncode == 0
    result = run(["forecast", "project", "acme", "--json"], env)
    assert result.returncode == 0, result.stderr
    forecast = json.loads(result.stdout)
    assert forecast["period"] == "month" and set(forecast["forecasts"]) == {"run_rate", "trend"}
    assert forecast["budget"]["limit_usd"] == "1000.00"
    assert forecast["spent_usd"] == forecast["budget"]["spent_usd"]
    assert forecast["confidence"]["granularity"] == "day" and forecast["confidence"]["buckets_for_full_coverage"] == 14
    text = run(["forecast", "project", "acme", "--period", "day"], env).stdout.splitlines()
    assert text[0].startswith("project acme — day from ")
    assert text[2].startswith("  run_rate  projected $") and text[3].startswith("  trend     projected $")
    assert re.fullmatch(r"  confidence (low|medium|high) \(\d(\.\d+)?\): \d+ complete hours seen of 12 for full "
                        r"coverage, mean \$\d+\.\d+ per hour, (no spend seen|variation [\d.]+)", text[4]), text[4]
    assert text[5].startswith("  budget: hard month limit $1000.00")


def test_events_export_to_a_file_then_on_from_the_cursor(env, tmp_path):
    out = tmp_path / "events.csv"
    result = run(["events", "export", "--format", "csv", "--output", str(out)], env)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["request_id"] for r in rows] == ["r1", "r2", "r3", "r4"]
    assert "exported 4 events" in result.stderr
    cursor = result.stderr.split("--since ")[1].strip()
    later = run(["events", "export", "--since", cursor], env)
    assert later.returncode == 0 and later.stdout == "" and "exported 0 events" in later.stderr
    one = run(["events", "export", "--project", "acme", "--limit", "1"], env)
    assert [json.loads(line)["request_id"] for line in one.stdout.splitlines()] == ["r1"]


@pytest.mark.parametrize("args,fragment", [
    (["usage", "project", "acme", "--series", "--granularity", "week"], "use hour or day"),
    (["usage", "project", "acme", "--series", "--from", "2026-11-11", "--to", "2026-11-10"], "must be before"),
    (["usage", "project", "acme", "--series", "--from", "2025-01-01", "--to", "2026-01-01"], "at most 744"),
    (["usage", "project", "acme", "--top", "many"], "Invalid top"),
    (["usage", "galaxy", "acme", "--series"], "unknown scope"),
    (["forecast", "project", "acme", "--period", "total"], "needs a period that ends"),
    (["forecast", "agent", "planner"], "PROJECT/AGENT"),
    (["events", "export", "--limit", "0"], "Invalid limit"),
    (["events", "export", "--format", "xml"], "use ndjson or csv"),
    (["events", "export", "--since", "someday"], "Invalid since"),
    (["events", "export", "--project", "a b"], "invalid project id"),
])
def test_bad_input_exits_2_with_a_message(env, args, fragment):
    result = run(args, env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_a_refused_export_leaves_no_output_file(env, tmp_path):
    out = tmp_path / "events.ndjson"
    result = run(["events", "export", "--project", "a:b", "--output", str(out)], env)
    assert result.returncode == 2 and "invalid project id" in result.stderr
    assert not out.exists()


def test_the_cli_moves_sessions_of_the_earlier_layout_before_it_reads(redis_url, key_prefix):
    async def write_old() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.hset(f"{key_prefix}:{{acme}}:u:session:total:old-run",
                              mapping={"requests": 4, "prompt_tokens": 40, "completion_tokens": 8, "cost": 9_000,
                                       "m|gpt-4o|requests": 4, "m|gpt-4o|prompt_tokens": 40,
                                       "m|gpt-4o|completion_tokens": 8, "m|gpt-4o|cost": 9_000})
        finally:
            await client.aclose()
    asyncio.run(write_old())
    env = {"REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": key_prefix}
    result = run(["usage", "session", "acme/old-run", "--period", "total", "--json"], env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["requests"], report["cost_usd"]) == (4, "0.000009")
    assert report["by_model"] == {"gpt-4o": {"requests": 4, "prompt_tokens": 40, "completion_tokens": 8,
                                             "cost_usd": "0.000009"}}
