"""Batches of writes: jobs submitted close together go to Redis together.

A job is queued when it is submitted. The queue is written at the end of the loop turn, or,
with a ``delay_s``, that long after its first job, unless something asks for it sooner:
``soon`` (write at the end of this turn: a caller is waiting for them), ``flush`` (write
now: a later command must reach Redis after them) or ``settled``. At low load a batch holds one job; under load many, and the per-write costs (a
round trip, a script call, the updates the jobs share) are paid once for all of them.
``settled`` waits for every job submitted so far.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["TurnBatcher"]

J = TypeVar("J")
R = TypeVar("R")


class TurnBatcher(Generic[J, R]):
    """``write(jobs)`` must start sending at once (before it returns) where it can, and give
    an awaitable of one result per job, in order: a value, or an exception for that job alone.
    An exception from the awaitable goes to every job of the batch."""

    def __init__(self, write: Callable[[list[J]], Awaitable[list[R | BaseException]]], *,
                 delay_s: float = 0.0) -> None:
        self._write = write
        self._delay_s = delay_s
        self._queue: list[tuple[J, asyncio.Future[R]]] = []
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Future[R]] = set()
        self._deliveries: set[asyncio.Task[None]] = set()

    def submit(self, job: J) -> asyncio.Future[R]:
        """Queue ``job``; the future gets its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((job, future))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        if not self._scheduled:
            self._scheduled = True
            if self._delay_s > 0:
                self._timer = loop.call_later(self._delay_s, self.flush)
            else:
                loop.call_soon(self.flush)
        return future

    def soon(self) -> None:
        """Write what is queued at the end of this loop turn instead of after the delay."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._scheduled = False
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        try:
            written = self._write([job for job, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
            self._resolve(batch, [exc] * len(batch))
            return
        task = asyncio.get_running_loop().create_task(self._deliver(batch, written))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, batch: list[tuple[J, asyncio.Future[R]]], written: Awaitable[list[R | BaseException]]) -> None:
        try:
            results = await written
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
            results = [exc] * len(batch)
        self._resolve(batch, results)

    @staticmethod
    def _resolve(batch: list[tuple[J, asyncio.Future[R]]], results: list[R | BaseException]) -> None:
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller stopped waiting; the job was written all the same
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def settled(self) -> None:
        """Write what is queued, then wait until every job submitted so far has its result."""
        self.flush()
        if self._pending:
            await asyncio.wait(set(self._pending))
