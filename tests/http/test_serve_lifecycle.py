"""``farebox serve`` as an operator runs it: a separate process, started, then stopped with
SIGTERM. What it logs says what state it is in: not ready while Redis does not answer, and the
start and the end of its shutdown."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from proxy.fake_upstream import create_fake_app
from tests.cli.helpers import FAREBOX, clean_env
from tests.processes import free_port
from tests.harness import LoopThread

START_WITHIN_S = 60  # a generous bound for a loaded machine, not a measure


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    threads = LoopThread()
    try:
        yield f"{threads.serve(create_fake_app())}/v1"
    finally:
        threads.close()


class Serve:
    """A ``farebox serve`` process, its log written to a file."""

    def __init__(self, args: list[str], data_dir: Path) -> None:
        port = free_port()
        self.log_path = data_dir.parent / f"serve-{port}.log"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                FAREBOX + ["serve", "--port", str(port), "--data-dir", str(data_dir), *args],
                env=clean_env(), stdout=subprocess.DEVNULL, stderr=log, text=True)
        self.url = f"http://127.0.0.1:{port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_until(self, started: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_WITHIN_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"farebox serve exited with {self.proc.returncode}: {self.log}")
            if started():
                return
            time.sleep(0.1)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(f"farebox serve did not start: {self.log}")

    def answers(self) -> bool:
        """Whether it answers /healthz (alive, ready or not)."""
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def sigterm(self) -> str:
        """Stop it as a process supervisor does; its log."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(START_WITHIN_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.log


def start_serve(args: list[str], data_dir: Path) -> Serve:
    serve = Serve(args, data_dir)
    serve.wait_until(serve.answers)
    return serve


def lines(log: str, level: str) -> list[str]:
    return [line.split(f" {level} ", 1)[1] for line in log.splitlines() if f" {level} " in line]


def test_sigterm_logs_the_start_and_the_end_of_shutdown_and_exits_0(tmp_path, upstream):
    serve = start_serve(["--upstream", upstream], tmp_path / "fb")
    try:
        assert httpx.get(f"{serve.url}/readyz").status_code == 200
    finally:
        log = serve.sigterm()
    assert serve.proc.returncode == 0, log
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
        serve = start_serve(["--upstream", upstream, "--redis-url", redis_url, "--fail-mode", fail_mode],
                            data_dir)
        try:
            assert httpx.get(f"{serve.url}/readyz").status_code == 503
        finally:
            log = serve.sigterm()
    assert serve.proc.returncode == 0, log
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


def test_sigterm_to_a_supervisor_logs_its_shutdown_and_each_workers(tmp_path, upstream):
    serve = Serve(["--upstream", upstream, "--workers", "2"], tmp_path / "fb")
    serve.wait_until(lambda: serve.log.count(" listening on http://") == 2)
    log = serve.sigterm()
    assert serve.proc.returncode == 0, log
    info = lines(log, "INFO")
    assert info.index("farebox: shutting down 2 workers") < info.index("farebox: stopped: workers and Redis")
    assert info[-1] == "farebox: stopped: workers and Redis"
    for worker in (1, 2):
        mine = [line for line in info if line.startswith(f"farebox: worker {worker} (pid ")]
        assert mine[-2].endswith(") shutting down: no new connections; requests in flight get up to 10 s to finish")
        assert mine[-1].endswith(") stopped")
