"""A Redis Cluster on loopback, for the benchmark and the tests: three masters and three
replicas by default, each a ``redis-server --cluster-enabled yes`` in a directory of its own,
joined by ``redis-cli --cluster create``."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

__all__ = ["LocalCluster", "cluster_tools_missing"]

NODE_TIMEOUT_MS = 2000


def cluster_tools_missing() -> str | None:
    """Why no cluster can be started here, or None."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """``n`` ports whose cluster bus ports (port + 10000) are free too."""
    found: list[int] = []
    while len(found) < n:
        port = random.randint(20000, 45000)
        if port not in found and _free(port) and _free(port + 10000):
            found.append(port)
    return found


@dataclass
class LocalCluster:
    root: Path
    ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen] = field(default_factory=dict)
    commands: dict[int, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Every node as a place to start from (any one that answers will do)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def live_ports(self) -> list[int]:
        return [port for port in self.ports if self.processes[port].poll() is None]

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)

    def start(self, masters: int = 3, replicas: int = 1, *, aof: bool = False) -> "LocalCluster":
        """Start the nodes and join them; ``aof``: each writes an append-only file (fsync every
        second), as farebox's embedded Redis does."""
        self.ports = _free_ports(masters * (1 + replicas))
        for port in self.ports:
            data = self.root / str(port)
            data.mkdir(parents=True)
            self.commands[port] = [
                "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-config-file", str(data / "nodes.conf"), "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--dir", str(data), "--save", "", "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec",
                "--lazyfree-lazy-expire", "yes"]
            self.run_node(port)
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", str(replicas), "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        self.wait_stable()
        return self

    def run_node(self, port: int) -> None:
        """Start (or start again) the node on ``port`` and wait until it answers."""
        self.processes[port] = subprocess.Popen(self.commands[port], stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
        self._wait(lambda: self.client(port).ping(), f"node {port} did not start")

    def stop(self) -> None:
        for proc in self.processes.values():
            proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    @staticmethod
    def _wait(check, message: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise AssertionError(message)

    def _settled(self) -> bool:
        """Every running node says the cluster is ok, and all agree on who owns each slot."""
        tables = set()
        for port in self.live_ports():
            client = self.client(port)
            if client.cluster("INFO").get("cluster_state") != "ok":
                return False
            tables.add(tuple(sorted((start, end, master[1]) for start, end, master, *_ in
                                    client.execute_command("CLUSTER SLOTS"))))
        return len(tables) == 1

    def wait_stable(self) -> None:
        self._wait(self._settled, "the cluster did not settle", timeout=60)

    def masters(self) -> dict[int, list[tuple[int, int]]]:
        """Each master's port and the slot ranges it owns."""
        out: dict[int, list[tuple[int, int]]] = {}
        for start, end, master, *_ in self.client(self.live_ports()[0]).execute_command("CLUSTER SLOTS"):
            out.setdefault(int(master[1]), []).append((int(start), int(end)))
        return out
