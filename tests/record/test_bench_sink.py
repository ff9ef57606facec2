"""``python -m bench --sink``: runs end to end on a little backlog and reports its figures
(no rate is asserted: machines differ)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.processes import clean_env

REPO = Path(__file__).resolve().parent.parent.parent


def test_the_sink_benchmark_drains_a_backlog_and_reports_its_rate(postgres_admin_url, tmp_path):
    out = tmp_path / "sink.json"
    result = subprocess.run([sys.executable, "-m", "bench", "--sink", "--sink-events", "600", "--sink-projects", "3",
                             "--postgres-url", postgres_admin_url, "--out", str(out)],
                            cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (report["mode"], report["drained"], report["rows"], report["rolled_up_requests"]) == ("backlog", 600, 600, 600)
    assert report["events_per_s"] > 0 and report["lag_after"] == 0
    assert result.stdout.startswith("sink, backlog: 600 events from 3 projects drained in ")
