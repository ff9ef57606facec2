"""Medians, ratios and target checks of a benchmark run; its JSON and its Markdown.

Every figure is a median over the repeated runs of one target in one scenario. Differences
to direct calls ("added") are taken run by run, each farebox run against the direct run of
the same round, then their median, so a machine that slows down during the run shifts both
sides alike.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

__all__ = ["summarise", "render_markdown", "write_markdown", "get_path", "MARK_BEGIN", "MARK_END"]

MARK_BEGIN = "<!-- bench:results:begin (written by python -m bench; edit outside these marks) -->"
MARK_END = "<!-- bench:results:end -->"


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def get_path(run: dict[str, Any], path: str) -> float | None:
    """The number at a dotted ``path`` of a run's figures, or None where any part is missing."""
    value: Any = run
    for part in path.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            return None
        value = value[part]
    return float(value)


_METRICS = {
    "rps": "rps",
    "p50_ms": "latency_ms.p50",
    "p99_ms": "latency_ms.p99",
    "ttfb_p50_ms": "ttfb_ms.p50",
    "ttfb_p99_ms": "ttfb_ms.p99",
    "ttlb_p50_ms": "ttlb_ms.p50",
    "ttlb_p99_ms": "ttlb_ms.p99",
    "events_per_response": "events_per_response",
    "cpu_s_per_1k": "cpu_s_per_1k",
    "redis_cpu_s_per_1k": "redis_cpu_s_per_1k",
    "upstream_cpu_s_per_1k": "upstream_cpu_s_per_1k",
    "peak_rss_mb": "peak_rss_mb",
    "errors": "errors",
    "requests": "requests",
}


def _paired(runs: list[dict[str, Any]], base: list[dict[str, Any]], path: str) -> float | None:
    by_round = {r["round"]: r for r in base}
    diffs = []
    for run in runs:
        other = by_round.get(run["round"])
        mine, theirs = get_path(run, path), get_path(other, path) if other else None
        if mine is not None and theirs is not None:
            diffs.append(mine - theirs)
    return _median(diffs)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]], scenarios: list[dict[str, Any]],
              extras: dict[str, Any]) -> dict[str, Any]:
    """Medians per scenario and target, ratios, and the issue's targets checked."""
    medians: dict[str, dict[str, dict[str, float | None]]] = {}
    for scenario in scenarios:
        name = scenario["name"]
        per_target = results.get(name, {})
        direct = per_target.get("direct", [])
        medians[name] = {}
        for target, runs in per_target.items():
            row = {key: _median([get_path(r, path) for r in runs]) for key, path in _METRICS.items()}
            if target != "direct" and direct:
                row["added_p50_ms"] = _paired(runs, direct, "latency_ms.p50")
                row["added_p99_ms"] = _paired(runs, direct, "latency_ms.p99")
                if scenario["stream"]:
                    row["added_ttfb_p50_ms"] = _paired(runs, direct, "ttfb_ms.p50")
                    row["added_ttlb_p50_ms"] = _paired(runs, direct, "ttlb_ms.p50")
            medians[name][target] = row
    ratios: dict[str, dict[str, float | None]] = {}
    for name, rows in medians.items():
        fb, direct, ll, relay = rows.get("farebox"), rows.get("direct"), rows.get("litellm"), rows.get("aiohttp-relay")
        two = next((rows[t] for t in rows if t.startswith("farebox-") and t.endswith("w")), None)
        entry: dict[str, float | None] = {}
        if fb and direct:
            entry["farebox/direct rps"] = _ratio(fb["rps"], direct["rps"])
        if fb and relay:
            entry["farebox/relay rps"] = _ratio(fb["rps"], relay["rps"])
        if fb and ll:
            entry["litellm/farebox rps"] = _ratio(ll["rps"], fb["rps"])
            entry["litellm/farebox p50"] = _ratio(ll["p50_ms"], fb["p50_ms"])
            entry["litellm/farebox cpu"] = _ratio(ll["cpu_s_per_1k"], fb["cpu_s_per_1k"])
            entry["litellm/farebox rss"] = _ratio(ll["peak_rss_mb"], fb["peak_rss_mb"])
        if fb and two:
            entry["farebox workers/1 rps"] = _ratio(two["rps"], fb["rps"])
        ratios[name] = entry
    return {"medians": medians, "ratios": ratios, "targets": _targets(medians, extras)}


def _targets(medians: dict[str, dict[str, dict[str, float | None]]], extras: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def check(name: str, measured: float | None, limit: float, unit: str, *, at_least: bool = False,
              where: str = "") -> None:
        met = None if measured is None else (measured >= limit if at_least else measured <= limit)
        out.append({"target": name, "where": where, "measured": measured, "limit": limit, "unit": unit,
                    "comparison": ">=" if at_least else "<=", "met": met})

    def fb(scenario: str, key: str) -> float | None:
        return medians.get(scenario, {}).get("farebox", {}).get(key)

    check("added latency p50", fb("chat-c1", "added_p50_ms"), 1.0, "ms", where="chat-c1")
    check("added latency p99", fb("chat-c1", "added_p99_ms"), 5.0, "ms", where="chat-c1")
    direct64 = medians.get("chat-c64", {}).get("direct", {}).get("rps")
    check("throughput vs direct", _ratio(fb("chat-c64", "rps"), direct64), 0.5, "x direct", at_least=True,
          where="chat-c64")
    chat = [s for s in medians if s.startswith("chat-")]
    worst_cpu = max((v for s in chat if (v := fb(s, "cpu_s_per_1k")) is not None), default=None)
    check("CPU per request (worst non-streamed scenario)", worst_cpu, 0.5, "ms",
          where=", ".join(chat))
    check("added time to first byte p50", fb("stream-c1", "added_ttfb_p50_ms"), 2.0, "ms", where="stream-c1")
    for api in ("responses", "messages"):
        scenario = f"{api}-stream-c1"
        if scenario in medians:
            check(f"added time to first byte p50 ({api})", fb(scenario, "added_ttfb_p50_ms"), 1.0, "ms", where=scenario)
            check(f"CPU per stream ({api})", fb(scenario, "cpu_s_per_1k"), 1.0, "ms", where=scenario)
    paced = extras.get("paced", {}).get("farebox")
    if paced is not None:
        check("stream events held back and sent together", paced.get("bunched_events"), 0.0, "share of events",
              where="paced stream, 5 ms between upstream chunks")
    peak = max((v for s in medians if (v := fb(s, "peak_rss_mb")) is not None), default=None)
    check("peak RSS under load", peak, 150.0, "MB", where="all scenarios")
    growth = extras.get("rss_growth_mb", {}).get("farebox")
    if growth is not None:
        check("RSS growth from first to last round", growth, 5.0, "MB", where="after each round")
    ready = extras.get("ready_s", {}).get("farebox")
    check("ready to serve", ready, 2.0, "s", where="spawn to first 200 on /readyz")
    return out


# --------------------------------------------------------------------------- Markdown

def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    meta, summary = report["meta"], report["summary"]
    medians, ratios = summary["medians"], summary["ratios"]
    scenarios = report["scenarios"]
    lines = [
        f"Run {meta['started_at']} — `{meta['command']}`",
        "",
        f"- Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, {meta['machine']['memory_gb']:.0f} GB, "
        f"{meta['machine']['os']}; load average at start {meta['machine']['load_at_start']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- Runs: {meta['repeats']} rounds × {meta['duration_s']:g} s per target and scenario, targets interleaved "
        f"(order rotated each round); load generator {meta['loadgen']}; Redis {meta['redis']}",
        f"- Upstream: farebox's fake upstream, no delay, {meta['upstream']['reply_tokens']} tokens per reply, "
        f"{meta['upstream']['chunks']} content chunks per stream; requests carry `max_tokens` "
        f"{meta['max_tokens']} (streams: `stream_options.include_usage`)",
        "",
    ]
    chat = [s for s in scenarios if not s["stream"]]
    stream = [s for s in scenarios if s["stream"]]
    if chat:
        lines += ["Non-streamed chat completions (medians):", "",
                  "| scenario | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU s / 1k req | Redis CPU s / 1k | peak RSS MB |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in chat:
            for target, row in medians.get(s["name"], {}).items():
                lines.append(f"| {s['name']} | {target} | {_fmt(row['rps'])} | {_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} "
                             f"| {_fmt(row.get('added_p50_ms'))} | {_fmt(row.get('added_p99_ms'))} "
                             f"| {_fmt(row['cpu_s_per_1k'], 3)} | {_fmt(row['redis_cpu_s_per_1k'], 3)} "
                             f"| {_fmt(row['peak_rss_mb'], 0)} |")
        lines.append("")
    if stream:
        lines += ["Streamed chat completions (medians; TTFB = first body byte, TTLB = last):", "",
                  "| scenario | target | streams/s | TTFB p50 ms | added TTFB p50 ms | TTLB p50 ms | TTLB p99 ms | events / stream | CPU s / 1k streams | peak RSS MB |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in stream:
            for target, row in medians.get(s["name"], {}).items():
                lines.append(f"| {s['name']} | {target} | {_fmt(row['rps'])} | {_fmt(row['ttfb_p50_ms'])} "
                             f"| {_fmt(row.get('added_ttfb_p50_ms'))} | {_fmt(row['ttlb_p50_ms'])} | {_fmt(row['ttlb_p99_ms'])} "
                             f"| {_fmt(row['events_per_response'], 0)} | {_fmt(row['cpu_s_per_1k'], 3)} "
                             f"| {_fmt(row['peak_rss_mb'], 0)} |")
        lines.append("")
    keys = sorted({k for entry in ratios.values() for k in entry})
    if keys:
        lines += ["Ratios (of the medians above):", "", "| scenario | " + " | ".join(keys) + " |",
                  "|---|" + "---:|" * len(keys)]
        for name, entry in ratios.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(entry.get(k)) for k in keys) + " |")
        lines.append("")
    extras = report["extras"]
    lines += ["Start-up and memory:", "", "| target | ready s | RSS after each round, MB | growth MB |", "|---|---:|---|---:|"]
    for target, ready in extras.get("ready_s", {}).items():
        rounds = extras.get("rss_after_round_mb", {}).get(target, [])
        lines.append(f"| {target} | {_fmt(ready)} | {', '.join(_fmt(v, 0) for v in rounds) or '–'} "
                     f"| {_fmt(extras.get('rss_growth_mb', {}).get(target), 1)} |")
    lines.append("")
    paced = extras.get("paced")
    if paced:
        lines += [f"Stream pacing (the upstream waits {paced['delay_ms']:g} ms between events; an event held back "
                  "on the way arrives less than 1 ms after the one before):", "",
                  "| target | streams | events / stream | gap p50 ms | gap min ms | events sent together |",
                  "|---|---:|---:|---:|---:|---:|"]
        for target, row in paced.items():
            if isinstance(row, dict):
                gap = row.get("gap_ms") or {}
                lines.append(f"| {target} | {row['requests']} | {_fmt(row.get('events_per_response'), 0)} "
                             f"| {_fmt(gap.get('p50'))} | {_fmt(gap.get('min'))} "
                             f"| {_fmt((row.get('bunched_events') or 0) * 100, 1)} % |")
        lines.append("")
    pieces = report.get("pieces")
    if pieces:
        lines += ["The pieces farebox adds, each timed on its own:", "", "| piece | median | notes |", "|---|---:|---|"]
        for label, row in pieces["prompt_counting"].items():
            lines.append(f"| prompt counting, {label} | {_fmt(row['ms_p50'], 3)} ms | {row['tokens']:,} tokens |")
        rs = pieces["reserve_settle"]
        lines.append(f"| reserve + settle round trip | {_fmt(rs['us_p50'] / 1000, 3)} ms | p99 {_fmt(rs['us_p99'] / 1000, 3)} ms; "
                     f"reserve {_fmt(rs['reserve_us_p50'] / 1000, 3)} ms, settle {_fmt(rs['settle_us_p50'] / 1000, 3)} ms; "
                     f"client CPU {_fmt(rs['client_cpu_us'] / 1000, 3)} ms; Redis {rs['redis']} |")
        if rs.get("redis_settle_us"):
            calls = rs.get("redis_calls_per_settle") or {}
            lines.append(f"| … of which inside Redis | {_fmt((rs['redis_reserve_us'] + rs['redis_settle_us']) / 1000, 3)} ms "
                         f"| reserve script {_fmt(rs['redis_reserve_us'], 0)} µs, settle script {_fmt(rs['redis_settle_us'], 0)} µs; "
                         f"a settle makes {', '.join(f'{v:g} {k.upper()}' for k, v in calls.items())} |")
        sse = pieces["sse_parse"]
        lines.append(f"| SSE parse, per chunk | {_fmt(sse['us_per_chunk_p50'], 1)} µs | split, data, JSON, usage meter; "
                     f"{sse['events_per_stream']} events per stream |")
        lines.append("")
    lines += ["Targets:", "", "| target | where | measured | limit | met |", "|---|---|---:|---:|---|"]
    for t in summary["targets"]:
        met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['where']} | {_fmt(t['measured'], 3)} {t['unit']} | {t['comparison']} {t['limit']:g} | {met} |")
    lines.append("")
    return "\n".join(lines)


def write_markdown(path: Path, body: str, begin: str = MARK_BEGIN, end: str = MARK_END) -> None:
    """Put ``body`` between the marks ``begin`` and ``end`` of ``path`` (by default the result
    marks; creating the file or the marks if needed)."""
    block = f"{begin}\n{body}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
