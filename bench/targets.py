"""The servers a benchmark run measures: start, wait until ready, sample, stop.

Every server runs on 127.0.0.1 in its own process group (so nothing it starts can outlive the
run) with its output in the run's log directory. ``Server.proxy_processes`` are the processes
whose CPU and memory count as "the proxy" (farebox's workers, LiteLLM and its children);
``Server.helper_processes`` are the ones it depends on but that are not the proxy itself
(farebox's embedded Redis), reported apart.
"""

from __future__ import annotations

import os
import signal
import socket
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

__all__ = ["Server", "Sampler", "free_port", "start_fake_upstream", "start_farebox", "start_relay", "start_litellm",
           "ensure_litellm", "BENCH_PROJECT", "BENCH_AGENT", "BENCH_API_KEY", "LITELLM_VERSION"]

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
BENCH_PROJECT = "bench"
BENCH_AGENT = "loadgen"
# LiteLLM refuses to start without a master key; every target gets the same Authorization.
BENCH_API_KEY = "sk-bench-0123456789abcdef"
BENCH_REDIS_PREFIX = "fbbench"
BENCH_KEYS_PROJECT = "bench-keys"   # the keys scenarios' project: a farebox key, rate limits on it and the key
BENCH_RATE = 1_000_000_000          # requests and tokens per minute of those limits: counted, never reached
# farebox's own upstream keys, sent upstream for requests that present a farebox key
BENCH_UPSTREAM_KEYS = {"FAREBOX_UPSTREAM_API_KEY": "sk-bench-farebox-own", "FAREBOX_ANTHROPIC_API_KEY": "sk-ant-bench"}
LITELLM_VERSION = "1.106.2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FAREBOX_", "LITELLM_")) and k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(extra or {})
    return env


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen
    log_path: Path
    ready_s: float = 0.0
    kind: str = "farebox"          # "upstream", "farebox", "relay" or "litellm"
    workers: int = 1
    notes: dict[str, str] = field(default_factory=dict)
    farebox_key: str = ""       # the keys scenarios' farebox key secret (none: no such scenarios here)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def proxy_processes(self) -> list[psutil.Process]:
        """The server and everything it started except Redis (with --workers: the supervisor too)."""
        return [p for p in self._tree() if not _is_redis(p)]

    def helper_processes(self) -> list[psutil.Process]:
        return [p for p in self._tree() if _is_redis(p)]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, a grace period, then SIGKILL to the whole process group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything the server left behind
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)


def _is_redis(p: psutil.Process) -> bool:
    try:
        return "redis-server" in p.name()
    except psutil.NoSuchProcess:
        return False


def _spawn(args: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 (kept open by the child)
    try:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=cwd, start_new_session=True)
    finally:
        log.close()


def _wait_http(url: str, proc: subprocess.Popen, started: float, log_path: Path) -> float:
    """Seconds from ``started`` until ``url`` answers 200."""
    while time.perf_counter() - started < READY_TIMEOUT_S:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{proc.args[0]} exited with status {proc.returncode} before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} was not ready within {READY_TIMEOUT_S:.0f}s")


def _start(name: str, kind: str, port: int, args: list[str], log_path: Path, env: dict[str, str], cwd: Path,
           ready_path: str, **extra: object) -> tuple[Server, float]:
    """Spawn a server and wait until ``ready_path`` answers 200 (stopping it if it never
    does); the server, with ``ready_s`` set, and the ``perf_counter`` time it was spawned at."""
    started = time.perf_counter()
    proc = _spawn(args, log_path, env, cwd=cwd)
    server = Server(name, f"http://127.0.0.1:{port}", proc, log_path, kind=kind, **extra)
    try:
        server.ready_s = _wait_http(f"{server.url}{ready_path}", proc, started, log_path)
    except Exception:
        server.stop()
        raise
    return server, started


def start_fake_upstream(log_dir: Path, *, chunks: int, reply_tokens: int) -> Server:
    port = free_port()
    log_path = log_dir / "fake-upstream.log"
    args = [sys.executable, "-m", "proxy", "fake-upstream", "--port", str(port), "--chunks", str(chunks),
            "--reply-tokens", str(reply_tokens)]
    server, _ = _start("upstream", "upstream", port, args, log_path, _clean_env(), REPO, "/v1/models")
    return server


def _farebox_store_flags(data_dir: Path, redis_url: str | None) -> list[str]:
    flags = ["--data-dir", str(data_dir), "--redis-prefix", BENCH_REDIS_PREFIX]
    if redis_url:
        flags += ["--redis-url", redis_url]
    return flags


def _listening_workers(server: Server, port: int) -> int:
    count = 0
    for p in server.proxy_processes():
        try:
            count += any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                         for c in p.net_connections())
        except psutil.Error:
            pass
    return count


def start_farebox(name: str, log_dir: Path, upstream: Server, *, workers: int = 1,
                  redis_url: str | None = None, src: Path | None = None,
                  env_extra: dict[str, str] | None = None) -> Server:
    """farebox with recording on and a hard project budget that no run can exhaust.

    ``src``: run farebox from another source tree (a copy of the repository at some other
    state), to measure a change against what came before it in the same run. ``env_extra``:
    settings for this target only (``FAREBOX_<NAME>=value``)."""
    port = free_port()
    data_dir = log_dir / f"{name}-data"
    log_path = log_dir / f"{name}.log"
    store = _farebox_store_flags(data_dir, redis_url)
    args = [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--upstream", f"{upstream.url}/v1",
            "--workers", str(workers), "--log-level", "warning", *store]
    # Anthropic's Messages API goes to the same fake upstream (a tree without it ignores the variable).
    env = _clean_env({**({"PYTHONPATH": str(src)} if src else {}), "FAREBOX_ANTHROPIC_UPSTREAM": upstream.url,
                      **BENCH_UPSTREAM_KEYS, **(env_extra or {})})
    cwd = src or REPO
    server, started = _start(name, "farebox", port, args, log_path, env, cwd, "/readyz", workers=workers)
    try:
        if workers > 1:  # the first worker may answer /readyz while the others are starting
            while _listening_workers(server, port) < workers and time.perf_counter() - started < READY_TIMEOUT_S:
                time.sleep(0.02)
            server.notes["all_workers_ready_s"] = f"{time.perf_counter() - started:.2f}"
        for project in (BENCH_PROJECT, BENCH_KEYS_PROJECT):
            budget = subprocess.run(
                [sys.executable, "-m", "proxy", "budget", "set", "project", project, "1000000", "--period", "month",
                 *store], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
            if budget.returncode != 0:
                raise RuntimeError(f"farebox budget set failed: {budget.stderr.strip()}")
        _provision_key(server, store, env, cwd)
    except Exception:
        server.stop()
        raise
    server.notes["redis"] = redis_url or f"embedded ({data_dir})"
    return server


def _provision_key(server: Server, store: list[str], env: dict[str, str], cwd: Path) -> None:
    """The keys scenarios' farebox key (``server.farebox_key``): project ``BENCH_KEYS_PROJECT``,
    with rate limits on the key and on its project that no run reaches, so every request is
    counted on both. A tree without rate limits gets the key alone (``notes["rate_limits"]``)."""
    def farebox(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "proxy", *args, *store], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=60, check=False)

    made = farebox("key", "create", BENCH_KEYS_PROJECT, "--rpm", str(BENCH_RATE), "--tpm", str(BENCH_RATE), "--json")
    if made.returncode != 0:
        return
    server.farebox_key = json.loads(made.stdout)["key"]
    limited = farebox("limit", "set", "project", BENCH_KEYS_PROJECT, "--rpm", str(BENCH_RATE), "--tpm",
                      str(BENCH_RATE))
    server.notes["rate_limits"] = "key and project" if limited.returncode == 0 else "key (stored, not enforced)"


def start_relay(log_dir: Path, upstream: Server) -> Server:
    """The bare aiohttp pass-through of ``bench/relay.py``: no metering, the floor under farebox."""
    port = free_port()
    log_path = log_dir / "aiohttp-relay.log"
    server, _ = _start("aiohttp-relay", "relay", port, [sys.executable, "-m", "bench.relay", str(port),
                                                       f"{upstream.url}/v1"], log_path, _clean_env(), REPO, "/readyz")
    return server


# --------------------------------------------------------------------------- LiteLLM

def default_litellm_venv(version: str = LITELLM_VERSION) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "farebox-bench" / f"litellm-{version}"


def ensure_litellm(venv: Path, version: str = LITELLM_VERSION, *, log: Callable[[str], None] = print) -> Path:
    """The ``litellm`` executable of ``venv``, creating the venv (``litellm[proxy]==version``) if needed."""
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    log(f"creating {venv} with litellm[proxy]=={version} (once; takes a minute or two)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={version}"], check=True)
    if not exe.exists():
        raise RuntimeError(f"pip installed litellm but {exe} is missing")
    return exe


def litellm_version(venv: Path) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def start_litellm(log_dir: Path, upstream: Server, venv: Path) -> Server:
    """LiteLLM Proxy without a database, one model routed to the fake upstream."""
    exe = venv / "bin" / "litellm"
    port = free_port()
    config = log_dir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: {upstream.url}/v1\n"
        "      api_key: sk-fake-upstream\n")
    log_path = log_dir / "litellm.log"
    env = _clean_env({"LITELLM_MASTER_KEY": BENCH_API_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                      "LITELLM_TELEMETRY": "False"})
    server, _ = _start("litellm", "litellm", port, [str(exe), "--config", str(config), "--host", "127.0.0.1",
                                                    "--port", str(port)], log_path, env, log_dir, "/health/readiness")
    return server


# --------------------------------------------------------------------------- sampling

class Sampler:
    """CPU seconds (user + system) over a run, and the peak of summed RSS, sampled every 50 ms."""

    INTERVAL_S = 0.05

    def __init__(self, processes: list[psutil.Process]) -> None:
        self.processes = processes
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._cpu0 = 0.0
        self.cpu_s = 0.0

    def cpu(self) -> float:
        total = 0.0
        for p in self.processes:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self.processes:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            self.peak_rss = max(self.peak_rss, self.rss())

    def __enter__(self) -> "Sampler":
        self._cpu0 = self.cpu()
        self.peak_rss = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self.rss())
        self.cpu_s = self.cpu() - self._cpu0
