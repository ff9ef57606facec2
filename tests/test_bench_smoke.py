"""``python -m bench --smoke``: the benchmark runs end to end and reports every figure it promises.

No timing is asserted (machines differ); only that each figure is there and sane.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    markdown = out.with_suffix(".md")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAREBOX_") and k != "REDIS_URL"}
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--markdown", str(markdown)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), markdown.read_text()


def test_every_scenario_ran_against_direct_and_farebox_without_errors(smoke):
    report, _ = smoke
    names = [s["name"] for s in report["scenarios"]]
    assert names == ["chat-c1", "chat-c16", "stream-c1"]
    for name in names:
        assert set(report["results"][name]) == {"direct", "farebox"}
        for target, runs in report["results"][name].items():
            assert len(runs) == 1
            run = runs[0]
            assert run["requests"] > 0 and run["errors"] == 0, (name, target, run)
            assert run["rps"] > 0
            assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]


def test_streams_report_first_and_last_byte_and_every_event(smoke):
    report, _ = smoke
    for target, (run,) in report["results"]["stream-c1"].items():
        assert 0 < run["ttfb_ms"]["p50"] <= run["ttlb_ms"]["p50"], target
        # role, 20 content chunks, finish, usage, [DONE]
        assert run["events_per_response"] == 24, target
    paced = report["extras"]["paced"]
    assert paced["delay_ms"] > 0
    for target in ("direct", "farebox"):
        assert paced[target]["requests"] > 0 and paced[target]["events_per_response"] == 24
        assert 0 <= paced[target]["bunched_events"] <= 1


def test_proxy_cpu_memory_and_start_up_are_measured(smoke):
    report, _ = smoke
    for name, per_target in report["results"].items():
        (farebox,) = per_target["farebox"]
        (direct,) = per_target["direct"]
        assert farebox["cpu_s_per_1k"] > 0 and farebox["peak_rss_mb"] > 10, name
        assert farebox["redis_cpu_s_per_1k"] is not None  # the embedded Redis, counted apart
        assert direct["cpu_s_per_1k"] is None  # no proxy on the direct path
        assert direct["upstream_cpu_s_per_1k"] > 0
    assert report["extras"]["ready_s"]["farebox"] > 0


def test_medians_ratios_and_targets_are_summarised(smoke):
    report, markdown = smoke
    summary = report["summary"]
    farebox = summary["medians"]["chat-c1"]["farebox"]
    assert farebox["added_p50_ms"] is not None and farebox["rps"] > 0
    assert summary["medians"]["stream-c1"]["farebox"]["added_ttfb_p50_ms"] is not None
    assert summary["ratios"]["chat-c1"]["farebox/direct rps"] > 0
    targets = {t["target"]: t for t in summary["targets"]}
    assert {"added latency p50", "added latency p99", "CPU per request (worst non-streamed scenario)",
            "added time to first byte p50", "peak RSS under load", "ready to serve"} <= set(targets)
    assert all(t["met"] in (True, False, None) for t in targets.values())
    assert report["meta"]["versions"]["python"] and report["meta"]["machine"]["cores"] >= 1
    assert report["meta"]["command"].startswith("python -m bench --smoke")
    assert "| chat-c1 | farebox |" in markdown and "Targets:" in markdown


def test_pieces_are_timed(smoke):
    report, _ = smoke
    pieces = report["pieces"]
    assert pieces["prompt_counting"]["1 KB"]["tokens"] > 100
    assert pieces["prompt_counting"]["1 KB"]["ms_p50"] > 0
    assert pieces["reserve_settle"]["us_p50"] > 0 and pieces["reserve_settle"]["rounds"] > 0
    assert pieces["sse_parse"]["us_per_chunk_p50"] > 0 and pieces["sse_parse"]["events_per_stream"] == 24
