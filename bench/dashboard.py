"""``python -m bench.dashboard``: how long every request of the dashboard takes with many events
recorded.

    python -m bench.dashboard                      # 100,000 events, 20 timed rounds
    python -m bench.dashboard --events 20000 --rounds 5 --out d.json

farebox runs in this process (aiohttp behind its own server, on 127.0.0.1) against a Redis of
its own (the embedded one in a temporary directory, or ``--redis-url``). The events are
recorded through the ledger, spread over the last 30 days and over 4 projects, 12 agents, 300
sessions and 4 models, with budgets of every period and two keys. Then each round makes every
request the dashboard makes (the page and its assets, the overview, a project's page at each
range, a budget's forecast, the live refresh) one after the other, and the report gives each
request's median, 99th percentile and worst time. The run fails (exit 1) when a request's worst
time is 50 ms or more. ``seed`` also fills the demo the screenshots are taken from
(``scripts/dashboard_screenshots.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from proxy.domain import Attribution, UsageEvent
from proxy.http.app import create_app
from proxy.http.appkeys import SERVICES
from proxy.ledger.ledger import Ledger
from proxy.settings import Settings
from tests.harness import LoopThread

__all__ = ["seed", "requests_of_the_dashboard", "time_requests", "main"]

LIMIT_MS = 50.0
TOKEN = "bench-admin-token"
PROJECTS = {"acme": 0.55, "globex": 0.25, "initech": 0.15, "umbrella": 0.05}   # share of events
MODELS = {"gpt-4o": (2_500, 10_000), "gpt-4o-mini": (150, 600), "gpt-4.1": (2_000, 8_000),
          "o3-mini": (1_100, 4_400)}                    # nano-USD per 1k prompt / completion tokens
AGENTS = ("planner", "coder", "reviewer")
DAY_S = 86_400


def _event(n: int, rng: random.Random, now: float, days: int) -> UsageEvent:
    project = rng.choices(list(PROJECTS), weights=list(PROJECTS.values()))[0]
    model = rng.choice(list(MODELS))
    prompt, completion = rng.randint(200, 4_000), rng.randint(20, 1_500)
    per_prompt, per_completion = MODELS[model]
    # Busier lately, so the charts have a shape; never in the future.
    age = min(days * DAY_S - 1, int(rng.expovariate(1 / (days * DAY_S / 3))))
    who = Attribution(project, rng.choice(AGENTS), f"run-{rng.randint(1, 75)}")
    return UsageEvent(
        request_id=f"bench-{n}", ts=now - age, attribution=who, model=model, priced_model=model,
        endpoint="/v1/chat/completions", upstream="http://127.0.0.1:9/v1", status=200, stream=bool(n % 2),
        estimated=False, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=0,
        cache_creation_tokens=0, reasoning_tokens=0,
        cost_nano=(prompt * per_prompt + completion * per_completion) // 1000 * 1000, latency_ms=rng.randint(200, 4000),
        clamped_max_tokens=None)


async def seed(ledger: Ledger, events: int, *, days: int = 30, seed_value: int = 7) -> None:
    """Set budgets, record ``events`` events over the last ``days`` days, and issue two keys."""
    from proxy.control import keys

    rng = random.Random(seed_value)
    now = ledger.clock()
    scale = events / 3_000   # the demo's figures, whatever the number of events
    for scope, scope_id, limit, period, mode in (
            ("project", "acme", 2.5, "month", "hard"), ("agent", "acme/planner", 0.15, "day", "soft"),
            ("session", "acme/run-7", 0.2, "total", "hard"), ("project", "globex", 1.5, "month", "hard"),
            ("project", "initech", 1, "week", "soft")):
        await ledger.set_budget(scope, scope_id, int(limit * scale * 1_000_000_000), period, mode,
                                (0.5, 0.8, 0.9, 1.0))
    recorded = sorted((_event(n, rng, now, days) for n in range(events)), key=lambda e: e.ts)   # as they happened
    batch = 2_000
    for start in range(0, events, batch):
        await asyncio.gather(*(ledger.settle(e) for e in recorded[start:start + batch]))
    await ledger.settled()
    for body in ({"project": "acme", "name": "ci runners", "models": ["gpt-4o-mini*"], "rpm": 600},
                 {"project": "acme", "agent": "planner", "name": "planner", "expires_in": "30d"}):
        await keys.create_key(ledger, body)


def requests_of_the_dashboard(events_cursor: str) -> list[tuple[str, str]]:
    """(name, path) of every request the dashboard makes, for project acme."""
    acme = "scope=project&id=acme"
    return [
        ("page", "/dashboard"), ("app.js", "/dashboard/assets/app.js"), ("project.js", "/dashboard/assets/project.js"),
        ("charts.js", "/dashboard/assets/charts.js"), ("style.css", "/dashboard/assets/style.css"),
        ("access", "/admin/access"), ("projects", "/admin/projects"),
        ("series day 30d", f"/admin/usage/series?{acme}&granularity=day"),
        ("usage month", f"/admin/usage?{acme}&period=month&top=10"),
        ("usage day", f"/admin/usage?{acme}&period=day&top=10"),
        ("series month by day", f"/admin/usage/series?{acme}&granularity=day&from=MONTH_START&to=MONTH_END"),
        ("series 48 hours by hour", f"/admin/usage/series?{acme}&granularity=hour&from=HOURS_AGO_47"),
        ("budgets", "/admin/budgets?project=acme"), ("alerts", "/admin/alerts?project=acme"),
        ("events recent", "/admin/events/recent?project=acme&limit=20"), ("keys", "/admin/keys?project=acme"),
        ("forecast", "/admin/forecast?scope=project&id=acme&period=month"),
        ("forecast agent", "/admin/forecast?scope=agent&id=acme/planner&period=day"),
        ("live refresh", f"/admin/events?project=acme&since={events_cursor}&limit=100"),
    ]


def time_requests(url: str, rounds: int) -> dict[str, list[float]]:
    """Milliseconds each request of the dashboard took, per round; exits when one is not 200."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        usage = client.get("/admin/usage?scope=project&id=acme&period=month").json()
        cursor = client.get("/admin/events/recent?project=acme&limit=1").json()["next_since"]
        hours_ago = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() - 47 * 3600))
        plan = [(name, path.replace("MONTH_START", usage["period_start"]).replace("MONTH_END", usage["period_end"])
                 .replace("HOURS_AGO_47", hours_ago)) for name, path in requests_of_the_dashboard(cursor)]
        for _, path in plan:                                    # warm up (and check every answer is 200)
            response = client.get(path)
            if response.status_code != 200:
                raise SystemExit(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        times: dict[str, list[float]] = {name: [] for name, _ in plan}
        for _ in range(rounds):
            for name, path in plan:
                since = time.perf_counter()
                client.get(path).raise_for_status()
                times[name].append((time.perf_counter() - since) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--redis-url", default=None, help="a Redis to use (a database of its own); default: embedded")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    threads = LoopThread()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(redis_url=args.redis_url, data_dir=data_dir, admin_token=TOKEN,
                            redis_prefix=f"fbbench{int(time.time())}", upstream="http://127.0.0.1:9/v1")
        app = create_app(settings)
        try:
            url = threads.serve(app, front=True)
            since = time.perf_counter()
            threads.run(seed(app[SERVICES].ledger, args.events), timeout=3600)
            print(f"recorded {args.events} events in {time.perf_counter() - since:.1f} s", file=sys.stderr)
            times = time_requests(url, args.rounds)
        finally:
            threads.close()
    rows = {name: {"median_ms": round(statistics.median(v), 2),
                   "p99_ms": round(sorted(v)[max(0, int(len(v) * 0.99) - 1)], 2), "max_ms": round(max(v), 2)}
            for name, v in times.items()}
    width = max(len(name) for name in rows)
    print(f"{'request':<{width}}  median ms  p99 ms  max ms   ({args.events} events, {args.rounds} rounds)")
    for name, r in rows.items():
        print(f"{name:<{width}}  {r['median_ms']:9.2f}  {r['p99_ms']:6.2f}  {r['max_ms']:6.2f}")
    slow = [name for name, r in rows.items() if r["max_ms"] >= LIMIT_MS]
    if args.out:
        args.out.write_text(json.dumps({"events": args.events, "rounds": args.rounds, "limit_ms": LIMIT_MS,
                                        "requests": rows}, indent=1) + "\n")
    if slow:
        print(f"over {LIMIT_MS:g} ms: {', '.join(slow)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
