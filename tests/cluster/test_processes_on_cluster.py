"""Three ``farebox serve`` processes on one real Redis Cluster: budget bursts on projects of
every master, and a busy project's master failed over and its slot moved while load runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest

from pricing.catalog import Catalog
from pricing.cost import worst_case_nano
from pricing.money import nano_to_usd, usd_to_nano
from proxy.apis.chat_prompt import count_chat_prompt
from proxy.fake_upstream import RECEIVED, create_fake_app
from proxy.ledger.slots import key_slot
from tests.cluster.conftest import projects_by_master
from tests.harness import LoopThread
from tests.processes import clean_env, free_port, wait_ready

pytestmark = pytest.mark.once

ADMIN = {"Authorization": "Bearer admin-secret"}
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Give me one line."}]
BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16}


def request_cost() -> int:
    """What one request costs: its worst case, as the fake upstream answers max_tokens tokens."""
    price = Catalog.load().resolve(MODEL)
    return worst_case_nano(price, count_chat_prompt(MODEL, {"messages": MESSAGES}), 16)


@pytest.fixture
def upstream():
    threads = LoopThread()
    app = create_fake_app()
    try:
        yield threads.serve(app), app
    finally:
        threads.close()


@pytest.fixture
def farebox_on_cluster(cluster, prefix, upstream, tmp_path):
    """Factory: three farebox processes on the cluster (``settings`` as FAREBOX_* variables)."""
    procs: list[subprocess.Popen] = []

    def start(**settings: str) -> list[str]:
        urls = []
        for i in range(3):
            port = free_port()
            env = {**clean_env(), "REDIS_URL": cluster.url, "FAREBOX_REDIS_PREFIX": prefix,
                   "FAREBOX_DATA_DIR": str(tmp_path / f"data{i}"), "FAREBOX_ADMIN_TOKEN": "admin-secret",
                   **{f"FAREBOX_{k.upper()}": v for k, v in settings.items()}}
            proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port), "--upstream",
                                     f"{upstream[0]}/v1", "--log-level", "warning"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            urls.append((port, proc))
        for port, proc in urls:
            wait_ready(port, proc, timeout=60)
        return [f"http://127.0.0.1:{port}" for port, _ in urls]

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.stderr:
                proc.stderr.close()


async def _send(client: httpx.AsyncClient, url: str, project: str) -> tuple[str, int, str]:
    """One chat request: (project, status, the error type or the cost header)."""
    try:
        response = await client.post(f"{url}/v1/chat/completions", json=BODY,
                                     headers={"X-Project-Id": project, "X-Agent-Id": "worker",
                                              "Authorization": "Bearer sk-client"})
    except httpx.HTTPError as exc:
        return project, 0, type(exc).__name__
    if response.status_code == 200:
        return project, 200, response.headers["X-Farebox-Cost-USD"]
    return project, response.status_code, response.json().get("error", {}).get("type", "")


async def _report(url: str, project: str) -> dict:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{url}/admin/usage", params={"scope": "project", "id": project, "period": "day"},
                                    headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()


async def _events(url: str, project: str) -> list[str]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{url}/admin/events", params={"project": project, "limit": "10000"},
                                    headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.text.splitlines()


async def _budget_settles(url: str, project: str) -> dict:
    """The project's budget once every process's leases gave back (each lease lives 250 ms)."""
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(100):
            status = (await client.get(f"{url}/admin/budgets/project/{project}", headers=ADMIN)).json()
            if status["reserved_usd"] == "0.00":
                return status
            await asyncio.sleep(0.1)
    raise AssertionError(f"holds left on {project}: {status}")


async def _redirections(url: str) -> float:
    async with httpx.AsyncClient(timeout=30) as client:
        text = (await client.get(f"{url}/metrics")).text
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("farebox_redis_redirections ")))


def _put_budget(url: str, project: str, limit_nano: int) -> None:
    response = httpx.put(f"{url}/admin/budgets/project/{project}", headers=ADMIN,
                         json={"limit_usd": nano_to_usd(limit_nano), "period": "month", "mode": "hard"})
    assert response.status_code == 200, response.text


async def test_budget_bursts_on_three_processes_stay_within_every_master_s_budgets(
        cluster, farebox_on_cluster, upstream):
    urls = farebox_on_cluster(budget_lease_requests="0")
    cost = request_cost()
    projects = [ps[0] for ps in projects_by_master(cluster, 1, stem="burst").values()]
    allowed_each = {p: 20 + 5 * n for n, p in enumerate(projects)}
    for project, allowed in allowed_each.items():
        _put_budget(urls[0], project, allowed * cost + cost // 2)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=90)) as client:
        answers = await asyncio.gather(*(_send(client, urls[i % 3], projects[i % 3]) for i in range(3 * 60)))
    by_project = Counter((p, status) for p, status, _ in answers)
    for project, allowed in allowed_each.items():
        assert by_project[(project, 200)] == allowed
        assert by_project[(project, 402)] == 60 - allowed
        report = await _report(urls[1], project)
        assert (report["requests"], usd_to_nano(report["cost_usd"])) == (allowed, allowed * cost)
        status = await _budget_settles(urls[2], project)
        assert usd_to_nano(status["spent_usd"]) == allowed * cost <= usd_to_nano(status["limit_usd"])
        assert len(await _events(urls[0], project)) == allowed
    assert {t for _, status, t in answers if status == 402} == {"budget_exceeded"}
    overview = httpx.get(f"{urls[2]}/admin/projects", headers=ADMIN, timeout=30).json()   # the dashboard's overview
    assert {p["id"]: p["requests_today"] for p in overview["projects"]} == allowed_each
    assert sum(1 for r in upstream[1][RECEIVED] if r["path"] == "/v1/chat/completions") == sum(allowed_each.values())
    assert {cluster.master_of(p) for p in projects} == set(cluster.masters())


async def test_a_failover_and_a_resharding_under_load_lose_nothing_and_never_overspend(
        cluster, farebox_on_cluster, upstream):
    """Load on three processes over projects of every master; the busy project's master is
    failed over (CLUSTER FAILOVER on its replica), then its slot moved to another master.
    Every answer is a 200 or a 402, every 200 is recorded once, spend stays within the limit."""
    urls = farebox_on_cluster()
    cost = request_cost()
    spread = projects_by_master(cluster, 1, stem="busy")
    busy, *others = [ps[0] for ps in spread.values()]
    total_busy, limit_nano = 900, 600 * cost + cost // 2
    _put_budget(urls[0], busy, limit_nano)
    answers: list[tuple[str, int, str]] = []
    done_busy = 0
    events: list[str] = []

    async def worker(n: int, client: httpx.AsyncClient, todo: list[str]) -> None:
        nonlocal done_busy
        while todo:
            project = todo.pop()
            answer = await _send(client, urls[n % 3], project)
            answers.append(answer)
            done_busy += project == busy

    async def operate() -> None:
        while done_busy < 200:
            await asyncio.sleep(0.01)
        old = cluster.master_of(busy)
        new = await asyncio.to_thread(cluster.fail_over, old)
        events.append(f"failed over {old} -> {new} after {done_busy}")
        while done_busy < 450:
            await asyncio.sleep(0.01)
        target = next(port for port in cluster.masters() if port != new)
        moved = await asyncio.to_thread(cluster.move_slot, key_slot(busy), target)
        events.append(f"moved slot {key_slot(busy)} ({moved} keys) -> {target} after {done_busy}")

    todo = [busy] * total_busy + [p for p in others for _ in range(200)]
    todo.sort(key=lambda p: hash((p, len(todo))))   # mixed, the busy project throughout
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=48)) as client:
        operation = asyncio.ensure_future(operate())
        await asyncio.gather(*(worker(n, client, todo) for n in range(24)))
        await asyncio.wait_for(operation, 30)
    elapsed = time.monotonic() - started
    statuses = Counter(status for _, status, _ in answers)
    failures = sorted({(s, t) for _, s, t in answers if s not in (200, 402)})
    print(f"\n{len(answers)} answers in {elapsed:.1f} s: {dict(statuses)}; 5xx {sum(v for s, v in statuses.items() if s >= 500)}; "
          + "; ".join(events))
    assert len(events) == 2
    assert failures == [], failures
    assert len(answers) == total_busy + 400
    for project in (busy, *others):
        ok = [a for a in answers if a[0] == project and a[1] == 200]
        report = await _report(urls[2], project)
        assert report["requests"] == len(ok)
        assert usd_to_nano(report["cost_usd"]) == sum(usd_to_nano(c) for _, _, c in ok) == len(ok) * cost
        assert len(await _events(urls[1], project)) == len(ok)
    status = await _budget_settles(urls[0], busy)
    assert usd_to_nano(status["spent_usd"]) <= limit_nano
    assert sum(await asyncio.gather(*(_redirections(url) for url in urls))) > 0   # MOVED / ASK were followed
    assert statuses[402] > 0    # the limit was reached
    assert sum(1 for r in upstream[1][RECEIVED] if r["path"] == "/v1/chat/completions") == statuses[200]
