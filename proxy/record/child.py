"""The sink of a serving process, run as a child process at a lower CPU priority.

``farebox serve`` (each worker, with ``--workers``) starts one (``sink_process = true``, the
default): the usage of record is written by a process of its own, niced by ``sink_nice``, so
that where the serving processes, the sink and PostgreSQL share cores, the requests get the CPU
first. Its Python work (reading entries, building rows) never runs on the serving event loop. When
the cores are saturated the sink falls behind and catches up once they are not: the events wait
in Redis, acknowledged only once PostgreSQL has them, so nothing is lost.

Parent and child talk through a pipe: the child sends its status (``Sink.status()``, plus its
count of failed writes) twice a second; the parent shows the latest in ``/readyz`` and its
metrics, starts the child again when it dies (after 1 s, doubling up to 30 s while it keeps
dying), and stops it (SIGTERM, then SIGKILL after 5 s) when the serving process stops. A child
whose parent is gone stops by itself.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

from proxy.ledger.connection import RedisHandle, describe_url
from proxy.ledger.ledger import Ledger
from proxy.record.serving import postgres_url, sink_options
from proxy.record.sink import Sink, SinkMetrics
from proxy.settings import Settings

__all__ = ["SinkProcess"]

log = logging.getLogger("farebox.sink")

REPORT_EVERY_S = 0.5          # how often the child sends its status (and looks for its parent)
_RESTART_MIN_S, _RESTART_MAX_S = 1.0, 30.0
_STOP_WAIT_S = 5.0


class SinkProcess:
    """The parent's side: the child's process, its latest status and the metrics it moves."""

    def __init__(self, settings: Settings, metrics: SinkMetrics) -> None:
        url = postgres_url(settings)
        assert url is not None
        self.settings = settings
        self.metrics = metrics
        self.postgres = describe_url(url)
        self.process: Any = None
        self.restarts = 0
        self._conn: Connection | None = None
        self._latest: dict[str, Any] | None = None
        self._counted = {"written": 0, "failures": 0}  # what the current child's counts already added
        self._problem: str | None = "the sink process is starting"
        self._watching: asyncio.Task | None = None

    async def start(self) -> None:
        await self._spawn()
        self._watching = asyncio.get_running_loop().create_task(self._watch())

    async def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=child_main, args=(self.settings, send, os.getpid()),
                                  name="farebox-sink", daemon=False)
        await asyncio.to_thread(process.start)
        send.close()
        if self.settings.sink_nice:  # from its first moment (it imports its modules first)
            mine = os.getpriority(os.PRIO_PROCESS, 0)
            try:
                os.setpriority(os.PRIO_PROCESS, process.pid, min(19, mine + self.settings.sink_nice))
            except OSError as exc:  # gone already: the watch starts it again
                log.warning("could not lower the sink process's priority: %s", exc)
        self.process, self._conn = process, receive
        self._counted = {"written": 0, "failures": 0}
        log.info("sink process started (pid %s, nice +%d)", process.pid, self.settings.sink_nice)

    async def _watch(self) -> None:
        delay = _RESTART_MIN_S
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            self._receive()
            process = self.process
            if process is None or process.exitcode is None:
                if self._latest is not None:
                    delay = _RESTART_MIN_S
                continue
            self._problem = f"the sink process exited (code {process.exitcode}); starting it again"
            log.warning("sink process %s exited with code %s; starting it again in %.0f s", process.pid,
                        process.exitcode, delay)
            self._close_conn()
            self._latest = None
            self.process = None
            await asyncio.sleep(delay)
            delay = min(_RESTART_MAX_S, delay * 2)
            self.restarts += 1
            try:
                await self._spawn()
            except Exception as exc:  # noqa: BLE001 - logged, tried again
                self._problem = f"the sink process could not be started: {exc}"
                log.error("%s; trying again in %.0f s", self._problem, delay)
                self.process = _Ended()

    def _receive(self) -> None:
        """Take every status the child sent since the last look; the counts move the metrics."""
        conn = self._conn
        try:
            while conn is not None and conn.poll():
                report = conn.recv()
                status, failures = report["status"], report["failures"]
                self.metrics.written.inc(status["written"] - self._counted["written"])
                self.metrics.failures.inc(failures - self._counted["failures"])
                self._counted = {"written": status["written"], "failures": failures}
                self.metrics.lag_events.set(status["lag_events"])
                self.metrics.lag_seconds.set(status["lag_seconds"])
                self._latest = status
                self._problem = None
        except (EOFError, OSError):
            pass  # the child is gone: the watch notices its exit code

    def status(self) -> dict[str, Any]:
        """What ``/readyz`` shows: the child's latest status, or why there is none."""
        if self._latest is not None and self._problem is None:
            return dict(self._latest)
        return {"postgres": self.postgres, "lag_events": None, "lag_seconds": None,
                "written": self._counted["written"], "error": self._problem}

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
            self._watching = None
        process, self.process = self.process, None
        if isinstance(process, multiprocessing.process.BaseProcess) and process.exitcode is None:
            process.terminate()
            await asyncio.to_thread(process.join, _STOP_WAIT_S)
            if process.exitcode is None:
                process.kill()
                await asyncio.to_thread(process.join, _STOP_WAIT_S)
        self._close_conn()

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Ended:
    """Stands for a child that could not be started (the watch starts one again)."""

    pid = None
    exitcode = -1


# -- the child's side --------------------------------------------------------------------------

def child_main(settings: Settings, conn: Connection, parent: int) -> None:
    """The child process (niced by its parent): drain until SIGTERM or until its parent is gone."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group: the parent stops us
    try:
        asyncio.run(_drain(settings, conn, parent))
    finally:
        conn.close()


async def _drain(settings: Settings, conn: Connection, parent: int) -> None:
    url = postgres_url(settings)
    assert url is not None
    handle = await RedisHandle.open(settings.redis_target, settings.data_dir)
    sink = Sink(Ledger(handle.client, prefix=settings.redis_prefix), url, sink_options(settings))
    draining = asyncio.ensure_future(sink.run_forever())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, draining.cancel)
    try:
        while not draining.done():
            if os.getppid() != parent:
                log.warning("sink process %s: its serving process is gone; stopping", os.getpid())
                break
            try:
                conn.send({"status": sink.status(), "failures": sink.failed, "at": time.time()})
            except (BrokenPipeError, OSError):
                break
            await asyncio.wait([draining], timeout=REPORT_EVERY_S)
    finally:
        draining.cancel()
        await asyncio.gather(draining, return_exceptions=True)
        await sink.close()
        await handle.close()
