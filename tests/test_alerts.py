"""Budget alerts end to end: thresholds crossed by real requests, delivered to a real webhook
receiver on 127.0.0.1 (signed, retried, given up on, never in the request's way)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx
import pytest
from aiohttp import web

from pricing.money import nano_to_usd, usd_to_nano
from proxy.control.alerts import AlertDispatcher
from proxy.ledger.embedded import EmbeddedRedis
from proxy.domain import Attribution, Crossing
from proxy.metrics import Metrics
from proxy.settings import SettingsError, load_settings
from tests.harness import LoopThread
from tests.ledger.helpers import event

HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "planner"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Give me one line."}], "max_tokens": 16}
SECRET = "whsec-test"
CROSSING = Crossing(scope="project", id="acme", threshold=0.8, spent_nano=40_010_000_000, limit_nano=50_000_000_000,
                    period="month", mode="hard", period_start=datetime(2026, 11, 1, tzinfo=timezone.utc),
                    resets_at=datetime(2026, 12, 1, tzinfo=timezone.utc))


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """A webhook endpoint that records every attempt. It answers ``status`` to the first
    ``failures`` attempts and 200 after; with ``gate``, each attempt waits for it first."""

    def __init__(self, threads: LoopThread, *, failures: int = 0, status: int = 500, gate: bool = False) -> None:
        self.threads = threads
        self.failures, self.status = failures, status
        self.gate = asyncio.Event() if gate else None
        self.hits: list[Hit] = []
        self.accepted: list[Hit] = []
        app = web.Application()
        app.router.add_post("/hooks/farebox", self._handle)
        self.url = threads.serve(app) + "/hooks/farebox"

    async def _handle(self, request: web.Request) -> web.Response:
        hit = Hit(dict(request.headers), await request.read())
        self.hits.append(hit)
        attempt = len(self.hits)
        if self.gate is not None:
            await self.gate.wait()
        if attempt <= self.failures:
            return web.Response(status=self.status, text="not now")
        self.accepted.append(hit)
        return web.Response(status=200, text="ok")

    def open_gate(self) -> None:
        assert self.gate is not None
        self.threads.loop.call_soon_threadsafe(self.gate.set)

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await asyncio.sleep(0.005)

    def wait_hits(self, n: int) -> None:
        self.threads.run(self._until(lambda: len(self.hits) >= n), timeout=30)


@pytest.fixture
def receivers():
    threads = LoopThread()
    try:
        yield lambda **options: Receiver(threads, **options)
    finally:
        threads.close()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (as the README shows it)."""
    signed = headers["X-Farebox-Timestamp"].encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Farebox-Signature"])


def chat(stack, project: str = "acme") -> httpx.Response:
    response = httpx.post(f"{stack.base_url}/chat/completions", json=BODY, headers={**HEADERS, "X-Project-Id": project},
                          timeout=30)
    assert response.status_code == 200, response.text
    stack.run(stack.services.settled())  # its record confirmed, and the alerts it crossed handed over
    return response


def request_cost(stack) -> int:
    """What one of these requests costs (the fake upstream is deterministic), spent elsewhere."""
    return usd_to_nano(chat(stack, project="warmup").headers["X-Farebox-Cost-USD"])


def set_budget(stack, limit_nano: int, period: str = "total", mode: str = "soft", **kw) -> None:
    stack.run(stack.services.ledger.set_budget("project", "acme", limit_nano, period, mode, **kw))


def drain(stack) -> None:
    """Every alert of the requests answered so far delivered (their records confirmed first)."""
    stack.run(stack.services.settled())
    stack.run(stack.services.alerts.drain())


def alerts_metric(metrics: Metrics, threshold: str, outcome: str, scope: str = "project") -> float:
    value = metrics.registry.get_sample_value("farebox_alerts_total",
                                              {"scope": scope, "threshold": threshold, "outcome": outcome})
    return value or 0.0


def iso_utc(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- through the proxy ----------------------------------------------------------------------


def test_a_request_crossing_two_thresholds_posts_two_signed_alerts(make_stack, receivers, caplog):
    caplog.set_level(logging.INFO, logger="farebox")
    receiver = receivers()
    stack = make_stack(alert_webhook_urls=[receiver.url], alert_webhook_secret=SECRET)
    cost = request_cost(stack)
    limit = cost + cost // 4            # one request is 80 % of it
    set_budget(stack, limit, "month", mode="hard")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    chat(stack)
    drain(stack)
    assert len(receiver.hits) == 2
    bodies = sorted((hit.json for hit in receiver.hits), key=lambda b: b["threshold"])
    occurred = datetime.fromisoformat(bodies[0]["occurred_at"])
    assert before <= occurred <= datetime.now(timezone.utc)
    start = occurred.replace(day=1, hour=0, minute=0, second=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    for body, (threshold, percent) in zip(bodies, [(0.5, 50), (0.8, 80)]):
        assert body == {
            "event": "budget.threshold_crossed", "alert_id": body["alert_id"], "scope": "project", "id": "acme",
            "mode": "hard", "threshold": threshold, "percent": percent, "spent_usd": nano_to_usd(cost),
            "limit_usd": nano_to_usd(limit), "period": "month", "period_start": iso_utc(start), "resets_at": iso_utc(end),
            "occurred_at": bodies[0]["occurred_at"],
        }
    assert bodies[0]["alert_id"] != bodies[1]["alert_id"]
    for hit in receiver.hits:
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.headers["X-Farebox-Event"] == "budget.threshold_crossed"
        assert hit.headers["X-Farebox-Alert-Id"] == hit.json["alert_id"]
        assert verify(SECRET, hit.headers, hit.body)
        assert not verify("another secret", hit.headers, hit.body)
    metrics = stack.services.metrics
    assert [alerts_metric(metrics, t, o) for t in ("50", "80") for o in ("crossed", "delivered")] == [1, 1, 1, 1]
    assert "farebox_alerts_total" in httpx.get(f"{stack.url}/metrics").text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "crossed" in r.getMessage()]
    assert sorted(warnings) == [
        f"budget project 'acme' crossed {p}% of its monthly limit: spent ${nano_to_usd(cost)} of "
        f"${nano_to_usd(limit)}; resets {iso_utc(end)}" for p in (50, 80)]
    delivered = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "delivered to" in r.getMessage()]
    assert len(delivered) == 2 and all(receiver.url.rpartition("/hooks")[0] in m for m in delivered)


def test_each_threshold_alerts_once_however_many_requests_follow(make_stack, receivers):
    receiver = receivers()
    stack = make_stack(alert_webhook_urls=[receiver.url])
    cost = request_cost(stack)
    set_budget(stack, 4 * cost)                 # thresholds at 2, 3.2, 3.6 and 4 requests
    for _ in range(7):
        chat(stack)
    drain(stack)
    assert sorted(hit.json["threshold"] for hit in receiver.hits) == [0.5, 0.8, 0.9, 1.0]
    assert [hit.json["spent_usd"] for hit in sorted(receiver.hits, key=lambda h: h.json["threshold"])] == [
        nano_to_usd(2 * cost), nano_to_usd(4 * cost), nano_to_usd(4 * cost), nano_to_usd(4 * cost)]
    assert all("X-Farebox-Signature" not in hit.headers for hit in receiver.hits)   # no secret, no signature


def test_every_url_gets_its_own_delivery(make_stack, receivers):
    failing, healthy = receivers(failures=100), receivers()
    stack = make_stack(alert_webhook_urls=[failing.url, healthy.url], alert_max_attempts=2, alert_retry_base_s=0.01)
    set_budget(stack, request_cost(stack), thresholds=[1.0])
    chat(stack)
    drain(stack)
    assert len(failing.hits) == 2 and failing.accepted == []
    assert len(healthy.hits) == 1 and healthy.hits[0].body == failing.hits[0].body
    metrics = stack.services.metrics
    assert (alerts_metric(metrics, "100", "delivered"), alerts_metric(metrics, "100", "failed")) == (1, 1)


def test_the_next_period_alerts_again(make_stack, receivers):
    receiver = receivers()
    stack = make_stack(alert_webhook_urls=[receiver.url])
    set_budget(stack, 1000, "day", thresholds=[0.5])
    today = datetime(2026, 11, 23, 18, 30, tzinfo=timezone.utc).timestamp()
    for request_id, ts in (("r1", today), ("r2", today + 60), ("r3", today + 86400), ("r4", today + 86400 + 60)):
        # through the services, as a handler settles
        stack.run(stack.services.settle(event(request_id, Attribution("acme", "planner"), ts=ts, cost_nano=600)))
    drain(stack)
    assert [(hit.json["period_start"], hit.json["spent_usd"]) for hit in receiver.hits] == [
        ("2026-11-23T00:00:00Z", nano_to_usd(600)), ("2026-11-24T00:00:00Z", nano_to_usd(600))]


async def test_two_proxies_racing_across_thresholds_send_each_alert_once(make_stack, receivers):
    receiver = receivers()
    stacks = [make_stack(alert_webhook_urls=[receiver.url]) for _ in range(2)]   # same Redis, same prefix
    cost = request_cost(stacks[0])
    set_budget(stacks[0], 10 * cost)

    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(*(
            client.post(f"{stacks[i % 2].base_url}/chat/completions", json=BODY, headers=HEADERS) for i in range(24)))
    assert [r.status_code for r in responses] == [200] * 24
    for stack in stacks:
        drain(stack)
    assert sorted(hit.json["threshold"] for hit in receiver.hits) == [0.5, 0.8, 0.9, 1.0]
    crossed = [sum(alerts_metric(s.services.metrics, t, "crossed") for t in ("50", "80", "90", "100")) for s in stacks]
    assert sum(crossed) == 4


def test_a_soft_budget_alerts_past_its_limit(make_stack, receivers):
    receiver = receivers()
    stack = make_stack(alert_webhook_urls=[receiver.url])
    cost = request_cost(stack)
    set_budget(stack, cost, thresholds=[1.0, 2.0])
    responses = [chat(stack) for _ in range(3)]   # soft: never refused
    assert len(responses) == 3
    drain(stack)
    assert [(h.json["threshold"], h.json["percent"], h.json["mode"]) for h in receiver.hits] == [
        (1.0, 100, "soft"), (2.0, 200, "soft")]


def test_a_hanging_receiver_does_not_hold_up_requests(make_stack, receivers):
    receiver = receivers(gate=True)
    stack = make_stack(alert_webhook_urls=[receiver.url], alert_timeout_s=60)
    cost = request_cost(stack)
    set_budget(stack, cost + cost // 4)          # first request crosses 50 and 80 %, the second 90 and 100 %
    chat(stack)
    receiver.wait_hits(2)                        # both deliveries are stuck inside the receiver
    second = chat(stack)                         # and this request is answered all the same
    assert second.status_code == 200
    assert not receiver.gate.is_set() and receiver.accepted == []
    receiver.open_gate()
    drain(stack)
    assert sorted(hit.json["threshold"] for hit in receiver.accepted) == [0.5, 0.8, 0.9, 1.0]


def test_replayed_spooled_usage_alerts_too(make_stack, receivers, tmp_path):
    receiver = receivers()
    redis = EmbeddedRedis(tmp_path / "own-redis").start()
    try:
        stack = make_stack(redis_url=redis.url, fail_mode="open", alert_webhook_urls=[receiver.url])
        cost = request_cost(stack)
        set_budget(stack, 2 * cost, thresholds=[1.0])
        redis.stop()
        chat(stack)
        chat(stack)                              # spooled: Redis is down
        assert receiver.hits == []
        redis.start()
        deadline = time.monotonic() + 30
        while stack.run(stack.services.spool.pending()) and time.monotonic() < deadline:
            time.sleep(0.05)
        drain(stack)
        assert [hit.json["threshold"] for hit in receiver.hits] == [1.0]
    finally:
        redis.stop()


def test_without_webhooks_a_crossing_is_still_logged_and_counted(make_stack, caplog):
    caplog.set_level(logging.WARNING, logger="farebox")
    stack = make_stack()
    set_budget(stack, request_cost(stack), "total", mode="hard", thresholds=[1.0])
    chat(stack)
    assert alerts_metric(stack.services.metrics, "100", "crossed") == 1
    assert any(r.getMessage().startswith("budget project 'acme' crossed 100% of its total limit") and
               r.getMessage().endswith("never resets") for r in caplog.records)


# -- the dispatcher on its own ---------------------------------------------------------------


async def _deliver_once(url: str, **options) -> Metrics:
    metrics = Metrics()
    dispatcher = AlertDispatcher([url], metrics=metrics, base_delay_s=0.01, **options)
    await dispatcher.start()
    try:
        dispatcher.submit(CROSSING)
        await dispatcher.drain()
    finally:
        await dispatcher.close()
    return metrics


async def test_retries_until_the_receiver_accepts(receivers):
    receiver = receivers(failures=2)
    metrics = await _deliver_once(receiver.url, secret=SECRET)
    assert len(receiver.hits) == 3 and len(receiver.accepted) == 1
    assert len({hit.body for hit in receiver.hits}) == 1                       # the same alert each time
    assert len({hit.headers["X-Farebox-Alert-Id"] for hit in receiver.hits}) == 1
    assert all(verify(SECRET, hit.headers, hit.body) for hit in receiver.hits)
    assert (alerts_metric(metrics, "80", "delivered"), alerts_metric(metrics, "80", "failed")) == (1, 0)


async def test_a_429_is_retried(receivers):
    receiver = receivers(failures=1, status=429)
    metrics = await _deliver_once(receiver.url)
    assert len(receiver.hits) == 2 and alerts_metric(metrics, "80", "delivered") == 1


async def test_gives_up_after_max_attempts_and_says_so(receivers, caplog):
    receiver = receivers(failures=100, status=503)
    metrics = await _deliver_once(receiver.url, max_attempts=3)
    assert len(receiver.hits) == 3 and receiver.accepted == []
    assert (alerts_metric(metrics, "80", "delivered"), alerts_metric(metrics, "80", "failed")) == (0, 1)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    alert_id = receiver.hits[0].headers["X-Farebox-Alert-Id"]
    where = receiver.url.rpartition("/hooks")[0]
    assert errors == [f"alert {alert_id} (project 'acme' 80%) not delivered to {where}: gave up after 3 attempts "
                      f"(last: HTTP 503)"]


async def test_a_refusal_other_than_429_is_not_retried(receivers):
    receiver = receivers(failures=100, status=400)
    metrics = await _deliver_once(receiver.url)
    assert len(receiver.hits) == 1 and alerts_metric(metrics, "80", "failed") == 1


async def test_an_unreachable_receiver_is_retried_then_given_up(caplog):
    with socket.socket() as s:      # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics = await _deliver_once(f"http://127.0.0.1:{port}/hooks/farebox?token=s3cret", max_attempts=2)
    assert alerts_metric(metrics, "80", "failed") == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "gave up after 2 attempts (last: ClientConnectorError" in errors[0]
    assert "s3cret" not in errors[0]                                          # webhook paths stay out of logs


async def test_a_full_queue_drops_the_alert_and_counts_it(caplog):
    metrics = Metrics()
    dispatcher = AlertDispatcher(["http://127.0.0.1:9/hook"], metrics=metrics, queue_size=1)   # never started
    dispatcher.submit(CROSSING)
    dispatcher.submit(CROSSING)
    assert (alerts_metric(metrics, "80", "crossed"), alerts_metric(metrics, "80", "dropped")) == (2, 1)
    assert any("dropped" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_closing_abandons_what_cannot_be_delivered_in_time(receivers, caplog):
    receiver = receivers(gate=True)
    dispatcher = AlertDispatcher([receiver.url], metrics=Metrics(), timeout_s=60)
    await dispatcher.start()
    dispatcher.submit(CROSSING)
    await asyncio.to_thread(receiver.wait_hits, 1)
    await dispatcher.close(flush_s=0.05)
    assert any("1 alert deliveries not done" in r.getMessage() for r in caplog.records)
    receiver.open_gate()


# -- settings ---------------------------------------------------------------------------------


def test_webhook_urls_from_the_environment():
    env = {"FAREBOX_ALERT_WEBHOOK_URLS": "https://hooks.example.com/a, http://127.0.0.1:9000/b",
           "FAREBOX_ALERT_WEBHOOK_SECRET": "s", "FAREBOX_ALERT_MAX_ATTEMPTS": "3", "FAREBOX_ALERT_RETRY_BASE_S": "0.2"}
    settings = load_settings(env=env)
    assert settings.alert_webhook_urls == ["https://hooks.example.com/a", "http://127.0.0.1:9000/b"]
    assert settings.alert_webhook_secret.get_secret_value() == "s"
    assert (settings.alert_max_attempts, settings.alert_retry_base_s) == (3, 0.2)
    as_json = load_settings(env={"FAREBOX_ALERT_WEBHOOK_URLS": '["https://hooks.example.com/a"]'})
    assert as_json.alert_webhook_urls == ["https://hooks.example.com/a"]
    assert load_settings(env={}).alert_webhook_urls == []


@pytest.mark.parametrize("value", ["ftp://example.com/x", "hooks.example.com", "http://", "[\"http://a\"", "http://a b"])
def test_a_bad_webhook_url_names_the_setting(value):
    with pytest.raises(SettingsError, match="^invalid setting alert_webhook_urls: "):
        load_settings(env={"FAREBOX_ALERT_WEBHOOK_URLS": value})
