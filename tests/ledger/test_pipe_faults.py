"""A lost pipe connection at any point of a request's life, with budget leases: whatever the pipe
sends again counts once, so a budget's spent and reserved are exactly what they should be.

The pipe's connection is cut at the N-th script call it carries, either before the call is
written (it never ran) or after Redis answered it but before the answer reached the ledger
(it ran, and its caller does not know). A real Redis runs every call.
"""

from __future__ import annotations

import asyncio

import pytest

from proxy.domain import Attribution
from proxy.ledger import leases as leases_module
from proxy.ledger import pipe as pipe_module
from proxy.ledger.ledger import Ledger
from proxy.ledger.periods import bucket_ids
from proxy.ledger.pipe import RedisPipe
from proxy.ledger.scripts import budget_candidates, reserve_argv, reserve_keys
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:00")
WHO = Attribution("acme", "planner", "run-1")
DEADLINE_S = 60.0


class Cut:
    """Where to cut: the ``at``-th script call (EVALSHA) sent on the pipe, ``before`` its write
    or after its reply came back; once."""

    def __init__(self, at: int | None, before: bool) -> None:
        self.at, self.before = at, before
        self.seen = 0
        self.cut = False


def cutting_protocol(cut: Cut) -> type:
    class CuttingProtocol(pipe_module._Protocol):
        decoy: asyncio.Future | None = None
        real: asyncio.Future | None = None

        def send(self, packed: list[bytes]) -> list[asyncio.Future]:
            target = None
            for i, command in enumerate(packed):
                if command.startswith(b"*") and b"$7\r\nEVALSHA\r\n" in command[:24]:
                    cut.seen += 1
                    if cut.seen == cut.at and not cut.cut:
                        target = i
            if target is None:
                return super().send(packed)
            cut.cut = True
            if cut.before:  # the connection is lost before these commands are written
                futures = [self.loop.create_future() for _ in packed]
                self.waiting.extend(futures)
                self.abort(ConnectionError("connection cut before the write"))
                return futures
            futures = super().send(packed)
            # Its reply will go to a decoy: the connection is cut right after it arrives.
            self.real, self.decoy = futures[target], self.loop.create_future()
            self.waiting[self.waiting.index(self.real)] = self.decoy
            return futures

        def data_received(self, data: bytes) -> None:
            if self.decoy is None:
                super().data_received(data)
                return
            for n in range(len(data)):  # byte by byte: stop right after the decoy's reply
                super().data_received(data[n:n + 1])
                if self.decoy.done():
                    self.decoy = None
                    self.abort(ConnectionError("connection cut after the reply"))
                    self.real.set_exception(ConnectionError("connection cut after the reply"))
                    return

    return CuttingProtocol


async def _life(redis_client, redis_url, key_prefix) -> list[tuple[int, int]]:
    """A lease's life beside a request of its own, checked after each step: (reserved, spent)."""
    pipe = RedisPipe.from_url(redis_url)
    clock = FakeClock(T0)
    ledger = Ledger(redis_client, prefix=key_prefix, clock=clock, pipe=pipe, lease_requests=4)
    reader = Ledger(redis_client, prefix=key_prefix, clock=clock)
    seen = []

    async def check() -> None:
        state = await reader.budget_state("project", "acme")
        seen.append((state.reserved_nano, state.spent_nano))

    try:
        await ledger.set_budget("project", "acme", 1_000_000, "day")
        assert (await ledger.reserve("r0", WHO, 100, deadline_s=DEADLINE_S)).ok        # its own hold
        await check()
        assert (await ledger.reserve("r1", WHO, 100, deadline_s=DEADLINE_S)).ok        # a lease of 400
        await check()
        assert (await ledger.reserve("r2", WHO, 100, deadline_s=DEADLINE_S)).ok        # drawn
        assert (await ledger.reserve("r3", WHO, 100, deadline_s=DEADLINE_S)).ok        # drawn
        assert ledger.leases_granted == 1
        await check()
        await ledger.settle(event("r1", WHO, ts=T0, cost_nano=70))                      # its part of the lease
        await check()
        assert await ledger.release("r2", WHO) == 100                                   # back to the lease
        await ledger.close_leases()                                                     # 200 not lent goes back
        await check()
        assert await ledger.release("r3", WHO) == 100                                   # from the closed lease
        await check()
        await ledger.settle(event("r0", WHO, ts=T0, cost_nano=50))
        await check()
    finally:
        await pipe.close()
    return seen


EXPECTED = [(100, 0), (500, 0), (500, 0), (400, 70), (200, 70), (100, 70), (0, 120)]


async def test_a_lease_life_on_the_pipe_without_faults(redis_client, redis_url, key_prefix, monkeypatch):
    cut = Cut(None, before=True)
    monkeypatch.setattr(pipe_module, "_Protocol", cutting_protocol(cut))
    monkeypatch.setattr(leases_module, "LEASE_LIFE_S", 60.0)  # however slow the machine, it stays open
    assert await _life(redis_client, redis_url, key_prefix) == EXPECTED
    assert cut.seen == 5  # two reservations, two settles and a give-back: the calls cut below


@pytest.mark.parametrize("before", [True, False], ids=["before-write", "after-reply"])
@pytest.mark.parametrize("at", range(1, 6))
async def test_a_cut_connection_changes_nothing_of_spent_and_reserved(redis_client, redis_url, key_prefix,
                                                                       monkeypatch, at, before):
    cut = Cut(at, before)
    monkeypatch.setattr(pipe_module, "_Protocol", cutting_protocol(cut))
    monkeypatch.setattr(leases_module, "LEASE_LIFE_S", 60.0)
    assert await _life(redis_client, redis_url, key_prefix) == EXPECTED
    assert cut.cut


async def test_a_lease_grant_sent_twice_holds_the_lease_once(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    await ledger.set_budget("project", "acme", 1_000_000, "day")
    keys = reserve_keys(ledger.keys, "acme", budget_candidates(WHO), bucket_ids(T0))
    op_key = ledger.keys.op("acme", "lease:x")
    now_ms = int(T0 * 1000)
    args = reserve_argv("r1", 100, now_ms, 60.0, ("lease:x", 400, T0 + 60.25, 1600, 4, 16))
    first = await ledger.scripts.reserve([*keys, op_key], args)
    again = await ledger.scripts.reserve([*keys, op_key], args)
    assert first == again and first[0] == 2
    assert (await ledger.budget_state("project", "acme")).reserved_nano == 400


async def test_a_partial_release_sent_twice_gives_back_once(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    await ledger.set_budget("project", "acme", 1_000_000, "day")
    assert (await ledger.reserve("r1", WHO, 400, deadline_s=DEADLINE_S)).ok
    hold_keys = [ledger.keys.reservations("acme", "project", "acme"),
                 ledger.keys.reservation_amounts("acme", "project", "acme")]
    op_key = ledger.keys.op("acme", "r1:back")
    assert await ledger.scripts.release([*hold_keys, op_key], ["r1", "150", "60"]) == 150
    assert await ledger.scripts.release([*hold_keys, op_key], ["r1", "150", "60"]) == 150
    assert (await ledger.budget_state("project", "acme")).reserved_nano == 250
