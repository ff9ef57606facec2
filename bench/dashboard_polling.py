"""``python -m bench.dashboard_polling``: the data plane's figures with and without dashboards
open on the same farebox.

    python -m bench.dashboard_polling                         # 3 rounds of 10 s, 10 open dashboards
    python -m bench.dashboard_polling --tabs 1 --seconds 20 --out p.json

One farebox process (``farebox serve``, embedded Redis) in front of the fake upstream, as
``python -m bench`` starts them, with an admin token. Each round runs the benchmark's chat
scenario (non-streamed, 16 concurrent clients) twice, alone and while ``--tabs`` dashboards
poll the same process as the page does with project ``bench`` open: its live refresh every 5 s
and, every 30 s, the whole page again (every request it makes to show a project). The two runs
of a round swap places from one round to the next. The report gives each side's requests per
second and latency percentiles, and the difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench import targets as tg
from bench.load import RunResult, run_load
from bench.run import CHUNKS, REPLY_TOKENS, workload

__all__ = ["main"]

TOKEN = "bench-dashboard-token"
LIVE_S, RELOAD_S = 5.0, 30.0


def _page(project: str) -> list[str]:
    """The requests the dashboard makes to show ``project`` (this month, per day)."""
    p = f"scope=project&id={project}"
    return ["/dashboard", "/dashboard/assets/app.js", "/dashboard/assets/project.js", "/dashboard/assets/charts.js",
            "/dashboard/assets/style.css", "/admin/access", f"/admin/usage?{p}&period=month&top=10",
            f"/admin/budgets?project={project}", f"/admin/alerts?project={project}",
            f"/admin/events/recent?project={project}&limit=20", f"/admin/keys?project={project}",
            f"/admin/usage/series?{p}&granularity=day", f"/admin/forecast?{p}&period=month"]


class _Tab(threading.Thread):
    """One open dashboard: the page every ``RELOAD_S``, the live refresh every ``LIVE_S``."""

    def __init__(self, url: str, offset_s: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.offset_s, self.stop = url, offset_s, stop
        self.requests = self.failures = 0

    def _get(self, client: httpx.Client, path: str) -> httpx.Response | None:
        self.requests += 1
        try:
            response = client.get(path)
        except httpx.HTTPError:
            self.failures += 1
            return None
        if response.status_code != 200:
            self.failures += 1
        return response

    def run(self) -> None:
        if self.stop.wait(self.offset_s):
            return
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
            cursor, reloaded = "0-0", 0.0
            while not self.stop.is_set():
                if time.monotonic() - reloaded >= RELOAD_S:
                    reloaded = time.monotonic()
                    for path in _page(tg.BENCH_PROJECT):
                        response = self._get(client, path)
                        if response is not None and path.startswith("/admin/events/recent") and response.is_success:
                            cursor = response.json()["next_since"]
                response = self._get(client, f"/admin/events?project={tg.BENCH_PROJECT}&since={cursor}&limit=100")
                if response is not None and response.is_success:
                    cursor = response.headers.get("X-Next-Since", cursor)
                self.stop.wait(LIVE_S)


def _run(url: str, seconds: float, tabs: int) -> tuple[RunResult, int, int]:
    stop = threading.Event()
    polling = [_Tab(url, n * LIVE_S / max(1, tabs), stop) for n in range(tabs)]
    for tab in polling:
        tab.start()
    try:
        result = run_load(url, workload(False), 16, seconds)
    finally:
        stop.set()
        for tab in polling:
            tab.join(15)
    return result, sum(t.requests for t in polling), sum(t.failures for t in polling)


def _summary(runs: list[RunResult]) -> dict[str, float]:
    return {"rps": round(statistics.median(r.rps for r in runs), 1),
            "p50_ms": round(statistics.median(r.latency_ms["p50"] for r in runs), 2),
            "p99_ms": round(statistics.median(r.latency_ms["p99"] for r in runs), 2),
            "errors": sum(r.errors for r in runs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_polling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tabs", type=int, default=10, help="dashboards open at once")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        upstream = tg.start_fake_upstream(log_dir, chunks=CHUNKS, reply_tokens=REPLY_TOKENS)
        try:
            farebox = tg.start_farebox("farebox", log_dir, upstream, env_extra={"FAREBOX_ADMIN_TOKEN": TOKEN})
            try:
                run_load(farebox.url, workload(False), 16, 2)     # warm up
                alone: list[RunResult] = []
                polled: list[RunResult] = []
                dashboard_requests = failures = 0
                for n in range(args.rounds):
                    for tabs in ((0, args.tabs) if n % 2 == 0 else (args.tabs, 0)):
                        result, made, failed = _run(farebox.url, args.seconds, tabs)
                        (polled if tabs else alone).append(result)
                        dashboard_requests += made
                        failures += failed
            finally:
                farebox.stop()
        finally:
            upstream.stop()
    report = {"seconds": args.seconds, "rounds": args.rounds, "tabs": args.tabs, "alone": _summary(alone),
              "with_dashboards": _summary(polled), "dashboard_requests": dashboard_requests,
              "dashboard_failures": failures}
    a, p = report["alone"], report["with_dashboards"]
    print(f"chat-c16, median of {args.rounds} rounds of {args.seconds:g} s; {args.tabs} dashboards made "
          f"{dashboard_requests} requests ({failures} failed)")
    print(f"{'':16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, row in (("alone", a), ("with dashboards", p)):
        print(f"{name:16} {row['rps']:8.1f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['errors']:7d}")
    print(f"difference: {100 * (p['rps'] - a['rps']) / a['rps']:+.1f} % req/s, "
          f"{100 * (p['p50_ms'] - a['p50_ms']) / a['p50_ms']:+.1f} % p50")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
