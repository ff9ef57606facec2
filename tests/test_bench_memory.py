"""``python -m bench --memory``: the memory scenario runs end to end and reports every figure
it promises (unit costs, and samples of memory over time). No figure is asserted beyond being
there and sane: memory depends on the Redis version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_memory_scenario_reports_unit_costs_and_samples(tmp_path: Path):
    # On a Redis of its own (the embedded one): on a shared one, what other clients' keys free
    # while it runs (expiries, deletes) makes its memory deltas meaningless, even negative.
    out = tmp_path / "memory.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAREBOX_") and k != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--memory", "--out", str(out), "--duration", "2.5",
         "--rate", "200", "--projects", "5", "--unit-requests", "500", "--session-ttl", "1", "--window", "60"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    units = report["units"]
    for name in ("per_request_b", "per_new_session_b", "per_new_project_b", "marker_b", "stream_entry_b",
                 "per_project_bucket_b", "ranking_100_b"):
        assert units[name] > 0, name
    assert units["session_keys"] > 0 and units["done_sets"] > 0
    assert report["samples"] and all(s["requests"] > 0 and s["used_mb"] > 0 for s in report["samples"])
    assert "| per new session" in result.stdout


def test_the_memory_scenario_needs_an_output_file():
    result = subprocess.run([sys.executable, "-m", "bench", "--memory"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "--memory needs --out" in result.stderr
