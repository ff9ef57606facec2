"""The sink of ``farebox serve`` as a child process: niced, reporting through ``/readyz`` and
the metrics, started again when it dies, stopped with its serving process (or when that one is
gone), and still on the serving event loop with ``sink_process = false``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from proxy.http.app import SINK
from proxy.record.child import SinkProcess
from proxy.record.sink import Sink
from tests.processes import clean_env, free_port, wait_ready
from tests.record.helpers import chat, readyz_sink, rows, wait_caught_up, wait_for_rows


def _wait(condition, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.05)


def test_the_sink_runs_in_a_niced_child_and_reports_through_readyz_and_metrics(pg_url, make_stack):
    stack = make_stack(postgres_url=pg_url, sink_nice=7)
    child = stack.app[SINK]
    assert isinstance(child, SinkProcess)
    process = psutil.Process(child.process.pid)
    assert process.ppid() == os.getpid()
    assert process.nice() == psutil.Process().nice() + 7
    answers = [chat(stack.base_url, "acme", "planner", "gpt-4o-mini") for _ in range(12)]
    wait_for_rows(pg_url, 12)
    assert {r["request_id"] for r in rows(pg_url)} == {a.headers["X-Request-Id"] for a in answers}
    status = readyz_sink(stack, lambda s: s["written"] == 12 and s["lag_events"] == 0)
    assert status["error"] is None and status["postgres"].startswith("postgresql://postgres@127.0.0.1")
    metrics = httpx.get(f"{stack.url}/metrics").text
    assert "farebox_sink_events_total 12.0" in metrics and "farebox_sink_lag_events 0.0" in metrics


def test_a_killed_sink_process_is_started_again_and_loses_nothing(pg_url, make_stack):
    stack = make_stack(postgres_url=pg_url)
    child = stack.app[SINK]
    for _ in range(5):
        chat(stack.base_url, "acme", "planner", "gpt-4o-mini")
    wait_for_rows(pg_url, 5)
    readyz_sink(stack, lambda s: s["written"] == 5)  # reported before it dies
    first = child.process.pid
    os.kill(first, signal.SIGKILL)
    _wait(lambda: child.restarts == 1 and child.process is not None and child.process.pid not in (None, first),
          what="a new sink process")
    for _ in range(7):  # recorded while the first was dead or the second starting
        chat(stack.base_url, "acme", "coder", "gpt-4o-mini")
    wait_for_rows(pg_url, 12)
    wait_caught_up(stack)
    assert len(rows(pg_url)) == 12
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    # The metric counts what both processes wrote, the second's from 0 again.
    readyz_sink(stack, lambda s: s["written"] == 7)
    assert "farebox_sink_events_total 12.0" in httpx.get(f"{stack.url}/metrics").text


def test_with_sink_process_false_the_sink_runs_on_the_serving_loop(pg_url, make_stack):
    stack = make_stack(postgres_url=pg_url, sink_process=False)
    assert isinstance(stack.app[SINK], Sink)
    chat(stack.base_url, "acme", "planner", "gpt-4o-mini")
    wait_for_rows(pg_url, 1)
    readyz_sink(stack, lambda s: s["written"] == 1)


def _serve(upstream_url: str, redis_url: str, prefix: str, pg_url: str, data_dir: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**clean_env(), "REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": prefix, "FAREBOX_DATA_DIR": data_dir,
           "FAREBOX_POSTGRES_URL": pg_url, "FAREBOX_SINK_DEFER_BUSY_S": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port), "--upstream",
                             f"{upstream_url}/v1", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_ready(port, proc)
    return proc, port


def _sink_child(proc: subprocess.Popen) -> psutil.Process:
    children: list[psutil.Process] = []

    def found() -> bool:
        children[:] = psutil.Process(proc.pid).children()
        return len(children) == 1 and "proxy.record.child" in children[0].cmdline()

    _wait(found, what="the sink process of farebox serve")
    return children[0]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_the_sink_process_goes_with_its_serving_process(stop, pg_url, make_stack, redis_url, key_prefix, tmp_path):
    stack = make_stack()  # its fake upstream
    proc, port = _serve(stack.upstream_url, redis_url, key_prefix, pg_url, str(tmp_path / "serve"))
    try:
        child = _sink_child(proc)
        assert chat(f"http://127.0.0.1:{port}/v1", "acme", "planner", "gpt-4o-mini").status_code == 200
        wait_for_rows(pg_url, 1)
        proc.send_signal(stop)
        proc.wait(15)
        # SIGTERM: the serving process stops it; SIGKILL: it sees its parent gone and stops.
        _wait(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, what="the sink's exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(15)
