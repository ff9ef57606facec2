"""The sink of a serving process, run as a child process at a lower CPU priority.

``farebox serve`` (each worker, with ``--workers``) starts one (``sink_process = true``, the
default): the usage of record is written by a process of its own, niced by ``sink_nice``, so
that where the serving processes, the sink and PostgreSQL share cores, the requests get the CPU
first. Its Python work (reading entries, building rows) never runs on the serving event loop. When
the cores are saturated the sink falls behind and catches up once they are not: the events wait
in Redis, acknowledged only once PostgreSQL has them, so nothing is lost.

The child is ``python -m proxy.record.child``: it reads the serving process's settings (pickled)
from its standard input, and writes its status (``Sink.status()`` plus its count of failed
writes, one JSON line) to its standard output twice a second; its log goes to the same standard
error as the parent's. The parent shows the latest status in ``/readyz`` and its metrics, starts
the child again when it dies (after 1 s, doubling up to 30 s while it keeps dying), and stops it
(SIGTERM, then SIGKILL after 5 s) when the serving process stops. A child whose parent is gone
stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import sys
from typing import Any

from proxy.ledger.connection import RedisHandle, describe_url
from proxy.ledger.ledger import Ledger
from proxy.record.serving import postgres_url, sink_options
from proxy.record.sink import Sink, SinkMetrics
from proxy.settings import Settings

__all__ = ["SinkProcess"]

log = logging.getLogger("farebox.sink")

REPORT_EVERY_S = 0.5          # how often the child writes its status (and looks for its parent)
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
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._latest: dict[str, Any] | None = None
        self._counted = {"written": 0, "failures": 0}  # what the current child's counts already added
        self._problem: str | None = "the sink process is starting"
        self._running: asyncio.Task | None = None

    async def start(self) -> None:
        process = await self._spawn()  # a failure to start at all is the serving process's too
        self._running = asyncio.get_running_loop().create_task(self._keep_running(process))

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.record.child", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        if self.settings.sink_nice:  # from its first moment (its imports come first)
            mine = os.getpriority(os.PRIO_PROCESS, 0)
            try:
                os.setpriority(os.PRIO_PROCESS, process.pid, min(19, mine + self.settings.sink_nice))
            except OSError as exc:  # gone already: it is started again
                log.warning("could not lower the sink process's priority: %s", exc)
        assert process.stdin is not None
        process.stdin.write(pickle.dumps(self.settings))
        process.stdin.close()
        self.process = process
        self._counted = {"written": 0, "failures": 0}
        log.info("sink process started (pid %s, nice +%d)", process.pid, self.settings.sink_nice)
        return process

    async def _keep_running(self, process: asyncio.subprocess.Process) -> None:
        delay = _RESTART_MIN_S
        while True:
            reported = await self._follow(process)
            code = await process.wait()
            self._latest = None
            if reported:
                delay = _RESTART_MIN_S
            self._problem = f"the sink process exited (code {code}); starting it again"
            log.warning("sink process %s exited with code %s; starting it again in %.0f s", process.pid, code, delay)
            await asyncio.sleep(delay)
            delay = min(_RESTART_MAX_S, delay * 2)
            self.restarts += 1
            try:
                process = await self._spawn()
            except OSError as exc:
                self._problem = f"the sink process could not be started: {exc}"
                log.error("%s; trying again in %.0f s", self._problem, delay)
                await asyncio.sleep(delay)

    async def _follow(self, process: asyncio.subprocess.Process) -> bool:
        """Take the child's status lines until it closes its output; True when it sent any."""
        assert process.stdout is not None
        reported = False
        while line := await process.stdout.readline():
            try:
                report = json.loads(line)
                status, failures = report["status"], int(report["failures"])
            except (ValueError, KeyError, TypeError):
                log.warning("sink process %s wrote %r, not a status", process.pid, line[:200])
                continue
            self.metrics.written.inc(max(0, status["written"] - self._counted["written"]))
            self.metrics.failures.inc(max(0, failures - self._counted["failures"]))
            self._counted = {"written": status["written"], "failures": failures}
            self.metrics.lag_events.set(status["lag_events"])
            self.metrics.lag_seconds.set(status["lag_seconds"])
            self._latest, self._problem, reported = status, None, True
        return reported

    def status(self) -> dict[str, Any]:
        """What ``/readyz`` shows: the child's latest status, or why there is none."""
        if self._latest is not None and self._problem is None:
            return dict(self._latest)
        return {"postgres": self.postgres, "lag_events": None, "lag_seconds": None,
                "written": self._counted["written"], "error": self._problem}

    async def close(self) -> None:
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
            self._running = None
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), _STOP_WAIT_S)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


# -- the child's side --------------------------------------------------------------------------

def main() -> None:
    """The child process (niced by its parent): drain until SIGTERM or until its parent is gone."""
    settings: Settings = pickle.loads(sys.stdin.buffer.read())
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group: the parent stops us
    asyncio.run(_drain(settings, os.getppid()))


async def _drain(settings: Settings, parent: int) -> None:
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
            line = json.dumps({"status": sink.status(), "failures": sink.failed}) + "\n"
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (BrokenPipeError, OSError):
                break
            await asyncio.wait([draining], timeout=REPORT_EVERY_S)
    finally:
        draining.cancel()
        await asyncio.gather(draining, return_exceptions=True)
        await sink.close()
        await handle.close()


if __name__ == "__main__":
    main()
