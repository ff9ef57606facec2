"""Usage holds on a real Redis Cluster: held, recorded, settled and closed once on the master
owning each project's slot."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.compute import usage_event
from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from proxy.ledger.reports import read_usage
from tests.cluster.conftest import projects_by_master

pytestmark = pytest.mark.once


async def test_holds_of_projects_on_every_master_are_held_settled_and_closed_once(cluster, handle, prefix):
    ledger = Ledger(handle.client, prefix=prefix, pipe=handle.pipe, lease_requests=32)
    projects = [p for found in projects_by_master(cluster, 1, stem="hold").values() for p in found]
    now = time.time()
    for project in projects:
        who = Attribution(project, "runner", "job-7")
        await ledger.set_budget("project", project, 2_000_000_000, "total")
        assert (await ledger.hold("hold_a", who, 1_500_000_000, deadline_s=60)).ok
        assert not (await ledger.hold("hold_b", who, 1_000_000_000, deadline_s=60)).ok
        await ledger.add_hold(project, "hold_a", {"project": project, "reserved_nano": "1500000000"},
                              int(now * 1000) + 60_000)
        closes = await asyncio.gather(*(ledger.close_hold(project, "hold_a", f"settled|{n}") for n in range(10)))
        assert sum(won for won, _ in closes) == 1
        await ledger.settle(usage_event("hold_a", now, who, "compute:gpu", 600_000_000, 200))
        state = await ledger.budget_state("project", project)
        assert (state.spent_nano, state.reserved_nano) == (600_000_000, 0)
        report = await read_usage(ledger, "session", f"{project}/job-7", "total")
        assert (report["compute_cost_usd"], report["by_resource"]) == ("0.60", {"gpu": {"records": 1,
                                                                                       "cost_usd": "0.60"}})
