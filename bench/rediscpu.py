"""Redis's own account of a run (``--redis-cpu``): how far one Redis goes behind N farebox processes.

Before and after each run against a farebox target, its Redis is asked ``INFO cpu`` and ``INFO
commandstats``; the differences, divided by the requests the run completed, give Redis CPU per
request (``used_cpu_sys + used_cpu_user`` of the server process, its background threads
included), the requests/s one Redis core would sustain at that cost (one over it), and the
commands per request (``EVALSHA`` / ``EVAL``: script calls). The target's Redis is the one its
process tree started (the embedded ``redis-server``, found by the unix socket it listens on) or the
``--redis-url`` every target shares (the targets run one at a time, so each run's differences
are its own).

The report puts every farebox target (``--compare-src`` trees, ``--target-env`` settings) side
by side, as medians over the interleaved rounds with their spread (max − min over the median),
and, for each ``--contrast ON:OFF`` pair, the round-by-round ratio ON / OFF: each round's ON run
against the OFF run of the same round, so a machine that slows down between rounds shifts both.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

import psutil
import redis

from bench.report import get_path

if TYPE_CHECKING:
    from bench.targets import Server

__all__ = ["redis_url_of", "snapshot", "per_request", "summarise_redis", "render_redis_markdown",
           "MARK_BEGIN", "MARK_END"]

MARK_BEGIN = "<!-- bench:redis-cpu:begin (written by python -m bench --redis-cpu; edit outside these marks) -->"
MARK_END = "<!-- bench:redis-cpu:end -->"
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")
_OWN_COMMANDS = ("info",)  # the bench's own questions, not farebox's


def redis_url_of(server: Server, redis_url: str | None) -> str | None:
    """The Redis a farebox target uses: ``redis_url`` when given, else the unix socket of the
    ``redis-server`` in its process tree."""
    if redis_url:
        return redis_url
    for process in server.helper_processes():
        try:  # redis-server rewrites its command line; its listening socket tells
            paths = [c.laddr for c in process.net_connections(kind="unix") if c.laddr]
        except psutil.Error:
            continue
        if paths:
            return "unix://" + paths[0]
    return None


def _masters(url: str) -> list[redis.Redis]:
    """A client per master: the one Redis of ``url``, or each master of a Redis Cluster
    (``redis+cluster://host:port``, as its slot table names them)."""
    if not url.startswith("redis+cluster://"):
        return [redis.Redis.from_url(url, socket_timeout=10)]
    host, _, port = url.removeprefix("redis+cluster://").split(",")[0].rpartition(":")
    seed = redis.Redis(host=host, port=int(port), socket_timeout=10)
    try:
        masters = {(m[0].decode() or host, int(m[1])) for _, _, m, *_ in seed.execute_command("CLUSTER SLOTS")}
    finally:
        seed.close()
    return [redis.Redis(host=h, port=p, socket_timeout=10) for h, p in sorted(masters)]


def snapshot(url: str) -> dict[str, Any]:
    """Redis's CPU seconds (system + user) and each command's calls and µs so far; on a Redis
    Cluster, summed over its masters (their replicas' work is not counted)."""
    cpu_s = 0.0
    calls: dict[str, int] = {}
    usec: dict[str, int] = {}
    for client in _masters(url):
        try:
            cpu = client.info("cpu")
            stats = client.info("commandstats")
        finally:
            client.close()
        cpu_s += float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
        for name, row in stats.items():
            command = name.removeprefix("cmdstat_").lower()
            if command in _OWN_COMMANDS:
                continue
            calls[command] = calls.get(command, 0) + int(row["calls"])
            usec[command] = usec.get(command, 0) + int(row["usec"])
    return {"cpu_s": cpu_s, "calls": calls, "usec": usec}


def per_request(before: dict[str, Any], after: dict[str, Any], requests: int) -> dict[str, Any]:
    """The run's share of Redis, per completed request."""
    done = max(1, requests)
    calls = {c: (n - before["calls"].get(c, 0)) / done for c, n in after["calls"].items()
             if n != before["calls"].get(c, 0)}
    usec = sum(after["usec"].values()) - sum(before["usec"].values())
    cpu_ms = (after["cpu_s"] - before["cpu_s"]) / done * 1000
    return {
        "cpu_ms_per_req": cpu_ms,
        "req_per_core_s": 1000 / cpu_ms if cpu_ms > 0 else None,
        "command_us_per_req": usec / done,
        "script_calls_per_req": sum(v for c, v in calls.items() if c in SCRIPT_COMMANDS),
        "calls_per_req": sum(calls.values()),
        "calls": dict(sorted(calls.items())),
    }


# --------------------------------------------------------------------------- summary

_FIGURES = {  # name: (where in a run, what it is)
    "rps": ("rps", "requests/s"),
    "added_p50_ms": (None, "added p50 latency, ms (paired with direct's run of the same round)"),
    "farebox_cpu_ms": ("cpu_s_per_1k", "farebox CPU per request, ms (every process but Redis)"),
    "redis_cpu_ms": ("redis.cpu_ms_per_req", "Redis CPU per request, ms (INFO cpu)"),
    "redis_req_per_core_s": ("redis.req_per_core_s", "requests/s one Redis core would sustain"),
    "command_us": ("redis.command_us_per_req", "µs inside Redis commands per request (INFO commandstats)"),
    "script_calls": ("redis.script_calls_per_req", "script calls per request"),
    "calls": ("redis.calls_per_req", "Redis commands per request (those the scripts run included)"),
}
_LOWER_IS_BETTER = {"added_p50_ms", "farebox_cpu_ms", "redis_cpu_ms", "command_us", "script_calls", "calls"}


def _values(runs: list[dict[str, Any]], direct: dict[int, dict[str, Any]], key: str) -> dict[int, float]:
    """``key`` of each run, by round."""
    out: dict[int, float] = {}
    for run in runs:
        if key == "added_p50_ms":
            base = direct.get(run["round"])
            if base is not None:
                out[run["round"]] = run["latency_ms"]["p50"] - base["latency_ms"]["p50"]
            continue
        value = get_path(run, _FIGURES[key][0])
        if value is not None:
            out[run["round"]] = value
    return out


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None, "spread": None}
    median = statistics.median(values)
    return {"median": median, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / abs(median) if median else None}


def summarise_redis(results: dict[str, dict[str, list[dict[str, Any]]]], contrasts: list[tuple[str, str]]
                    ) -> dict[str, Any]:
    """Per scenario and farebox target: each figure's median, min, max and spread over the
    rounds; per contrast ON:OFF: the round-by-round ratios ON / OFF and their median."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    ratios: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario, per_target in results.items():
        direct = {r["round"]: r for r in per_target.get("direct", [])}
        by_target = {t: {k: _values(runs, direct, k) for k in _FIGURES}
                     for t, runs in per_target.items() if t != "direct" and runs and "redis" in runs[0]}
        table[scenario] = {t: {k: _stats(list(v.values())) for k, v in figures.items()}
                           for t, figures in by_target.items()}
        ratios[scenario] = {}
        for on, off in contrasts:
            if on not in by_target or off not in by_target:
                continue
            row = {}
            for key in _FIGURES:
                a, b = by_target[on][key], by_target[off][key]
                paired = [a[r] / b[r] for r in a if r in b and b[r]]
                row[key] = {**_stats(paired), "rounds": paired}
            ratios[scenario][f"{on}:{off}"] = row
    return {"figures": {k: v[1] for k, v in _FIGURES.items()}, "table": table, "contrasts": ratios,
            "lower_is_better": sorted(_LOWER_IS_BETTER)}


# --------------------------------------------------------------------------- Markdown

def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def _cell(s: dict[str, Any], digits: int = 2, spread: bool = True) -> str:
    text = _fmt(s["median"], digits)
    if spread and s.get("spread") is not None:
        text += f" ±{s['spread'] * 50:.0f} %"
    return text


def render_redis_markdown(report: dict[str, Any]) -> str:
    meta, summary = report["meta"], report["redis_summary"]
    load = meta.get("load_during_runs") or {}
    lines = [
        f"Run {meta['started_at']} — `{meta['command']}`",
        "",
        f"- Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, {meta['machine']['os']}; "
        f"load average at start {meta['machine']['load_at_start']}"
        + (f", during the runs {_fmt(load.get('min'))}–{_fmt(load.get('max'))} (median {_fmt(load.get('median'))})"
           if load else ""),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- {meta['repeats']} rounds × {meta['duration_s']:g} s per target and scenario, targets interleaved "
        f"(order rotated each round); every farebox target is `farebox serve --workers {meta['workers']}` "
        f"(Redis: {meta['redis']}, one per target unless a URL is given), recording every request and checking a hard project budget on each; "
        f"load generator {meta['loadgen']}",
        "- Targets: " + "; ".join(f"`{name}`: {what}" for name, what in meta.get("target_notes", {}).items()),
        "",
        "Medians over the rounds; ± is half the spread (max − min) over the median:",
        "",
        "| scenario | target | req/s | added p50 ms | farebox CPU ms / req | Redis CPU ms / req "
        "| req/s per Redis core | µs in Redis commands / req | script calls / req | Redis commands / req, in scripts too |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, rows in summary["table"].items():
        for target, f in rows.items():
            lines.append(f"| {scenario} | {target} | {_cell(f['rps'], 0)} | {_cell(f['added_p50_ms'])} "
                         f"| {_cell(f['farebox_cpu_ms'], 3)} | {_cell(f['redis_cpu_ms'], 3)} "
                         f"| {_cell(f['redis_req_per_core_s'], 0, False)} | {_cell(f['command_us'], 0, False)} "
                         f"| {_cell(f['script_calls'], 2, False)} | {_cell(f['calls'], 2, False)} |")
    lines.append("")
    contrasts = [c for rows in summary["contrasts"].values() for c in rows]
    if contrasts:
        lines += ["Round-by-round ratios ON / OFF (median, and the lowest and highest round; below 1 is "
                  "better for all but req/s):", "",
                  "| scenario | ON / OFF | req/s | added p50 | farebox CPU / req | Redis CPU / req | script calls / req |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for scenario, rows in summary["contrasts"].items():
            for pair, f in rows.items():
                cells = " | ".join(f"{_fmt(f[k]['median'])} ({_fmt(f[k]['min'])}–{_fmt(f[k]['max'])})"
                                   for k in ("rps", "added_p50_ms", "farebox_cpu_ms", "redis_cpu_ms", "script_calls"))
                lines.append(f"| {scenario} | {pair.replace(':', ' / ')} | {cells} |")
        lines.append("")
    return "\n".join(lines)
