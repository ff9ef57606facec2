"""The sink: every project's events drained from Redis into PostgreSQL.

A loop per process (``farebox serve`` runs one in each worker, ``farebox sink`` runs one
alone), each a consumer of the same Redis consumer group (``proxy/ledger/drain.py``), so
processes share the work and none writes what another already acknowledged:

1. take entries: first those other consumers left pending longer than ``claim_idle_s`` (a
   sink that died mid-batch), else new ones (when there are none, it looks again after 50 ms,
   then less often, down to every ``idle_max_s``);
2. write them and their rollups in one transaction (``writer.py``); until that succeeds
   (PostgreSQL down, a deadlock) the same batch is tried again, nothing acknowledged;
3. acknowledge them; then, about once a second, trim the streams by the acknowledged
   position (``Drain.tidy``) and take the lag: the events PostgreSQL does not have yet and the
   age of the oldest of them, shown as metrics and in ``/readyz``.

A batch written but not acknowledged (the process died between the two) is written again by
whoever reclaims it, which changes nothing: one row per request id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge

from proxy.errors import LedgerUnavailable
from proxy.ledger.drain import Drain, StreamState
from proxy.ledger.events import StreamEntry
from proxy.ledger.ledger import Ledger
from proxy.record.cpu import HostCpu
from proxy.record.db import connect, describe_url, migrate
from proxy.record.writer import Row, row_of, write_batch

__all__ = ["Sink", "SinkOptions", "SinkMetrics"]

log = logging.getLogger("farebox.sink")

_PROJECTS_EVERY_S = 2.0     # how often the list of projects is read again
_TIDY_EVERY_S = 1.0         # how often streams are trimmed and the lag taken
_RETRY_MIN_S, _RETRY_MAX_S = 0.2, 5.0
_IDLE_MIN_S = 0.05          # the first wait after a look at the streams found nothing new
BUSY_SHARE = 0.75           # the host is busy when others used this share of its CPU time since the last look


@dataclass(frozen=True)
class SinkOptions:
    batch: int = 1000                 # entries read per stream and call
    idle_max_s: float = 0.5           # the longest wait between looks at streams that had nothing new
    round_min_s: float = 0.25         # a round that found less than a full batch waits this long from
                                      # its start before the next (bigger batches, less work per event)
    defer_busy_s: float = 30.0        # while the host's CPUs are busy, wait as long as the oldest event
                                      # PostgreSQL does not have is younger than this (0: never wait)
    claim_idle_s: float = 30.0        # entries pending this long on another consumer are taken over
    stream_maxlen: int = 50_000       # entries kept per stream once acknowledged (0: all)
    stream_max_age_s: int = 0         # acknowledged entries older than this go (0: kept by length only)


class SinkMetrics:
    """The sink's metrics, on the application's registry (or a registry of its own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.written = Counter("farebox_sink_events", "Usage events the sink wrote to PostgreSQL (new rows).",
                               registry=r)
        self.lag_events = Gauge("farebox_sink_lag_events", "Usage events in Redis that PostgreSQL does not have yet "
                                "(pending or undelivered in the sink's consumer group, every project).", registry=r)
        self.lag_seconds = Gauge("farebox_sink_lag_seconds", "Age of the oldest usage event PostgreSQL does not have "
                                 "yet (0 when it has them all).", registry=r)
        self.failures = Counter("farebox_sink_write_failures", "Batches PostgreSQL refused or could not take "
                                "(each is tried again).", registry=r)


@dataclass
class _Lag:
    events: int = 0
    seconds: float = 0.0
    at: float | None = None           # when it was taken (None: not yet)


@dataclass
class Sink:
    ledger: Ledger
    postgres_url: str
    options: SinkOptions = field(default_factory=SinkOptions)
    metrics: SinkMetrics = field(default_factory=SinkMetrics)
    clock: Callable[[], float] = time.time
    consumer: str | None = None
    cpu: Any = None                   # HostCpu (or a stand-in with busy_share()); made when None

    def __post_init__(self) -> None:
        self.drain = Drain(self.ledger, self.consumer)
        self.pool: asyncpg.Pool | None = None
        self.partitions: set[date] = set()
        self.lag = _Lag()
        self.problem: str | None = None            # why the last write or read failed, until one succeeds
        self.written = 0                            # new rows this sink wrote
        self.batches = 0                            # batches it wrote
        self.failed = 0                             # writes PostgreSQL refused or could not take
        self._projects: list[str] = []
        self._projects_at = 0.0
        self._tidy_at = 0.0
        self._claim_at = 0.0
        self.deferred = 0                           # rounds it waited for a busy host
        if self.cpu is None:
            self.cpu = HostCpu()

    # -- the loop -----------------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Drain until cancelled; a failure of Redis or PostgreSQL is retried with a backoff."""
        delay, idle = _RETRY_MIN_S, _IDLE_MIN_S
        while True:
            try:
                started = time.monotonic()
                if await self.defers():
                    await asyncio.sleep(self.options.round_min_s)
                    continue
                handled = await self.step()
                delay = _RETRY_MIN_S
                if handled:
                    idle = _IDLE_MIN_S
                    if handled < self.options.batch:
                        await asyncio.sleep(self.options.round_min_s - (time.monotonic() - started))
                else:
                    await asyncio.sleep(idle)
                    idle = min(self.options.idle_max_s, idle * 2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged, retried
                self._failed(exc)
                await asyncio.sleep(delay)
                delay = min(_RETRY_MAX_S, delay * 2)

    async def defers(self) -> bool:
        """Whether this round waits for a busy host: the requests served on the same cores come
        first, as long as the oldest event PostgreSQL does not have is younger than
        ``defer_busy_s`` (the lag, taken again about once a second meanwhile). Then the sink
        drains whatever the host's load, so the record is never further behind than that (and
        the events wait in Redis, where nothing is lost)."""
        limit = self.options.defer_busy_s
        if limit <= 0:
            return False
        busy = self.cpu.busy_share()
        if busy is None or busy < BUSY_SHARE:
            return False
        await self.connect()
        if self.clock() - self._tidy_at >= _TIDY_EVERY_S:
            await self.tidy()
        if self.lag.at is None or self.lag.seconds >= limit:
            return False
        self.deferred += 1
        return True

    async def step(self) -> int:
        """One round: take a batch, write it, acknowledge it; tidy when due. Returns the entries
        handled (0 when there was nothing to do)."""
        await self.connect()
        projects = await self._known_projects()
        entries = await self._take(projects)
        if entries:
            await self.write(entries)
            await self.drain.ack(entries)
        if self.clock() - self._tidy_at >= _TIDY_EVERY_S:
            await self.tidy(projects)
        self.problem = None
        return len(entries)

    async def drain_all(self, max_rounds: int = 10_000) -> int:
        """Run rounds until one finds nothing (for commands and tests); returns the entries handled."""
        total = 0
        for _ in range(max_rounds):
            n = await self.step()
            total += n
            if n == 0:
                break
        return total

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    # -- the steps ----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the pool and apply the migrations not applied yet (once; each round calls it)."""
        if self.pool is not None:
            return
        pool = await connect(self.postgres_url)
        try:
            applied = await migrate(pool)
        except BaseException:
            await pool.close()
            raise
        if applied:
            log.info("postgres %s: applied %s", describe_url(self.postgres_url), ", ".join(applied))
        self.pool = pool

    async def _known_projects(self) -> list[str]:
        now = self.clock()
        if not self._projects or now - self._projects_at >= _PROJECTS_EVERY_S:
            self._projects = await self.drain.projects()
            self._projects_at = now
        return self._projects

    async def _take(self, projects: list[str]) -> list[StreamEntry]:
        idle_ms = int(self.options.claim_idle_s * 1000)
        now = self.clock()
        if now - self._claim_at >= self.options.claim_idle_s / 2:
            self._claim_at = now
            claimed: list[StreamEntry] = []
            for project in projects:
                got = await self.drain.reclaim(project, idle_ms, self.options.batch)
                if len(got) >= self.options.batch:
                    self._claim_at = 0.0  # more may be left: look again next round
                claimed += got
            if claimed:
                log.info("took over %d events another sink left unacknowledged", len(claimed))
                return claimed
        return await self.drain.read(projects, self.options.batch)

    async def write(self, entries: list[StreamEntry]) -> None:
        """Write ``entries`` until PostgreSQL has them (the caller acknowledges them after)."""
        rows: list[Row] = []
        for entry in entries:
            try:
                rows.append(row_of(entry))
            except (KeyError, ValueError) as exc:
                log.error("event %s of project %s is not a usage event (%s): acknowledged without a row",
                          entry.id_text, entry.project, exc)
        delay = _RETRY_MIN_S
        while True:
            try:
                assert self.pool is not None
                async with self.pool.acquire() as conn:
                    new = await write_batch(conn, rows, self.partitions)
                break
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
                self.metrics.failures.inc()
                self.failed += 1
                self._failed(exc)
                await self._tidy_quietly()  # the lag keeps growing while PostgreSQL is away: show it
                await asyncio.sleep(delay)
                delay = min(_RETRY_MAX_S, delay * 2)
        self.written += new
        self.batches += 1
        self.metrics.written.inc(new)

    async def tidy(self, projects: list[str] | None = None) -> list[StreamState]:
        """Trim the streams by the acknowledged position and take the lag."""
        projects = await self._known_projects() if projects is None else projects
        await self.drain.join(projects)  # a stream the group does not know yet is all lag
        now = self.clock()
        self._tidy_at = now
        age = self.options.stream_max_age_s
        min_age_id = f"{max(0, int((now - age) * 1000))}-0" if age else ""
        states = await self.drain.tidy(projects, self.options.stream_maxlen, min_age_id)
        oldest = [s.oldest_ms for s in states if s.oldest_ms is not None]
        self.lag = _Lag(events=sum(s.behind for s in states),
                        seconds=max(0.0, now - min(oldest) / 1000) if oldest else 0.0, at=now)
        self.metrics.lag_events.set(self.lag.events)
        self.metrics.lag_seconds.set(self.lag.seconds)
        return states

    async def _tidy_quietly(self) -> None:
        if self.clock() - self._tidy_at < _TIDY_EVERY_S:
            return
        try:
            await self.tidy(self._projects)
        except LedgerUnavailable:
            pass

    def _failed(self, exc: BaseException) -> None:
        message = exc.message if isinstance(exc, LedgerUnavailable) else f"{type(exc).__name__}: {exc}"
        if message != self.problem:
            log.warning("sink: %s; trying again", message)
        self.problem = message

    def status(self) -> dict[str, Any]:
        """What ``/readyz`` shows of the sink."""
        return {"postgres": describe_url(self.postgres_url), "lag_events": self.lag.events,
                "lag_seconds": round(self.lag.seconds, 3), "written": self.written,
                "error": self.problem}
