"""Rate-limited warnings (``proxy.ratelimited``): one line per kind per interval, with a count
of the lines held back."""

from __future__ import annotations

import logging

from proxy.ratelimited import RateLimitedLog


def test_one_line_per_kind_per_second_and_the_next_says_how_many_were_held(caplog):
    now = [0.0]
    failures = RateLimitedLog(logging.getLogger("farebox.test"), clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="farebox.test"):
        assert failures.note("unreachable", "failed %s", "a") is True
        assert failures.note("unreachable", "failed %s", "b") is False
        assert failures.note("timeout", "timed out %s", "c") is True   # another kind has its own second
        now[0] = 0.999
        assert failures.note("unreachable", "failed %s", "d") is False
        now[0] = 1.0
        assert failures.note("unreachable", "failed %s", "e") is True
        now[0] = 2.5
        assert failures.note("unreachable", "failed %s", "f") is True
    assert [r.getMessage() for r in caplog.records] == [
        "failed a",
        "timed out c",
        "failed e (2 more like it not logged since the last one)",
        "failed f",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
