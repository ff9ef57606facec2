"""The reading commands of ``farebox``: ``usage`` (a report or ``--series``), ``forecast``,
``recommend`` and ``events export``. Each prints text, or with ``--json`` the same JSON as the admin API; bad
input raises ``BadRequest``, which ``proxy.cli.main`` prints before exiting with status 2.
Each runs against a ``proxy.cli.source.Source``: the ledger, or the running proxy's admin API.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from pricing.money import usd_to_nano
from proxy.cli.source import Source
from proxy.cli.target import Runner
from proxy.control import export
from proxy.control import reports

__all__ = ["COMMANDS", "add_commands", "run"]

COMMANDS = ("usage", "forecast", "events", "recommend")


def add_commands(sub: Any, store_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    usage = sub.add_parser("usage", help="show recorded spend (a report, or --series over time)")
    store_flags(usage)
    usage.add_argument("scope", help="project, agent, session, key or model")
    usage.add_argument("id", help="e.g. acme, acme/planner, acme/run-42, acme/gpt-4o, or gpt-4o for every project")
    usage.add_argument("--period", default="day", help="hour, day, week, month or total (default day)")
    usage.add_argument("--at", help="a date or time inside the period (default now)")
    usage.add_argument("--top", help=f"sessions listed in a project report (0-{reports.MAX_TOP}, default 10)")
    usage.add_argument("--series", action="store_true", help="usage per hour or day instead of one report")
    usage.add_argument("--granularity", default="hour", help="with --series: hour or day (default hour)")
    usage.add_argument("--from", dest="start", help="with --series: first date or time (default 24 hours / 30 days back)")
    usage.add_argument("--to", dest="end", help="with --series: end date or time, exclusive (default now)")
    usage.add_argument("--json", action="store_true", help="print the same JSON as the admin API")

    forecast = sub.add_parser("forecast", help="project spend to the end of the period, and when the budget runs out")
    store_flags(forecast)
    forecast.add_argument("scope", help="project, agent, session, key or model")
    forecast.add_argument("id")
    forecast.add_argument("--period", default="month", help="hour, day, week or month (default month)")
    forecast.add_argument("--json", action="store_true", help="print the same JSON as the admin API")

    recommend = sub.add_parser("recommend", help="ways to spend less, from a project's own usage, with their "
                                                 "estimated monthly savings")
    store_flags(recommend)
    recommend.add_argument("project", help="a project id, e.g. acme")
    recommend.add_argument("--period", default="month", help="the usage to learn from: day, week or month (default month)")
    recommend.add_argument("--json", action="store_true", help="print the same JSON as the admin API")

    events = sub.add_parser("events", help="export recorded events")
    esub = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    exp = esub.add_parser("export", help="write events as NDJSON or CSV")
    store_flags(exp)
    exp.add_argument("--project", help="one project's events (default: every project, in time order)")
    exp.add_argument("--since", help="after this event id (a previous export's cursor), or from a date or time")
    exp.add_argument("--limit", type=int, help="at most this many events (default: all)")
    exp.add_argument("--format", default="ndjson", help="ndjson (default) or csv")
    exp.add_argument("--output", help="file to write (default: standard output)")


def run(args: argparse.Namespace, run_on: Runner) -> int:
    if args.command == "usage" and args.series:
        series = run_on(lambda source: source.usage_series(args.scope, args.id, args.granularity, args.start, args.end))
        _print_json(series) if args.json else _print_series(series)
    elif args.command == "usage":
        report = run_on(lambda source: source.usage_report(args.scope, args.id, args.period, args.at, args.top))
        _print_json(report) if args.json else _print_usage(report)
    elif args.command == "forecast":
        result = run_on(lambda source: source.forecast(args.scope, args.id, args.period))
        _print_json(result) if args.json else _print_forecast(result)
    elif args.command == "recommend":
        result = run_on(lambda source: source.recommendations(args.project, args.period))
        _print_json(result) if args.json else _print_recommendations(result)
    else:
        return _export(args, run_on)
    return 0


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _by_cost(rows: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return sorted(rows.items(), key=lambda kv: (-usd_to_nano(kv[1]["cost_usd"]), kv[0]))


def _print_usage(report: dict[str, Any]) -> None:
    span = (f"from {report['period_start']} to {report['period_end']}" if report["period_start"]
            else "since the first record")
    print(f"{report['scope']} {report['id']} — {report['period']} {span}")
    print(f"  requests {report['requests']}  prompt tokens {report['prompt_tokens']}  "
          f"completion tokens {report['completion_tokens']}  cost ${report['cost_usd']}")
    if report.get("compute_records"):
        print(f"  llm ${report['llm_cost_usd']}  compute ${report['compute_cost_usd']} "
              f"({report['compute_records']} usage records)")
    for title, key in (("by model", "by_model"), ("by resource", "by_resource"), ("by agent", "by_agent"),
                       ("by project", "by_project")):
        rows = report.get(key) or {}
        if rows:
            print(f"  {title}:")
            for name, row in _by_cost(rows):
                count = f"requests {row['requests']:>6}" if "requests" in row else f"records  {row['records']:>6}"
                print(f"    {name:<32} {count}  cost ${row['cost_usd']}")
    if report.get("top_sessions"):
        print("  top sessions:")
        for row in report["top_sessions"]:
            print(f"    {row['session']:<32} requests {row['requests']:>6}  cost ${row['cost_usd']}")


def _print_series(series: dict[str, Any]) -> None:
    print(f"{series['scope']} {series['id']} — per {series['granularity']} from {series['from']} to {series['to']}")
    print(f"  {'start':<20}  {'requests':>8}  {'prompt':>10}  {'completion':>10}  cost")
    for p in series["points"]:
        print(f"  {p['start']:<20}  {p['requests']:>8}  {p['prompt_tokens']:>10}  {p['completion_tokens']:>10}  "
              f"${p['cost_usd']}")
    t = series["totals"]
    print(f"  {'total':<20}  {t['requests']:>8}  {t['prompt_tokens']:>10}  {t['completion_tokens']:>10}  "
          f"${t['cost_usd']}")


def _print_forecast(result: dict[str, Any]) -> None:
    print(f"{result['scope']} {result['id']} — {result['period']} from {result['period_start']} to "
          f"{result['period_end']}, now {result['now']}")
    print(f"  spent so far ${result['spent_usd']}")
    budget = result["budget"]
    for f in result["forecasts"].values():
        line = f"  {f['method']:<9} projected ${f['projected_usd']} at ${f['rate_usd_per_hour']}/hour ({f['basis']})"
        if budget is not None:
            line += f"; budget runs out {f['runs_out_at'] or 'not before it resets'}"
        print(line)
    c = result.get("confidence")
    if c is not None:
        spread = "no spend seen" if c["variation"] is None else f"variation {c['variation']}"
        print(f"  confidence {c['level']} ({c['score']}): {c['buckets_observed']} complete {c['granularity']}s seen "
              f"of {c['buckets_for_full_coverage']} for full coverage, mean ${c['mean_usd']} per {c['granularity']}, "
              f"{spread}")
    if budget is not None:
        print(f"  budget: {budget['mode']} {budget['period']} limit ${budget['limit_usd']}, spent ${budget['spent_usd']}, "
              f"remaining ${budget['remaining_usd']}, resets {budget['resets_at'] or 'never'}")


def _print_recommendations(result: dict[str, Any]) -> None:
    recs = result["recommendations"]
    print(f"project {result['id']} — {len(recs)} recommendation{'' if len(recs) == 1 else 's'} from "
          f"{result['events']} requests this {result['period']} (since {result['period_start']})")
    for n, r in enumerate(recs, 1):
        saving = r["estimated_monthly_savings_usd"]
        gain = f"about ${saving} a month" if usd_to_nano(saving) else "no saving on the bill"
        print(f"{n}. [{r['priority']}] {r['title']}: {gain}")
        print(f"   {r['description']}")
        print("   based on: " + ", ".join(f"{k} {v}" for k, v in r["based_on"].items()))
    if not recs:
        print("  nothing to recommend: no pattern in this period's usage that a change would make cheaper")


def _export(args: argparse.Namespace, run_on: Runner) -> int:
    fmt = export.parse_format(args.format)
    export.parse_since(args.since)  # bad input stops before any output
    if args.limit is not None and args.limit < 1:
        export.parse_limit(args.limit)  # raises: says the accepted range
    opened: list[BinaryIO] = []

    def write(data: bytes) -> None:
        if not opened:  # the file is created with the first page, so an error leaves none behind
            opened.append(open(args.output, "wb") if args.output else sys.stdout.buffer)
        opened[0].write(data)

    async def pages(source: Source) -> tuple[int, str]:
        written, since, first = 0, args.since, True
        while args.limit is None or written < args.limit:
            want = export.MAX_LIMIT if args.limit is None else min(export.MAX_LIMIT, args.limit - written)
            page = await source.export_page(args.project, since, want)
            if page.rows or first:
                write(export.to_csv(page.rows, header=first) if fmt == "csv" else export.to_ndjson(page.rows))
            written, since, first = written + len(page.rows), page.next_since, False
            if len(page.rows) < want:
                break
        return written, since

    try:
        written, cursor = run_on(pages)
    finally:
        for out in opened:
            out.close() if args.output else out.flush()
    print(f"farebox: exported {written} events; continue after them with --since {cursor}", file=sys.stderr)
    return 0
