"""One real Redis Cluster (three masters, three replicas, on loopback) for every test here;
started once per run, torn down at its end. Tests query who owns what instead of assuming it:
some move slots and fail masters over."""

from __future__ import annotations

import uuid

import pytest

from proxy.ledger.connection import RedisHandle
from tests.cluster.local import OperatedCluster, cluster_tools_missing


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    missing = cluster_tools_missing()
    if missing is not None:
        pytest.skip(f"no Redis Cluster can be started: {missing}")
    local = OperatedCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield local.start()
    finally:
        local.stop()


def projects_by_master(cluster: OperatedCluster, per_master: int, stem: str = "proj") -> dict[int, list[str]]:
    """``per_master`` project ids owned by each master (as the slots are now)."""
    masters = cluster.masters()
    out: dict[int, list[str]] = {port: [] for port in masters}
    i = 0
    while any(len(found) < per_master for found in out.values()):
        project = f"{stem}{i}"
        found = out[cluster.master_of(project)]
        if len(found) < per_master:
            found.append(project)
        i += 1
    return out


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own (the cluster is torn down with every key at the end)."""
    return f"fbc{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def handle(cluster):
    """A connection to the session's cluster, as farebox opens one (``redis+cluster://``)."""
    opened = await RedisHandle.open(cluster.url, "unused")
    try:
        yield opened
    finally:
        await opened.close()
