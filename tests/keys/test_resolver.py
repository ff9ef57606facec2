"""``KeyResolver``: a known key costs no Redis read; what it remembers is trusted only for
``trust_s`` after a look at the keys' change counter began, and dropped when the counter moved,
even by a read that was under way meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from proxy.control import keys
from proxy.errors import LedgerUnavailable
from proxy.keyauth import KeyResolver, ResolvedKey
from proxy.ledger.ledger import Ledger
from tests.ledger.helpers import FakeClock


class Counting:
    """The ledger, counting key reads; ``down`` makes them fail as Redis would; ``gate`` holds them."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger, self.reads, self.down = ledger, 0, False
        self.gate: asyncio.Event | None = None

    async def key_record(self, key_id: str):
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise LedgerUnavailable("Redis is unavailable: test")
        return await self.ledger.key_record(key_id)

    async def keys_version(self) -> int:
        if self.down:
            raise LedgerUnavailable("Redis is unavailable: test")
        return await self.ledger.keys_version()


@pytest.fixture
def ledger(redis_client, key_prefix) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix)


async def test_a_known_key_costs_no_read_while_trusted(ledger):
    made = await keys.create_key(ledger, {"project": "acme", "models": ["gpt-*"]})
    counting, clock = Counting(ledger), FakeClock(100.0)
    resolver = KeyResolver(counting, clock=clock)
    await resolver.check()
    found = await resolver.resolve(made["key"])
    assert isinstance(found, ResolvedKey) and found.id == made["id"] and found.project == "acme"
    assert found.allowed("gpt-4o") and not found.allowed("claude-haiku-4-5")
    for _ in range(100):
        assert await resolver.resolve(made["key"]) is found
    assert counting.reads == 1
    clock.advance(0.8)   # no look at the counter for longer than trust_s: read again
    assert (await resolver.resolve(made["key"])).id == made["id"]
    assert counting.reads == 2


async def test_a_change_of_keys_drops_what_is_remembered(ledger):
    made = await keys.create_key(ledger, {"project": "acme"})
    resolver = KeyResolver(Counting(ledger), clock=FakeClock(100.0))
    await resolver.check()
    assert isinstance(await resolver.resolve(made["key"]), ResolvedKey)
    await keys.revoke_key(ledger, made["id"])
    await resolver.check()
    assert await resolver.resolve(made["key"]) == "This farebox key was revoked."


async def test_a_read_under_way_during_a_change_is_not_remembered(ledger):
    made = await keys.create_key(ledger, {"project": "acme"})
    counting = Counting(ledger)
    resolver = KeyResolver(counting, clock=FakeClock(100.0))
    await resolver.check()
    counting.gate = asyncio.Event()
    reading = asyncio.ensure_future(resolver.resolve(made["key"]))
    await asyncio.sleep(0)
    await keys.rotate_key(ledger, made["id"])
    await resolver.check()                 # sees the change while the read is held
    counting.gate.set()
    await reading
    counting.gate = None
    assert await resolver.resolve(made["key"]) == "Invalid farebox key: no such key (check that it was copied whole)."
    assert counting.reads == 2


async def test_redis_down_fails_closed_unless_fail_open_knows_the_key(ledger):
    made = await keys.create_key(ledger, {"project": "acme"})
    for fail_open in (False, True):
        counting, clock = Counting(ledger), FakeClock(100.0)
        resolver = KeyResolver(counting, clock=clock, fail_open=fail_open)
        await resolver.check()
        known = await resolver.resolve(made["key"])
        counting.down = True
        clock.advance(1.0)
        if fail_open:
            assert await resolver.resolve(made["key"]) is known
        else:
            with pytest.raises(LedgerUnavailable):
                await resolver.resolve(made["key"])


async def test_the_cache_is_bounded(ledger):
    resolver = KeyResolver(Counting(ledger), clock=FakeClock(100.0), size=3)
    await resolver.check()
    for n in range(10):
        await resolver.resolve(f"fbk_{n:016x}" + "A" * 43)
    assert len(resolver) == 3


async def test_the_watch_stops_when_a_cancel_comes_out_of_redis_as_an_error(ledger):
    class Swallowing(Counting):
        """A Redis client that turns the cancel of a read into an error of its own."""

        async def keys_version(self) -> int:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise LedgerUnavailable("Redis is unavailable: connection closed") from None
            return 0

    resolver = KeyResolver(Swallowing(ledger), poll_s=0.01)
    watching = asyncio.ensure_future(resolver.watch_forever())
    await asyncio.sleep(0.05)
    watching.cancel()
    done, _ = await asyncio.wait([watching], timeout=10)
    assert done and watching.cancelled()
