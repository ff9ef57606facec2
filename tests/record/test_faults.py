"""Faults of the usage of record, each counted: events sent, stored in PostgreSQL, lost (0).

- a ``farebox sink`` process SIGKILLed in the middle of its batches, then started again;
- two ``farebox sink`` processes draining at once;
- PostgreSQL (a server of the test's own) stopped for 30 s under load, then started again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from proxy.ledger.reports import read_usage
from proxy.record.reconcile import reconcile
from proxy.record.statement import parse_month
from tests.ledger.helpers import event
from tests.processes import clean_env
from tests.record.helpers import count_rows, fetch, rows, wait_caught_up, wait_for_rows
from tests.record.pgserver import OwnPostgres, bin_dir, create_database


def _start_sink(redis_url: str, prefix: str, pg_url: str, log) -> subprocess.Popen:
    env = {**clean_env(), "REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": prefix, "FAREBOX_POSTGRES_URL": pg_url,
           "FAREBOX_SINK_DEFER_BUSY_S": "0",
           "FAREBOX_SINK_BATCH": "100", "FAREBOX_SINK_CLAIM_IDLE_S": "1"}
    return subprocess.Popen([sys.executable, "-m", "proxy", "sink"], env=env, stdout=log, stderr=log)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _send(ledger: Ledger, n: int, tag: str) -> int:
    """``n`` requests recorded (50 at a time, as concurrent requests are); returns how many were."""
    recorded = 0
    for start in range(0, n, 50):
        outcomes = await asyncio.gather(*(
            ledger.settle(event(f"{tag}-{i}", Attribution("acme", f"agent-{i % 5}", f"s-{i % 7}"), ts=time.time(),
                                cost_nano=1_000_003 + i, model=("gpt-4o", "gpt-4o-mini")[i % 2]))
            for i in range(start, min(n, start + 50))))
        recorded += sum(o.recorded for o in outcomes)
    return recorded


async def _wait_rows(pg_url: str, n: int, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(count_rows, pg_url)
        if got >= n:
            return got
        await asyncio.sleep(0.2)
    return got


async def _check_whole(pg_url: str, ledger: Ledger, sent: int) -> None:
    """Every event stored once, the rollups equal to the rows, and to Redis's aggregates."""
    import asyncpg  # noqa: PLC0415

    stored = await asyncio.to_thread(count_rows, pg_url)
    distinct = (await fetch(pg_url, "SELECT count(DISTINCT request_id) AS n FROM usage_events"))[0]["n"]
    lost = sent - distinct
    print(f"events sent {sent}, stored {stored}, lost {lost}")
    assert (stored, distinct, lost) == (sent, sent, 0)
    for table in ("usage_daily", "usage_monthly"):
        [sums] = await fetch(pg_url, f"SELECT sum(requests) AS r, sum(cost_nano) AS c FROM {table}")
        [events] = await fetch(pg_url, "SELECT count(*) AS r, sum(cost_nano) AS c FROM usage_events")
        assert (sums["r"], sums["c"]) == (events["r"], events["c"]), table
    conn = await asyncpg.connect(pg_url)
    try:
        month = parse_month(time.strftime("%Y-%m", time.gmtime()))
        _, differences = await reconcile(conn, ledger, "acme", month)
    finally:
        await conn.close()
    assert differences == []


@pytest.fixture
def ledger(redis_client, key_prefix) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix, stream_maxlen=0)


async def test_a_sink_killed_mid_batch_loses_nothing(pg_url, ledger, redis_url, key_prefix, tmp_path):
    sent = await _send(ledger, 4000, "k")
    with open(tmp_path / "sink.log", "wb") as log:
        first = _start_sink(redis_url, key_prefix, pg_url, log)
        try:
            got = await _wait_rows(pg_url, 1, 30)
            assert got >= 1, (tmp_path / "sink.log").read_text()
            first.kill()  # SIGKILL, in the middle of its batches
            first.wait(5)
            stored_at_kill = await asyncio.to_thread(count_rows, pg_url)
            assert stored_at_kill < sent, "the sink finished before it was killed: nothing was tested"
            sent += await _send(ledger, 500, "k2")  # more arrives while no sink runs
            second = _start_sink(redis_url, key_prefix, pg_url, log)
            try:
                assert await _wait_rows(pg_url, sent) == sent, (tmp_path / "sink.log").read_text()
                await asyncio.sleep(1.5)  # whatever it reclaims again changes nothing
            finally:
                _stop(second)
        finally:
            _stop(first)
    print(f"killed with {stored_at_kill} of {sent} stored")
    await _check_whole(pg_url, ledger, sent)


async def test_two_sinks_at_once_store_each_event_once(pg_url, ledger, redis_url, key_prefix, tmp_path):
    with open(tmp_path / "sink.log", "wb") as log:
        sinks = [_start_sink(redis_url, key_prefix, pg_url, log) for _ in range(2)]
        try:
            sent = 0
            for round_ in range(6):
                sent += await _send(ledger, 500, f"t{round_}")
                await asyncio.sleep(0.2)
            assert await _wait_rows(pg_url, sent) == sent, (tmp_path / "sink.log").read_text()
            await asyncio.sleep(1.0)
            consumers = await ledger.redis.xinfo_consumers(ledger.keys.events("acme"), "farebox-sink")
        finally:
            for proc in sinks:
                _stop(proc)
    assert len(consumers) == 2
    await _check_whole(pg_url, ledger, sent)


@pytest.mark.once
@pytest.mark.skipif(bin_dir() is None, reason="no PostgreSQL server programs (initdb, pg_ctl) to start one")
def test_postgres_down_for_30_seconds_under_load_loses_nothing(make_stack):
    server = OwnPostgres().start()
    try:
        _, pg_url = asyncio.run(create_database(server.url))
        # A short stream: without the sink's rule most of the outage's events would be trimmed.
        stack = make_stack(postgres_url=pg_url, stream_maxlen=100)
        sent, failed, stop = [0], [0], threading.Event()

        def load() -> None:
            with httpx.Client(timeout=30) as client:
                i = 0
                while not stop.is_set():
                    response = client.post(f"{stack.base_url}/chat/completions",
                                           headers={"X-Project-Id": "acme", "X-Agent-Id": f"a{i % 3}"},
                                           json={"model": "gpt-4o-mini", "max_tokens": 20,
                                                 "messages": [{"role": "user", "content": f"n{i}"}]})
                    if response.status_code == 200:
                        sent[0] += 1
                    else:
                        failed[0] += 1
                    i += 1
                    time.sleep(0.01)

        worker = threading.Thread(target=load)
        worker.start()
        try:
            time.sleep(3)
            server.stop()
            down_at = time.monotonic()
            time.sleep(30)
            during = httpx.get(f"{stack.url}/readyz").json()
            server.start()
            print(f"down {time.monotonic() - down_at:.1f} s; readyz meanwhile: {during}")
            time.sleep(3)
        finally:
            stop.set()
            worker.join(30)
        assert failed[0] == 0
        assert during["status"] == "ready" and during["sink"]["error"] and during["sink"]["lag_events"] > 100
        wait_for_rows(pg_url, sent[0], timeout=120)
        wait_caught_up(stack, timeout=60)
        stored = count_rows(pg_url)
        distinct = rows(pg_url, "SELECT count(DISTINCT request_id) AS n FROM usage_events")[0]["n"]
        report = stack.run(read_usage(stack.services.ledger, "project", "acme", "month"))
        print(f"events sent {sent[0]}, stored {stored}, lost {sent[0] - distinct}")
        assert stored == distinct == sent[0] == report["requests"]
        ledger = stack.services.ledger
        deadline = time.monotonic() + 10  # and the sink trims the stream on its next look (about 1 s)
        while int(stack.run(ledger.redis.xlen(ledger.keys.events("acme")))) > 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert int(stack.run(ledger.redis.xlen(ledger.keys.events("acme")))) <= 100
    finally:  # the whole server is thrown away, its database with it
        server.destroy()


def test_own_postgres_programs_are_found():
    assert bin_dir() is not None, "initdb / pg_ctl are needed for the outage test (apt-get install postgresql)"
    assert os.access(bin_dir() / "pg_ctl", os.X_OK)
