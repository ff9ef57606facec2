"""The ledger on a real Redis Cluster: each project's scripts on the master owning its slot,
reads and exports across masters, redirections followed while a slot moves, the spool's
replay, and the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from proxy.domain import Attribution, RateAsk, RateLimit
from proxy.ledger import alert_log
from proxy.ledger.events import read_events
from proxy.ledger.ledger import Ledger
from proxy.ledger.reports import known_projects, read_usage
from proxy.ledger.slots import key_slot
from proxy.ledger.spool import Spool
from tests.cluster.conftest import projects_by_master
from tests.ledger.helpers import event
from tests.processes import clean_env

pytestmark = pytest.mark.once

MODEL = "gpt-4o-mini"


@pytest.fixture
def ledger(handle, prefix):
    return Ledger(handle.client, prefix=prefix, pipe=handle.pipe)


async def _record(ledger: Ledger, project: str, count: int, *, start: int = 0, cost: int = 1_000) -> None:
    """``count`` requests of ``project``: each reserved, then settled, as the request path does."""
    who = Attribution(project=project, agent="worker")
    now = time.time()
    for i in range(start, start + count):
        outcome = await ledger.reserve(f"{project}-{i}", who, 5_000, deadline_s=30)
        assert outcome.ok
        ledger.queue_settle(event(f"{project}-{i}", who, ts=now, cost_nano=cost, model=MODEL))
    await ledger.settled()


def _keys_on(cluster, port: int, prefix: str) -> set[str]:
    return {k.decode() for k in cluster.client(port).scan_iter(match=f"{prefix}:*", count=1000)}


def test_key_slots_are_the_ones_the_cluster_computes(cluster):
    client = cluster.client(cluster.ports[0])
    for key in ("fb:{acme}:events", "plain", "fb:projects", "a{}b", "{}{x}", "fb:{key:abc}:record", "x{y", "é{ü}"):
        assert key_slot(key) == client.execute_command("CLUSTER KEYSLOT", key), key


async def test_projects_spread_over_every_master_each_on_its_own_slot(cluster, ledger, prefix):
    spread = projects_by_master(cluster, 2)
    assert len(spread) == 3
    for projects in spread.values():
        for n, project in enumerate(projects):
            await ledger.set_budget("project", project, 10**9, "month")
            await _record(ledger, project, 5 + n)
    for port, projects in spread.items():
        keys = _keys_on(cluster, port, prefix)
        for n, project in enumerate(projects):
            report = await read_usage(ledger, "project", project, "day")
            assert (report["requests"], report["cost_usd"]) == (5 + n, f"{(5 + n) * 1_000 / 1e9:.6f}")
            assert f"{prefix}:{{{project}}}:events" in keys   # on the master owning its slot
        assert all("{" not in k or k.split("{")[1].split("}")[0] in projects for k in keys)
        budget = await ledger.get_budget("project", projects[0])
        assert (budget["spent_usd"], budget["reserved_usd"]) == ("0.000005", "0.00")
    assert await known_projects(ledger) == sorted(p for ps in spread.values() for p in ps)
    assert ledger.scripts.reserve.sha and len(ledger.redis.get_primaries()) == 3


async def test_reports_and_exports_read_every_master(cluster, ledger):
    spread = projects_by_master(cluster, 1, stem="rep")
    projects = [p for ps in spread.values() for p in ps]
    for n, project in enumerate(projects):
        await _record(ledger, project, 3 + n, cost=2_000)
    across = await read_usage(ledger, "model", MODEL, "day")
    assert across["requests"] == 3 + 4 + 5
    assert {p: v["requests"] for p, v in across["by_project"].items()} == {p: 3 + n for n, p in enumerate(projects)}
    entries = await read_events(ledger, projects, (0, 0), 1_000)
    assert len(entries) == 12
    assert sorted(e.fields["request_id"] for e in entries) == sorted(
        f"{p}-{i}" for n, p in enumerate(projects) for i in range(3 + n))
    assert [e.id for e in entries] == sorted(e.id for e in entries)


async def test_alert_thresholds_are_claimed_once_on_the_project_s_master(cluster, ledger):
    project = projects_by_master(cluster, 1, stem="alert")[next(iter(cluster.masters()))][0]
    await ledger.set_budget("project", project, 10_000, "month", thresholds=(0.5, 0.9))
    who = Attribution(project=project, agent="worker")
    first = await ledger.settle(event(f"{project}-1", who, ts=time.time(), cost_nano=6_000, model=MODEL))
    again = await ledger.settle(event(f"{project}-2", who, ts=time.time(), cost_nano=1_000, model=MODEL))
    last = await ledger.settle(event(f"{project}-3", who, ts=time.time(), cost_nano=3_000, model=MODEL))
    assert [(c.scope, c.id, c.threshold, c.spent_nano) for c in first.alerts] == [("project", project, 0.5, 6_000)]
    assert again.alerts == ()
    assert [(c.threshold, c.spent_nano) for c in last.alerts] == [(0.9, 10_000)]


async def test_alert_deliveries_are_kept_on_every_master(cluster, ledger):
    spread = projects_by_master(cluster, 1, stem="sent")
    for project in (ps[0] for ps in spread.values()):
        for outcome in ("failed", "delivered"):
            await alert_log.note_delivery(ledger, project, {"alert_id": "a1", "outcome": outcome})
        assert [d["outcome"] for d in await alert_log.deliveries(ledger, project)] == ["delivered", "failed"]


async def test_rate_limits_count_on_the_project_s_master(cluster, ledger):
    spread = projects_by_master(cluster, 1, stem="rate")
    for project in (ps[0] for ps in spread.values()):
        await ledger.set_project_limits(project, 3, None)
        assert await ledger.project_limits(project) == (3, None)
        who = Attribution(project=project, agent="worker")
        ask = RateAsk(limits=(RateLimit("project", project, 3, None),), tokens=10)
        outcomes = [await ledger.reserve(f"{project}-r{i}", who, 1_000, deadline_s=30, rate=ask) for i in range(5)]
        assert [o.ok for o in outcomes] == [True, True, True, False, False]
        assert [o.rate_refused is not None for o in outcomes] == [False, False, False, True, True]


async def test_a_moved_slot_is_followed_and_nothing_is_counted_twice(cluster, handle, ledger, prefix):
    project = projects_by_master(cluster, 1, stem="mov")[next(iter(cluster.masters()))][0]
    await _record(ledger, project, 4)
    source = cluster.master_of(project)
    target = next(port for port in cluster.masters() if port != source)
    moved = await asyncio.to_thread(cluster.move_slot, key_slot(project), target)
    assert moved > 5
    before = handle.pipe.redirections
    await _record(ledger, project, 4, start=4)
    assert handle.pipe.redirections > before   # the pipe's table was stale: MOVED followed
    report = await read_usage(ledger, "project", project, "day")
    assert report["requests"] == 8
    assert not {k for k in _keys_on(cluster, source, prefix) if f"{{{project}}}" in k}
    assert f"{prefix}:{{{project}}}:events" in _keys_on(cluster, target, prefix)


async def test_a_slot_half_moved_holds_the_settle_until_it_lands_once(cluster, handle, ledger, prefix):
    """While a slot is being moved, the old master answers ASK, the new one TRYAGAIN (some of
    the script's keys are missing): the settle waits, then runs once on the new master."""
    project = projects_by_master(cluster, 1, stem="ask")[next(iter(cluster.masters()))][0]
    await _record(ledger, project, 3)
    slot = key_slot(project)
    source = cluster.master_of(project)
    target = next(port for port in cluster.masters() if port != source)
    src, dst = cluster.client(source), cluster.client(target)
    dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", cluster.node_id(source))
    src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", cluster.node_id(target))
    keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000)
    src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    pipe = handle.pipe
    before = pipe.redirections
    who = Attribution(project=project, agent="worker")
    written = ledger.queue_settle(event(f"{project}-late", who, ts=time.time(), cost_nano=1_000, model=MODEL))
    await asyncio.sleep(0.5)
    assert not written.done()                   # ASK from the old master, TRYAGAIN from the new one
    assert pipe.redirections > before
    for port in cluster.masters():
        cluster.client(port).execute_command("CLUSTER SETSLOT", slot, "NODE", cluster.node_id(target))
    outcome = await asyncio.wait_for(written, 10)
    assert outcome.recorded
    assert (await read_usage(ledger, "project", project, "day"))["requests"] == 4
    await asyncio.to_thread(cluster.wait_stable)


async def test_a_killed_master_s_requests_wait_for_its_replica_and_count_once(cluster, handle, ledger):
    """The master of a project is killed: the pipe's sends fail, the slot table is read again
    until the replica has taken over (the node timeout is 2 s), and then they land there."""
    project = projects_by_master(cluster, 1, stem="kill")[next(iter(cluster.masters()))][0]
    await _record(ledger, project, 3)
    old = cluster.master_of(project)
    replica = cluster.replica_of(old)
    cluster.wait_replicated(old)    # a crash loses what its replica had not received: not this test's subject
    cluster.kill(old)
    try:
        started = time.monotonic()
        await _record(ledger, project, 3, start=3)
        waited = time.monotonic() - started
        assert 1.0 < waited < 10.0
        await asyncio.to_thread(cluster.wait_stable)
        assert cluster.master_of(project) == replica
        assert (await read_usage(ledger, "project", project, "day"))["requests"] == 6
    finally:
        await asyncio.to_thread(cluster.restart, old)
    assert cluster.replica_of(replica) == old


async def test_the_spool_replays_into_a_cluster_once(cluster, ledger, tmp_path):
    spread = projects_by_master(cluster, 1, stem="spool")
    spool = Spool(tmp_path / "spool.ndjson")
    now = time.time()
    for project in (p for ps in spread.values() for p in ps):
        for i in range(4):
            await spool.append(event(f"{project}-s{i}", Attribution(project=project, agent="a"), ts=now, model=MODEL))
    assert await spool.replay(ledger) == 12
    for project in (p for ps in spread.values() for p in ps):
        await spool.append(event(f"{project}-s0", Attribution(project=project, agent="a"), ts=now, model=MODEL))
    assert await spool.replay(ledger) == 0       # a copy of what landed changes nothing
    totals = [(await read_usage(ledger, "project", p, "day"))["requests"] for ps in spread.values() for p in ps]
    assert totals == [4, 4, 4]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], env=clean_env(), capture_output=True, text=True,
                          timeout=60)


async def test_the_cli_sets_budgets_and_reads_usage_on_a_cluster(cluster, ledger, prefix):
    spread = projects_by_master(cluster, 1, stem="cli")
    projects = [p for ps in spread.values() for p in ps]
    node = f"redis://127.0.0.1:{cluster.ports[-1]}"   # any node will do, a replica too
    for project in projects:
        done = await asyncio.to_thread(_cli, "budget", "set", "project", project, "2.50", "--redis-url", node,
                                       "--redis-cluster", "--redis-prefix", prefix)
        assert done.returncode == 0, done.stderr
        await _record(ledger, project, 2)
    shown = await asyncio.to_thread(_cli, "budget", "list", "--json", "--redis-url", cluster.url,
                                    "--redis-prefix", prefix)
    assert shown.returncode == 0, shown.stderr
    assert [(b["id"], b["limit_usd"], b["spent_usd"]) for b in json.loads(shown.stdout)["budgets"]] == [
        (p, "2.50", "0.000002") for p in sorted(projects)]
    usage = await asyncio.to_thread(_cli, "usage", "model", MODEL, "--json", "--redis-url", cluster.url,
                                    "--redis-prefix", prefix)
    assert usage.returncode == 0, usage.stderr
    assert json.loads(usage.stdout)["requests"] == 6
    exported = await asyncio.to_thread(_cli, "events", "export", "--redis-url", cluster.url, "--redis-prefix", prefix)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert sorted(r["request_id"] for r in rows) == sorted(f"{p}-{i}" for p in projects for i in range(2))


async def test_sessions_of_the_earlier_layout_move_on_every_master(cluster, handle, ledger, prefix):
    projects = [p for found in projects_by_master(cluster, 1, stem="mig").values() for p in found]
    client = handle.client
    for project in projects:
        for bucket in ("d20261123", "total"):
            await client.hset(ledger.keys.usage(project, "session", bucket, "run-1"),
                              mapping={"requests": 2, "cost": 300, "m|gpt-4o|requests": 2, "m|gpt-4o|cost": 300})
    assert await ledger.migrate() == 2 * len(projects) == 6
    for project in projects:
        raw = await client.hgetall(ledger.keys.session(project, "run-1"))
        assert raw == {b"d20261123r": b"2", b"d20261123$": b"300", b"tr": b"2", b"t$": b"300",
                       b"@gpt-4o": b"1", b"@": b"1"}
        assert await client.exists(ledger.keys.usage(project, "session", "total", "run-1")) == 0
