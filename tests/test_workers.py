"""``farebox serve --workers N``: several processes on one port, one embedded Redis, clean stop."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from proxy.fake_upstream import create_fake_app
from tests.harness import LoopThread
from tests.processes import clean_env, free_port, wait_ready

FAREBOX = [sys.executable, "-m", "proxy"]
BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 32})





def _worker_pids(parent: psutil.Process, port: int) -> set[int]:
    """Children of the supervisor that listen on the shared port."""
    pids = set()
    for child in parent.children():
        try:
            if any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in child.net_connections()):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


@pytest.fixture
def upstream_url():
    threads = LoopThread()
    try:
        yield threads.serve(create_fake_app())
    finally:
        threads.close()


@pytest.fixture
def farebox_workers(tmp_path, upstream_url):
    port = free_port()
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        FAREBOX + ["serve", "--workers", "2", "--port", str(port), "--upstream", f"{upstream_url}/v1",
                   "--data-dir", str(data_dir), "--log-level", "warning"],
        env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port, proc)
        yield proc, port, data_dir
    finally:
        if proc.poll() is None:
            children = psutil.Process(proc.pid).children(recursive=True)  # before they lose their parent
            proc.kill()
            for child in children:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
            proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def _wait_for_workers(parent: psutil.Process, port: int, count: int, timeout: float = 30.0) -> set[int]:
    """The workers listening on ``port`` once ``count`` of them do (the first may answer /readyz
    while the others are still starting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _worker_pids(parent, port)
        if len(workers) >= count:
            return workers
        time.sleep(0.05)
    return _worker_pids(parent, port)


def test_workers_share_the_port_record_every_request_and_stop_on_sigterm(farebox_workers):
    proc, port, data_dir = farebox_workers
    parent = psutil.Process(proc.pid)
    workers = _wait_for_workers(parent, port, 2)
    assert len(workers) == 2
    redis_servers = [c for c in parent.children() if "redis-server" in c.name()]
    assert len(redis_servers) == 1  # started once, by the supervisor

    # Keep-alive connections, each accepted by one worker; one request on each.
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(24)]
    for conn in conns:
        conn.request("POST", "/v1/chat/completions", BODY,
                     {"Content-Type": "application/json", "X-Project-Id": "workers", "Authorization": "Bearer sk-w"})
        response = conn.getresponse()
        assert response.status == 200
        response.read()
    served_by = {}
    for pid in workers:
        for c in psutil.Process(pid).net_connections():
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port and c.raddr:
                served_by[c.raddr.port] = pid
    client_ports = {conn.sock.getsockname()[1] for conn in conns}
    assert client_ports <= set(served_by)
    assert set(served_by[p] for p in client_ports) == workers  # both workers served requests
    for conn in conns:
        conn.close()

    report = subprocess.run(FAREBOX + ["usage", "project", "workers", "--json", "--data-dir", str(data_dir)],
                            env=clean_env(), capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["requests"] == 24

    everything = [parent, *parent.children(recursive=True)]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    gone, alive = psutil.wait_procs(everything, timeout=10)
    assert alive == []


def test_a_worker_that_dies_stops_the_others(farebox_workers):
    proc, port, _ = farebox_workers
    parent = psutil.Process(proc.pid)
    workers = sorted(_wait_for_workers(parent, port, 2))
    assert len(workers) == 2
    everything = [parent, *parent.children(recursive=True)]
    os.kill(workers[0], signal.SIGKILL)
    assert proc.wait(30) == 1
    gone, alive = psutil.wait_procs(everything, timeout=10)
    assert alive == []


def test_workers_stop_when_the_supervisor_is_killed(farebox_workers):
    proc, port, _ = farebox_workers
    parent = psutil.Process(proc.pid)
    workers = [psutil.Process(pid) for pid in _wait_for_workers(parent, port, 2)]
    redis_servers = [c for c in parent.children() if "redis-server" in c.name()]
    assert len(workers) == 2
    proc.kill()
    proc.wait(10)
    try:
        gone, alive = psutil.wait_procs(workers, timeout=20)
        assert alive == []
    finally:
        for server in redis_servers:  # the embedded Redis has no such watch: stop it here
            server.terminate()
        psutil.wait_procs(redis_servers, timeout=10)
