"""PostgreSQL for the tests: the server at 127.0.0.1:5432 (trust auth, user postgres), or one
of their own made with initdb / pg_ctl in a temporary directory (a test that stops and starts
PostgreSQL uses its own, so nothing else is disturbed)."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import asyncpg

from tests.processes import free_port

SHARED_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def bin_dir() -> Path | None:
    """The newest PostgreSQL server's programs on this machine, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def reachable(url: str) -> bool:
    async def ping() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            return False
        await conn.close()
        return True
    return asyncio.run(ping())


class OwnPostgres:
    """A PostgreSQL server of the test's own: ``start``, ``stop`` (fast shutdown), ``start``
    again on the same data, ``destroy``. Run as the ``postgres`` user when the tests run as root
    (initdb refuses root)."""

    def __init__(self, port: int | None = None) -> None:
        bins = bin_dir()
        if bins is None:
            raise RuntimeError("no PostgreSQL server programs (initdb, pg_ctl) on this machine")
        self.bins = bins
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="farebox-pg-"))
        self.data = self.dir / "data"
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            uid, gid = pwd.getpwnam("postgres")[2:4]
            os.chown(self.dir, uid, gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bins / program), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> "OwnPostgres":
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


async def create_database(admin_url: str) -> tuple[str, str]:
    """A new, empty database on the server of ``admin_url``: (its name, its URL)."""
    name = f"fbt_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return name, admin_url.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()
