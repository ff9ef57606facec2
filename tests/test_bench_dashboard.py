"""``python -m bench.dashboard``: the demo it records is what the dashboard reads, and every
request it times is one the page makes and answers 200. No timing is asserted here (the
benchmark itself fails on a request of 50 ms or more)."""

from __future__ import annotations

import httpx

from bench.dashboard import TOKEN, time_requests, seed
from proxy.http.app import create_app
from proxy.http.appkeys import SERVICES
from proxy.settings import Settings
from tests.harness import LoopThread


def test_the_benchmark_times_every_request_of_the_dashboard_on_its_demo(redis_url, key_prefix, tmp_path):
    threads = LoopThread()
    try:
        app = create_app(Settings(redis_url=redis_url, redis_prefix=key_prefix, data_dir=str(tmp_path),
                                  admin_token=TOKEN, upstream="http://127.0.0.1:9/v1"))
        url = threads.serve(app, front=True)
        threads.run(seed(app[SERVICES].ledger, 600))
        overview = httpx.get(f"{url}/admin/projects", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert [p["id"] for p in overview["projects"]][0] == "acme"
        assert overview["requests_month"] <= 600
        budgets = httpx.get(f"{url}/admin/budgets?project=acme", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert {b["scope"] for b in budgets["budgets"]} == {"project", "agent", "session"}
        times = time_requests(url, rounds=1)      # exits with the path when an answer is not 200
        assert len(times) == 19 and all(len(v) == 1 for v in times.values())
    finally:
        threads.close()
