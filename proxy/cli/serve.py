"""``farebox serve``: run the application until interrupted, in one process or several.

With ``--workers N`` (N > 1) the command becomes a small supervisor: it starts the embedded
Redis once (unless ``REDIS_URL`` names one), then N worker processes, each a complete farebox
listening on the same port with ``SO_REUSEPORT`` so the kernel spreads connections over them.
Workers reach the embedded Redis through its unix socket (``EmbeddedRedis.start`` joins a
server that already answers there). SIGINT or SIGTERM stops the workers, each finishing its
requests in flight, then the Redis it started. If a worker dies on its own, the others are
stopped too and the command exits with status 1, for a process supervisor to restart.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.settings import Settings

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["serve", "configure_logging"]

log = logging.getLogger("farebox")

SHUTDOWN_TIMEOUT_S = 10.0
# A worker gets this long beyond its own shutdown timeout before it is killed.
WORKER_STOP_GRACE_S = 5.0
# How often a worker checks that its supervisor still runs (it stops when it does not).
SUPERVISOR_CHECK_S = 1.0
# Allocations between two young-generation garbage collections (CPython's default is 700).
# A request allocates a few thousand objects that reference counting frees at once; collecting
# every 700 allocations mostly finds nothing and costs a few percent of the CPU under load.
GC_YOUNG_THRESHOLD = 20_000


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level)
    if settings.workers > 1:
        return _supervise(settings)
    return _run(settings)


def _run(settings: Settings, *, worker: int | None = None) -> int:
    """One farebox process serving until SIGINT/SIGTERM."""
    # What start-up creates (modules, encodings, the price catalog) lives as long as the process:
    # collections meanwhile would scan it again and again and free next to nothing. The
    # collector resumes once the application is loaded (_settle_garbage_collector).
    gc.disable()
    try:
        return _run_app(settings, worker)
    finally:
        gc.enable()


def _run_app(settings: Settings, worker: int | None) -> int:
    # Imported here, not at the top: a --workers supervisor never loads the application.
    from proxy.http.app import create_app  # noqa: PLC0415

    loop = _new_loop()
    asyncio.set_event_loop(loop)
    app = create_app(settings)
    app.cleanup_ctx.append(_settle_garbage_collector)
    if worker is not None:
        app.cleanup_ctx.append(_stop_without_supervisor(os.getppid(), worker))
    who = f"worker {worker} (pid {os.getpid()})" if worker is not None else "farebox"
    try:
        return loop.run_until_complete(_serve_until_stopped(app, settings, who, reuse_port=worker is not None))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
        # All of it goes with the process now. Out of the collector's sight, it is not scanned
        # again by the collections the interpreter runs as it exits (about half a second).
        gc.freeze()


async def _serve_until_stopped(app: web.Application, settings: Settings, who: str, *, reuse_port: bool) -> int:
    """Start the application, listen (``proxy.http.site.FrontSite``) until SIGINT or SIGTERM, then
    stop listening, let requests in flight finish (up to ``SHUTDOWN_TIMEOUT_S``) and clean up."""
    from proxy.http.front import Limits  # noqa: PLC0415
    from proxy.http.site import FrontSite, new_runner  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    limits = Limits()
    runner = new_runner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                        keepalive_timeout=limits.idle_timeout_s)
    site: FrontSite | None = None
    stopping = False
    try:
        await runner.setup()
        site = FrontSite(runner, settings.host, settings.port, reuse_port=reuse_port,
                         shutdown_timeout=SHUTDOWN_TIMEOUT_S, limits=limits)
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror or exc)
            return 1
        log.info("%s listening on http://%s:%d (upstream %s)", who, settings.host, site.port, settings.upstream)
        await stop.wait()
        stopping = True
        log.info("%s shutting down: no new connections; requests in flight get up to %g s to finish", who,
                 SHUTDOWN_TIMEOUT_S)
        return 0
    finally:
        if site is not None:
            await site.stop()
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if stopping:
            log.info("%s stopped", who)


async def _settle_garbage_collector(app: web.Application) -> AsyncIterator[None]:
    """Once everything long-lived is loaded (price catalog, encodings, modules): move it out of
    the collector's sight (``gc.freeze``) so collections scan only what requests allocate, and
    collect young objects less often; then turn the collector back on (``_run`` turned it off).

    No full collection first: it would take tens of milliseconds of start-up to free the few
    hundred kilobytes of cycles start-up leaves (mostly the classes that attrs and dataclasses
    replace when they add ``__slots__``), which are kept instead.
    """
    gc.freeze()
    gc.enable()
    previous = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


def _stop_without_supervisor(supervisor: int, worker: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """A worker whose supervisor died (killed with SIGKILL, say) stops itself, as SIGTERM would."""

    async def watch() -> None:
        while os.getppid() == supervisor:
            await asyncio.sleep(SUPERVISOR_CHECK_S)
        log.warning("worker %d: the supervisor (pid %d) is gone; stopping", worker, supervisor)
        os.kill(os.getpid(), signal.SIGTERM)

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(watch())
        try:
            yield
        finally:
            task.cancel()

    return context


def _worker_main(settings: Settings, worker: int) -> None:
    """Entry point of a worker process (started by ``_supervise``)."""
    configure_logging(settings.log_level)
    try:
        code = _run(settings, worker=worker)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


def _hold_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) the port the workers will share, so port 0 becomes a real port
    and a port already in use fails here, once, instead of in every worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError:
        holder.close()
        raise
    return holder


def _supervise(settings: Settings) -> int:
    """Start the shared Redis and the workers; stop everything on a signal or a dead worker."""
    if not hasattr(socket, "SO_REUSEPORT"):
        log.error("--workers needs SO_REUSEPORT, which this platform lacks; run one process per port instead")
        return 1
    from proxy.ledger.embedded import EmbeddedRedis, EmbeddedRedisError  # noqa: PLC0415

    try:
        holder = _hold_port(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    port = holder.getsockname()[1]
    embedded: EmbeddedRedis | None = None
    if not settings.redis_url:
        try:
            embedded = EmbeddedRedis(Path(settings.data_dir)).start()
        except EmbeddedRedisError as exc:
            holder.close()
            log.error("cannot start the embedded Redis in %s: %s", settings.data_dir, exc)
            return 1
    stopping = False

    # A signal also writes to `waker`, so the wait for the workers below ends at once.
    waker, woken = socket.socketpair()
    waker.setblocking(False)

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        try:
            waker.send(b"\0")
        except OSError:
            pass  # already woken (the buffer is full)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    child_settings = settings.model_copy(update={"port": port, "workers": 1})
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(child_settings, n), name=f"farebox-worker-{n}")
               for n in range(1, settings.workers + 1)]
    code = 0
    try:
        for process in workers:
            process.start()
        log.info("%d workers on http://%s:%d (pids %s)", len(workers), settings.host, port,
                 ", ".join(str(p.pid) for p in workers))
        while not stopping:
            multiprocessing.connection.wait([woken, *(p.sentinel for p in workers)], timeout=0.5)
            dead = [p for p in workers if p.exitcode is not None]
            if dead and not stopping:
                for p in dead:
                    log.error("worker %s (pid %s) exited with status %s; stopping the others", p.name, p.pid, p.exitcode)
                code = 1
                break
    finally:
        if stopping:
            log.info("shutting down %d workers", len(workers))
        _stop_workers(workers)
        if embedded is not None:
            embedded.stop()
        holder.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        waker.close()
        woken.close()
        if stopping:
            log.info("stopped: workers and Redis")
    return code


def _stop_workers(workers: list[multiprocessing.process.BaseProcess]) -> None:
    for process in workers:
        if process.exitcode is None and process.pid is not None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = SHUTDOWN_TIMEOUT_S + WORKER_STOP_GRACE_S
    for process in workers:
        if process.pid is None:
            continue
        process.join(deadline)
        if process.exitcode is None:
            log.warning("worker %s (pid %s) did not stop in time; killing it", process.name, process.pid)
            process.kill()
            process.join()
