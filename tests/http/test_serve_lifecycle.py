"""``farebox serve`` as an operator runs it: a separate process, started, then stopped with
SIGTERM. What it logs says what state it is in: not ready while Redis does not answer, and the
start and the end of its shutdown."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.fake_upstream import create_fake_app
from tests.cli.helpers import FAREBOX, clean_env, closed_port
from tests.harness import LoopThread

START_WITHIN_S = 60  # a generous bound for a loaded machine, not a measure


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    threads = LoopThread()
    try:
        yield f"{threads.serve(create_fake_app())}/v1"
    finally:
        threads.close()


def start_serve(args: list[str], data_dir: Path) -> tuple[subprocess.Popen, str]:
    """``farebox serve ARGS`` on a free port, once it answers /healthz (alive, ready or not)."""
    port = closed_port()
    proc = subprocess.Popen(FAREBOX + ["serve", "--port", str(port), "--data-dir", str(data_dir), *args],
                            env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_WITHIN_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"farebox serve exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"farebox serve did not start: {proc.communicate()[1]}")


def sigterm(proc: subprocess.Popen) -> str:
    """Stop ``proc`` as a process supervisor does; its log."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, log = proc.communicate(timeout=START_WITHIN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, log = proc.communicate()
    return log


def lines(log: str, level: str) -> list[str]:
    return [line.split(f" {level} ", 1)[1] for line in log.splitlines() if f" {level} " in line]


def test_sigterm_logs_the_start_and_the_end_of_shutdown_and_exits_0(tmp_path, upstream):
    proc, url = start_serve(["--upstream", upstream], tmp_path / "fb")
    try:
        assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        log = sigterm(proc)
    assert proc.returncode == 0, log
    info = lines(log, "INFO")
    assert info[-2:] == [
        "farebox: farebox shutting down: no new connections; requests in flight get up to 10 s to finish",
        "farebox: farebox stopped"]
    assert any(line.startswith("farebox: ready: redis embedded") for line in info)
    assert lines(log, "WARNING") == []


@pytest.mark.parametrize("fail_mode,meanwhile", [
    ("closed", "metered requests are answered 503, as they need a budget check (fail_mode closed)"),
    ("open", "metered requests are forwarded without a budget check (fail_mode open) and their usage is "
             "spooled to {spool}"),
])
def test_start_with_redis_not_answering_warns_once_and_says_what_requests_get(tmp_path, upstream, fail_mode,
                                                                             meanwhile):
    with socket.socket() as held:  # bound, never listening: connections to it are refused
        held.bind(("127.0.0.1", 0))
        redis_url = f"redis://127.0.0.1:{held.getsockname()[1]}"
        data_dir = tmp_path / "fb"
        proc, url = start_serve(["--upstream", upstream, "--redis-url", redis_url, "--fail-mode", fail_mode],
                                data_dir)
        try:
            assert httpx.get(f"{url}/readyz").status_code == 503
        finally:
            log = sigterm(proc)
    assert proc.returncode == 0, log
    warnings = lines(log, "WARNING")
    assert len(warnings) == 1, log
    # The reason in the brackets is the Redis client's own words.
    assert re.fullmatch(re.escape(f"farebox: started, but not ready: redis {redis_url} does not answer (Redis is "
                                  "unavailable: ") + r"[^()]*Connection refused[^()]*"
                        + re.escape("); /readyz answers 503 until it does; meanwhile "
                                    + meanwhile.format(spool=data_dir / "spool.ndjson")), warnings[0]), warnings[0]
    info = lines(log, "INFO")
    assert not any(line.startswith("farebox: ready:") for line in info)
    assert info[-1] == "farebox: farebox stopped"
