"""Load generators: wrk for non-streamed requests, a small asyncio client for streams.

wrk (C, one thread, keep-alive connections) costs far less CPU per request than any Python
client, which matters on a 2-core machine where the load generator shares the cores with the
servers it measures; a Lua script gives it the POST body and headers and prints its results
as JSON. wrk cannot see inside a streamed body, so streams are driven by ``python -m
bench.load``: one keep-alive connection per concurrent client, a raw HTTP/1.1 parser with
chunked decoding, and a timestamp for the response head, the first body byte, every SSE event
(a blank line ends one) and the last byte. The same client is the fallback for non-streamed
load when wrk is not installed (``--loadgen python``).

Both run as their own processes, so the benchmark's own sampling threads never share a GIL
with the client doing the timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Workload", "RunResult", "run_load", "wrk_available", "percentiles"]

REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Workload:
    """One request, sent again and again: the same bytes for every target."""

    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    stream: bool


@dataclass
class RunResult:
    """One timed run of one workload against one target. Times in milliseconds."""

    engine: str
    concurrency: int
    duration_s: float
    requests: int            # completed with a 2xx status
    errors: int              # connection errors, timeouts and non-2xx answers
    rps: float
    latency_ms: dict[str, float]            # whole request: p50, p90, p99, max
    ttfb_ms: dict[str, float] | None = None  # first body byte (streams)
    ttlb_ms: dict[str, float] | None = None  # last body byte (streams)
    events_per_response: float | None = None
    gap_ms: dict[str, float] | None = None   # between consecutive events of a stream
    bunched_events: float | None = None      # share of events that arrived together with the one before
    statuses: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(values: list[float]) -> dict[str, float]:
    """min, p50, p90, p99 and max (nearest rank) of ``values``; zeros when there are none."""
    if not values:
        return {"min": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"min": ordered[0], "p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": ordered[-1]}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


# --------------------------------------------------------------------------- wrk

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-RESULT {{\\"requests\\":%d,\\"duration_us\\":%d,\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d,"
    .. "\\"status\\":%d,\\"timeout\\":%d,\\"p50\\":%d,\\"p90\\":%d,\\"p99\\":%d,\\"max\\":%d}}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _lua_string(data: bytes) -> str:
    """``data`` as a Lua string literal (decimal escapes, so any byte is safe)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\{b}" for b in data) + '"'


def _run_wrk(url: str, workload: Workload, concurrency: int, duration_s: float) -> RunResult:
    headers = "\n".join(f"wrk.headers[{_lua_string(k.encode())}] = {_lua_string(v.encode())}"
                        for k, v in workload.headers)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT.format(body=_lua_string(workload.body), headers=headers))
    try:
        seconds = max(1, round(duration_s))
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", f"--timeout={int(REQUEST_TIMEOUT_S)}s",
             "-s", script.name, url.rstrip("/") + workload.path],
            capture_output=True, text=True, timeout=seconds + REQUEST_TIMEOUT_S + 30, check=False)
    finally:
        Path(script.name).unlink(missing_ok=True)
    found = re.search(r"BENCH-RESULT (\{.*\})", out.stdout)
    if not found:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    raw = json.loads(found.group(1))
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    elapsed = raw["duration_us"] / 1e6
    ok = max(0, raw["requests"] - raw["status"])
    ms = {k: raw[k] / 1000 for k in ("p50", "p90", "p99", "max")}
    return RunResult(engine="wrk", concurrency=concurrency, duration_s=elapsed, requests=ok, errors=errors,
                     rps=ok / elapsed if elapsed else 0.0, latency_ms=ms)


# --------------------------------------------------------------------------- asyncio client

class _Exchange(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time, timed as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self.buf = bytearray()
        self.state = "head"
        self.status = 0
        self.keep_alive = True
        self.left = 0
        self.t_first_body: float | None = None
        self.event_times: list[float] = []
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.state == "close":  # body delimited by the end of the connection
                self.waiter.set_result(time.perf_counter())
            else:
                self.waiter.set_exception(ConnectionError("connection closed mid-response"))

    def send(self, data: bytes) -> asyncio.Future:
        self._reset()
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return self.waiter

    def _body(self, data: bytes, now: float) -> None:
        if not data:
            return
        if self.t_first_body is None:
            self.t_first_body = now
        joined = self.tail + data
        self.event_times.extend([now] * joined.count(b"\n\n"))
        self.tail = data[-1:]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf
        buf += data
        while True:
            state = self.state
            if state == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(buf[:end]).split(b"\r\n")
                del buf[:end + 4]
                self.status = int(lines[0].split(b" ", 2)[1])
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip().lower()
                self.keep_alive = headers.get(b"connection") != b"close"
                if headers.get(b"transfer-encoding", b"").endswith(b"chunked"):
                    self.state = "size"
                elif b"content-length" in headers:
                    self.left = int(headers[b"content-length"])
                    self.state = "length" if self.left else "done"
                else:
                    self.state = "close"
            elif state == "size":
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";")[0], 16)
                del buf[:end + 2]
                if size:
                    self.left, self.state = size, "data"
                else:
                    self.state = "trailer"
            elif state == "data":
                if not buf:
                    return
                take = bytes(buf[:self.left])
                del buf[:len(take)]
                self.left -= len(take)
                self._body(take, now)
                if self.left == 0:
                    self.state = "crlf"
            elif state == "crlf":
                if len(buf) < 2:
                    return
                del buf[:2]
                self.state = "size"
            elif state == "trailer":
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[:end + 2]
                if end == 0:
                    self.state = "done"
            elif state == "length":
                if not buf:
                    return
                take = bytes(buf[:self.left])
                del buf[:len(take)]
                self.left -= len(take)
                self._body(take, now)
                if self.left == 0:
                    self.state = "done"
            elif state == "close":
                self._body(bytes(buf), now)
                buf.clear()
                return
            if self.state == "done":
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(now)
                return


def _request_bytes(host: str, workload: Workload) -> bytes:
    head = [f"POST {workload.path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(workload.body)}"]
    head += [f"{k}: {v}" for k, v in workload.headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + workload.body


@dataclass
class _Samples:
    latency: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    ttlb: list[float] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0


async def _client(host: str, port: int, request: bytes, deadline: float, samples: _Samples,
                  max_requests: int | None) -> None:
    loop = asyncio.get_running_loop()
    proto: _Exchange | None = None
    done = 0
    while time.perf_counter() < deadline and (max_requests is None or done < max_requests):
        if proto is None or proto.closed:
            try:
                _, proto = await loop.create_connection(_Exchange, host, port)
            except OSError:
                samples.errors += 1
                await asyncio.sleep(0.05)
                continue
        started = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                finished = await proto.send(request)
        except (ConnectionError, TimeoutError):
            samples.errors += 1
            if proto.transport is not None:
                proto.transport.close()
            proto = None
            continue
        done += 1
        key = str(proto.status)
        samples.statuses[key] = samples.statuses.get(key, 0) + 1
        if not 200 <= proto.status < 300:
            samples.errors += 1
        else:
            samples.latency.append((finished - started) * 1000)
            if proto.t_first_body is not None:
                samples.ttfb.append((proto.t_first_body - started) * 1000)
            samples.ttlb.append((finished - started) * 1000)
            times = proto.event_times
            samples.events.append(len(times))
            samples.gaps.extend((b - a) * 1000 for a, b in zip(times, times[1:]))
        if not proto.keep_alive and proto.transport is not None:
            proto.transport.close()
            proto = None
    if proto is not None and proto.transport is not None:
        proto.transport.close()


async def _drive(url: str, workload: Workload, concurrency: int, duration_s: float,
                 max_requests: int | None, chunk_delay_ms: float | None = None) -> RunResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = _request_bytes(f"{host}:{port}", workload)
    samples = _Samples()
    started = time.perf_counter()
    deadline = started + duration_s
    per_client = None if max_requests is None else max(1, max_requests // concurrency)
    await asyncio.gather(*(_client(host, port, request, deadline, samples, per_client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ok = len(samples.latency)
    result = RunResult(engine="python", concurrency=concurrency, duration_s=elapsed, requests=ok,
                       errors=samples.errors, rps=ok / elapsed if elapsed else 0.0,
                       latency_ms=percentiles(samples.latency), statuses=samples.statuses)
    if workload.stream:
        result.ttfb_ms = percentiles(samples.ttfb)
        result.ttlb_ms = percentiles(samples.ttlb)
        result.events_per_response = sorted(samples.events)[len(samples.events) // 2] if samples.events else 0
        result.gap_ms = percentiles(samples.gaps)
        if chunk_delay_ms is not None:
            result.bunched_events = _bunched(samples.gaps, chunk_delay_ms)
    return result


BUNCHED_GAP_MS = 1.0


def _bunched(gaps: list[float], chunk_delay_ms: float) -> float:
    """Share of stream events (after the first) that arrived within ``BUNCHED_GAP_MS`` of the
    one before although the upstream sent them ``chunk_delay_ms`` apart: events held back on
    the way and delivered together."""
    if not gaps:
        return 0.0
    limit = min(BUNCHED_GAP_MS, chunk_delay_ms / 2)
    return sum(1 for g in gaps if g < limit) / len(gaps)


def run_load(url: str, workload: Workload, concurrency: int, duration_s: float, *, engine: str = "auto",
             max_requests: int | None = None, chunk_delay_ms: float | None = None) -> RunResult:
    """Drive ``workload`` at ``url`` with ``concurrency`` clients for ``duration_s`` seconds."""
    use_wrk = not workload.stream and max_requests is None and (
        engine == "wrk" or (engine == "auto" and wrk_available()))
    if use_wrk:
        return _run_wrk(url, workload, concurrency, duration_s)
    with tempfile.NamedTemporaryFile("wb", suffix=".body", delete=False) as body:
        body.write(workload.body)
    args = [sys.executable, "-m", "bench.load", "--url", url, "--path", workload.path, "--body-file", body.name,
            "--concurrency", str(concurrency), "--duration", str(duration_s)]
    for k, v in workload.headers:
        args += ["--header", f"{k}: {v}"]
    if workload.stream:
        args.append("--stream")
    if max_requests is not None:
        args += ["--max-requests", str(max_requests)]
    if chunk_delay_ms is not None:
        args += ["--chunk-delay-ms", str(chunk_delay_ms)]
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=False,
                             timeout=duration_s + REQUEST_TIMEOUT_S + 60, cwd=Path(__file__).resolve().parent.parent)
    finally:
        Path(body.name).unlink(missing_ok=True)
    if out.returncode != 0:
        raise RuntimeError(f"load client failed: {out.stderr.strip()[-2000:]}")
    return RunResult(**json.loads(out.stdout))


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description="asyncio HTTP load client (streams)")
    p.add_argument("--url", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--body-file", required=True)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--max-requests", type=int)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--chunk-delay-ms", type=float)
    args = p.parse_args(argv)
    headers = tuple((h.split(":", 1)[0].strip(), h.split(":", 1)[1].strip()) for h in args.header)
    workload = Workload(args.path, Path(args.body_file).read_bytes(), headers, args.stream)
    try:
        import uvloop  # noqa: PLC0415
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(_drive(args.url, workload, args.concurrency, args.duration, args.max_requests,
                           args.chunk_delay_ms))
    sys.stdout.write(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
