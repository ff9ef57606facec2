"""Event retention by age: the running proxy trims its streams in the background."""

from __future__ import annotations

import time

import httpx
import pytest

from proxy.control.retention import MAX_INTERVAL_S, interval_for
from proxy.settings import SettingsError, load_settings
from proxy.ledger.reports import read_usage

ADMIN = {"Authorization": "Bearer admin-secret"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def events(stack) -> list[str]:
    return httpx.get(f"{stack.url}/admin/events", headers=ADMIN, params={"project": "acme"}).text.splitlines()


def test_events_older_than_the_age_limit_are_removed(make_stack):
    stack = make_stack(admin_token="admin-secret", stream_max_age_s=1)
    assert httpx.post(f"{stack.base_url}/chat/completions", json=BODY, headers={"X-Project-Id": "acme"}).status_code == 200
    assert len(events(stack)) == 1
    deadline = time.monotonic() + 10
    while events(stack) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert events(stack) == []
    report = stack.run(read_usage(stack.services.ledger, "project", "acme", "day"))
    assert report["requests"] == 1  # the aggregates stay


def test_without_an_age_limit_events_stay(make_stack):
    stack = make_stack(admin_token="admin-secret")
    httpx.post(f"{stack.base_url}/chat/completions", json=BODY, headers={"X-Project-Id": "acme"})
    time.sleep(1.5)
    assert len(events(stack)) == 1


def test_trimming_runs_at_a_tenth_of_the_age_between_a_second_and_a_minute():
    assert interval_for(1) == 1.0 and interval_for(300) == 30.0 and interval_for(86400) == MAX_INTERVAL_S


def test_a_negative_age_limit_is_a_settings_error():
    with pytest.raises(SettingsError, match="invalid setting stream_max_age_s"):
        load_settings({}, env={"FAREBOX_STREAM_MAX_AGE_S": "-5"})
