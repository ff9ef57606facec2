"""Budget alerts by e-mail: thresholds crossed by real requests, sent through farebox's SMTP
client to a real SMTP server (aiosmtpd) on 127.0.0.1: one message per threshold, its content,
retries after a refusal, and the budget field's validation over the admin API."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
import time
from dataclasses import dataclass

import httpx
import pytest
from aiosmtpd.controller import Controller

from pricing.money import nano_to_usd, usd_to_nano
from proxy.control.alerts import AlertDispatcher, MailSettings
from proxy.control.mail import SmtpServer, check_address
from proxy.metrics import Metrics
from proxy.settings import SettingsError, load_settings
from tests.test_alerts import CROSSING, alerts_metric, chat, drain, receivers, request_cost  # noqa: F401 (a fixture)

ADMIN = {"Authorization": "Bearer admin-secret"}


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage


class Inbox:
    """An aiosmtpd handler that keeps every message; it answers ``code`` to the first
    ``refusals`` DATA commands instead of taking the message."""

    def __init__(self, refusals: int = 0, code: str = "451 4.3.0 Try again later") -> None:
        self.refusals, self.code = refusals, code
        self.attempts = 0
        self.messages: list[Received] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.attempts += 1
        if self.attempts <= self.refusals:
            return self.code
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    """Start a real SMTP server: ``smtp(refusals=..., code=...)`` → (url, inbox)."""
    controllers: list[Controller] = []

    def start(**options) -> tuple[str, Inbox]:
        inbox = Inbox(**options)
        port = _free_port()
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append(controller)
        return f"smtp://127.0.0.1:{port}", inbox

    try:
        yield start
    finally:
        for controller in controllers:
            controller.stop()


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- through the proxy ----------------------------------------------------------------------


def test_each_threshold_sends_one_email_naming_project_scope_threshold_and_spend(make_stack, smtp):
    url, inbox = smtp()
    stack = make_stack(smtp_url=url, smtp_from="alerts@farebox.example", admin_token="admin-secret")
    cost = request_cost(stack)
    limit = 4 * cost                                 # thresholds at 2, 3.2, 3.6 and 4 requests
    put = httpx.put(f"{stack.url}/admin/budgets/agent/acme/planner", headers=ADMIN, json={
        "limit_usd": nano_to_usd(limit), "period": "month", "mode": "soft",
        "alert_emails": ["ops@example.com", "finance@example.org"]})
    assert put.status_code == 200, put.text
    assert put.json()["alert_emails"] == ["ops@example.com", "finance@example.org"]
    for _ in range(6):
        chat(stack)
    drain(stack)
    assert len(inbox.messages) == 4                   # one per threshold, however many requests follow
    by_threshold = sorted(inbox.messages, key=lambda m: float(m.message["Subject"].split(" crossed ")[1].split("%")[0]))
    spent = [2 * cost, 4 * cost, 4 * cost, 4 * cost]
    for received, percent, spend in zip(by_threshold, ("50", "80", "90", "100"), spent):
        m = received.message
        assert received.mail_from == "alerts@farebox.example"
        assert received.rcpt_tos == ["ops@example.com", "finance@example.org"]
        assert m["From"] == "alerts@farebox.example" and m["To"] == "ops@example.com, finance@example.org"
        assert " ".join(m["Subject"].split()) == f"[farebox] acme: agent 'acme/planner' crossed {percent}% of its monthly budget"
        body = m.get_content().splitlines()
        assert body[2:6] == [
            "Project:    acme",
            "Scope:      agent 'acme/planner'",
            f"Threshold:  {percent}% of the monthly limit (soft budget)",
            f"Spent:      ${nano_to_usd(spend)} of ${nano_to_usd(limit)} this period, since "
            f"{body[5].rsplit(' ', 1)[1]}",
        ]
        assert body[5].endswith("-01T00:00:00Z")
        assert body[8] == f"Alert id:   {m['X-Farebox-Alert-Id']}"
    assert len({m.message["X-Farebox-Alert-Id"] for m in inbox.messages}) == 4
    metrics = stack.services.metrics
    assert [alerts_metric(metrics, t, "emailed", scope="agent") for t in ("50", "80", "90", "100")] == [1, 1, 1, 1]


def test_an_email_goes_with_the_webhook_under_the_same_alert_id(make_stack, smtp, receivers):
    url, inbox = smtp()
    receiver = receivers()
    stack = make_stack(smtp_url=url, alert_webhook_urls=[receiver.url])
    stack.run(stack.services.ledger.set_budget("project", "acme", request_cost(stack), "total", "soft",
                                               thresholds=[1.0], alert_emails=["ops@example.com"]))
    chat(stack)
    drain(stack)
    assert len(receiver.hits) == 1 and len(inbox.messages) == 1
    assert inbox.messages[0].message["X-Farebox-Alert-Id"] == receiver.hits[0].json["alert_id"]


def test_a_budget_without_addresses_sends_no_email(make_stack, smtp):
    url, inbox = smtp()
    stack = make_stack(smtp_url=url)
    stack.run(stack.services.ledger.set_budget("project", "acme", request_cost(stack), "total", "soft",
                                               thresholds=[1.0]))
    chat(stack)
    drain(stack)
    assert inbox.attempts == 0 and inbox.messages == []
    assert alerts_metric(stack.services.metrics, "100", "crossed") == 1


def test_replacing_a_budget_without_alert_emails_removes_them(make_stack):
    stack = make_stack(admin_token="admin-secret")
    path = f"{stack.url}/admin/budgets/project/acme"
    httpx.put(path, headers=ADMIN, json={"limit_usd": "5", "alert_emails": ["ops@example.com", "ops@example.com"]})
    assert httpx.get(path, headers=ADMIN).json()["alert_emails"] == ["ops@example.com"]   # repeats dropped
    listed = httpx.get(f"{stack.url}/admin/budgets", headers=ADMIN).json()["budgets"]
    assert [b["alert_emails"] for b in listed] == [["ops@example.com"]]
    httpx.put(path, headers=ADMIN, json={"limit_usd": "5"})
    status = httpx.get(path, headers=ADMIN).json()
    assert status["alert_emails"] == []
    assert list(status)[5:7] == ["alert_thresholds", "alert_emails"]


@pytest.mark.parametrize(("value", "message"), [
    ("ops@example.com", 'Invalid alert_emails: a list of e-mail addresses such as ["ops@example.com"].'),
    (["not-an-address"], "Invalid alert_emails: 'not-an-address' is not an e-mail address such as ops@example.com."),
    (["ops@example.com", "Ops <ops@example.com>"],
     "Invalid alert_emails: 'Ops <ops@example.com>' is not an e-mail address such as ops@example.com."),
    (["ops@example.com\r\nBcc: x@example.com"],
     "Invalid alert_emails: 'ops@example.com\\r\\nBcc: x@example.com' is not an e-mail address such as "
     "ops@example.com."),
    ([42], "Invalid alert_emails: 42 is not an e-mail address such as ops@example.com."),
    (["a@b.example"] * 21, "Invalid alert_emails: at most 20 addresses, not 21."),
])
def test_bad_alert_emails_are_400_naming_the_field(make_stack, value, message):
    stack = make_stack(admin_token="admin-secret")
    response = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                         json={"limit_usd": "5", "alert_emails": value})
    assert response.status_code == 400
    assert response.json() == {"error": {"message": message, "type": "invalid_request_error", "param": "alert_emails",
                                         "code": "invalid_value"}}
    assert httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).status_code == 404


# -- the dispatcher on its own ---------------------------------------------------------------


async def _email_once(url: str, addresses: list[str], **options) -> Metrics:
    metrics = Metrics()

    async def recipients(scope: str, scope_id: str) -> list[str]:
        assert (scope, scope_id) == ("project", "acme")
        return addresses

    mail = MailSettings(SmtpServer.from_url(url), "farebox@localhost", recipients)
    dispatcher = AlertDispatcher([], metrics=metrics, base_delay_s=0.01, mail=mail, **options)
    await dispatcher.start()
    try:
        dispatcher.submit(CROSSING)
        await dispatcher.drain()
    finally:
        await dispatcher.close()
    return metrics


async def test_a_temporary_refusal_is_retried_and_the_email_sent_once(smtp, caplog):
    caplog.set_level(logging.INFO, logger="farebox")
    url, inbox = smtp(refusals=1)
    metrics = await _email_once(url, ["ops@example.com"])
    assert inbox.attempts == 2 and len(inbox.messages) == 1
    assert (alerts_metric(metrics, "80", "emailed"), alerts_metric(metrics, "80", "email_failed")) == (1, 0)
    body = inbox.messages[0].message.get_content()
    assert "Spent:      $40.01 of $50.00 this period, since 2026-11-01T00:00:00Z" in body
    assert "Resets:     2026-12-01T00:00:00Z" in body
    assert any(r.getMessage().endswith(f"e-mailed to ops@example.com through {url} (attempt 2)")
               for r in caplog.records)


async def test_a_permanent_refusal_is_not_retried(smtp, caplog):
    url, inbox = smtp(refusals=100, code="554 5.7.1 Rejected")
    metrics = await _email_once(url, ["ops@example.com"])
    assert inbox.attempts == 1 and inbox.messages == []
    assert alerts_metric(metrics, "80", "email_failed") == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].endswith(
        f"not e-mailed through {url}: gave up after 1 attempt (last: SMTP 554 5.7.1 Rejected)")


async def test_an_unreachable_server_is_retried_then_given_up(caplog):
    url = f"smtp://127.0.0.1:{_free_port()}"
    metrics = await _email_once(url, ["ops@example.com"], max_attempts=3)
    assert alerts_metric(metrics, "80", "email_failed") == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "gave up after 3 attempts" in errors[0]


# -- settings ---------------------------------------------------------------------------------


def test_smtp_url_forms():
    assert SmtpServer.from_url("smtp://mail.example.com") == SmtpServer("mail.example.com", 25, "plain")
    assert SmtpServer.from_url("smtp+starttls://bob:p%40ss@mail.example.com") == SmtpServer(
        "mail.example.com", 587, "starttls", "bob", "p@ss")
    server = SmtpServer.from_url("smtps://bob:secret@mail.example.com:2465")
    assert (server.port, server.security, server.where) == (2465, "tls", "smtps://mail.example.com:2465")
    settings = load_settings(env={"FAREBOX_SMTP_URL": "smtp://127.0.0.1:2525", "FAREBOX_SMTP_FROM": "fb@example.com"})
    assert settings.smtp_url.get_secret_value() == "smtp://127.0.0.1:2525" and settings.smtp_from == "fb@example.com"
    assert load_settings(env={}).smtp_url is None


@pytest.mark.parametrize(("value", "message"), [
    ("http://mail.example.com", "must be smtp://host[:port], smtp+starttls://host[:port] or smtps://host[:port], "
                                "optionally with user:password@ before the host"),
    ("smtp://", "must name a host and nothing after it, e.g. smtp://mail.example.com:25"),
    ("smtp://mail.example.com/inbox", "must name a host and nothing after it, e.g. smtp://mail.example.com:25"),
    ("smtp://mail.example.com:99999", "has an invalid port"),
])
def test_a_bad_smtp_url_names_the_setting(value, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"FAREBOX_SMTP_URL": value})
    assert str(caught.value) == f"invalid setting smtp_url: {message}"


def test_a_bad_sender_names_the_setting():
    with pytest.raises(SettingsError, match="^invalid setting smtp_from: 'farebox' is not an e-mail address"):
        load_settings(env={"FAREBOX_SMTP_FROM": "farebox"})


@pytest.mark.parametrize("address", ["ops@example.com", "a.b+c@mail.example.org", "root@localhost"])
def test_addresses_budgets_accept(address):
    assert check_address(address)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_credentials_in_the_url_log_in_first(smtp_auth):
    url, inbox, logins = smtp_auth("alerts", "p@ss word")
    user_url = url.replace("smtp://", "smtp://alerts:p%40ss%20word@")
    metrics = await _email_once(user_url, ["ops@example.com"])
    assert logins == [("alerts", "p@ss word")] and len(inbox.messages) == 1
    assert alerts_metric(metrics, "80", "emailed") == 1


@pytest.fixture
def smtp_auth():
    """A real SMTP server that requires a login (over plain SMTP, for the test: it warns about that)."""
    from aiosmtpd.smtp import AuthResult

    controllers: list[Controller] = []

    def start(user: str, password: str) -> tuple[str, Inbox, list[tuple[str, str]]]:
        inbox, logins = Inbox(), []

        def authenticator(server, session, envelope, mechanism, auth_data):
            given = (auth_data.login.decode(), auth_data.password.decode())
            logins.append(given)
            return AuthResult(success=given == (user, password))

        port = _free_port()
        controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=authenticator,
                                auth_required=True, auth_require_tls=False)
        controller.start()
        controllers.append(controller)
        return f"smtp://127.0.0.1:{port}", inbox, logins

    try:
        yield start
    finally:
        for controller in controllers:
            controller.stop()
