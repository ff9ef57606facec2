"""What tests that start ``farebox serve`` as a process of its own share: a free port, an
environment without farebox's settings, and waiting until it answers ``/readyz``."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time

__all__ = ["free_port", "clean_env", "wait_ready"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """This process's environment without any FAREBOX_* setting or REDIS_URL."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FAREBOX_") and k != "REDIS_URL"}


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until farebox on ``port`` answers ``/readyz`` with 200; AssertionError if ``proc`` exits
    first (with its standard error when that was captured) or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "farebox exited"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"farebox on port {port} did not become ready within {timeout:.0f} s")
