"""Budget alerts: webhook and e-mail deliveries, off the request path.

The ledger decides *when*: ``settle.lua`` claims every alert threshold a request crossed, once
per threshold per period per budget, across all the proxy processes that share the Redis, and
hands the claims back as ``Crossing``s. This module only tells people:

- ``AlertDispatcher.submit`` logs the crossing, counts it, puts one delivery per webhook URL on
  a bounded queue and returns at once. A full queue drops the delivery (logged and counted)
  rather than hold up a request.
- One worker task per application takes deliveries off the queue and runs each as its own
  task (at most ``MAX_IN_FLIGHT`` at once), so a slow or dead receiver delays nobody else.
- A delivery is a JSON ``POST``. A 2xx answer delivers it; a connection error, a timeout, a 5xx
  or a 429 is retried with exponential backoff and jitter, up to ``max_attempts`` attempts in
  all; any other answer (a redirect, another 4xx) is final. Each outcome is logged and counted
  in ``farebox_alerts_total{scope, threshold, outcome}``.

The body (``payload``)::

    {"event": "budget.threshold_crossed", "alert_id": "<hex>", "scope": "project", "id": "acme",
     "mode": "hard", "threshold": 0.8, "percent": 80, "spent_usd": "40.01", "limit_usd": "50.00",
     "period": "month", "period_start": "2026-11-01T00:00:00Z", "resets_at": "2026-12-01T00:00:00Z",
     "occurred_at": "2026-11-23T18:30:12Z"}

Headers: ``Content-Type: application/json``, ``X-Farebox-Event``, ``X-Farebox-Alert-Id`` (the same
on every attempt and every URL: receivers can drop repeats), ``X-Farebox-Timestamp`` (epoch
seconds of the attempt) and, with a secret, ``X-Farebox-Signature: sha256=<hex>``: the
HMAC-SHA256, keyed with the secret, of the timestamp, a ``.``, and the body's exact bytes
(``sign``).

E-mail (with a ``mail`` server, ``smtp_url``): each crossing also queues one e-mail job. The job
reads the budget's ``alert_emails`` (``recipients``) when it runs and sends one message to all
of them (``proxy.control.mail``), with the same attempts, backoff and alert id as a webhook: a
connection problem, a timeout, a 4xx reply or a failed read of the recipients is retried, a
5xx reply is final. Outcomes are counted as ``emailed`` and ``email_failed``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable
from urllib.parse import urlsplit

import aiohttp

from pricing.money import nano_to_usd
from proxy.control import mail
from proxy.domain import Crossing, iso_utc
from proxy.metrics import Metrics

__all__ = ["AlertDispatcher", "MailSettings", "EVENT", "describe", "payload", "percent_label", "sign"]

log = logging.getLogger("farebox")

EVENT = "budget.threshold_crossed"
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BASE_DELAY_S = 0.5      # waits 0.5, 1, 2, 4 s (each jittered down by up to half) between attempts
MAX_DELAY_S = 60.0              # no wait between attempts is longer, whatever a Retry-After asks
DEFAULT_TIMEOUT_S = 5.0         # per attempt, connecting included
QUEUE_SIZE = 1000               # deliveries waiting for the worker; beyond that they are dropped
MAX_IN_FLIGHT = 16              # deliveries attempted (or waiting to retry) at once
FLUSH_S = 2.0                   # how long closing waits for pending deliveries

_ADJECTIVE = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly", "total": "total"}


def _percent(threshold: float) -> int | float:
    value = round(threshold * 100, 6)
    return int(value) if value == int(value) else value


def percent_label(threshold: float) -> str:
    """The threshold as the metric label and log text show it: ``80``, ``12.5``."""
    return str(_percent(threshold))


def describe(c: Crossing) -> str:
    """One line for the log: ``budget project 'acme' crossed 80% of its monthly limit: ...``."""
    kind = "soft budget" if c.mode == "soft" else "budget"
    resets = f"resets {iso_utc(c.resets_at)}" if c.resets_at is not None else "never resets"
    return (f"{kind} {c.scope} '{c.id}' crossed {percent_label(c.threshold)}% of its {_ADJECTIVE[c.period]} limit: "
            f"spent ${nano_to_usd(c.spent_nano)} of ${nano_to_usd(c.limit_nano)}; {resets}")


def payload(c: Crossing, *, alert_id: str, occurred_at: float) -> dict[str, Any]:
    """The JSON body of an alert (money as decimal USD strings, times as ISO 8601 UTC)."""
    return {
        "event": EVENT,
        "alert_id": alert_id,
        "scope": c.scope,
        "id": c.id,
        "mode": c.mode,
        "threshold": c.threshold,
        "percent": _percent(c.threshold),
        "spent_usd": nano_to_usd(c.spent_nano),
        "limit_usd": nano_to_usd(c.limit_nano),
        "period": c.period,
        "period_start": iso_utc(c.period_start),
        "resets_at": iso_utc(c.resets_at),
        "occurred_at": iso_utc(datetime.fromtimestamp(occurred_at, tz=timezone.utc)),
    }


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Farebox-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``timestamp.body``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _where(url: str) -> str:
    """A URL as logs show it: scheme, host and port only (webhook paths often hold tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


@dataclass(frozen=True, slots=True)
class _Delivery:
    url: str
    alert_id: str
    body: bytes
    scope: str
    threshold: str          # percent_label
    what: str               # "project 'acme' 80%", for log lines
    crossing: Crossing


@dataclass(frozen=True, slots=True)
class _Email:
    crossing: Crossing
    alert_id: str
    occurred_at: float
    scope: str
    threshold: str          # percent_label
    what: str


@dataclass(frozen=True, slots=True)
class MailSettings:
    """How alert e-mails are sent: the server, the sender, and where each budget's addresses
    are read (``recipients(scope, id)``)."""

    server: mail.SmtpServer
    sender: str
    recipients: Callable[[str, str], Awaitable[list[str]]]


class AlertDispatcher:
    """Delivers alerts to ``urls`` from a background task; ``start`` it, ``submit``, ``close``.

    With no URLs and no ``mail``, ``submit`` still logs and counts each crossing and nothing is
    started. ``session_factory`` makes the HTTP client session (tests pass their own).
    """

    def __init__(self, urls: Sequence[str], secret: str | None = None, *, metrics: Metrics,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, base_delay_s: float = DEFAULT_BASE_DELAY_S,
                 timeout_s: float = DEFAULT_TIMEOUT_S, queue_size: int = QUEUE_SIZE,
                 session_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
                 clock: Callable[[], float] = time.time, mail: MailSettings | None = None,
                 note: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts!r}")
        self.urls = tuple(urls)
        self._secret = secret.encode() if secret else None
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session_factory = session_factory
        self._clock = clock
        self.mail = mail
        self._note_to = note        # keeps what became of each delivery (project, entry)
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[_Delivery | _Email] = asyncio.Queue(maxsize=queue_size)
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if (self.urls or self.mail is not None) and self._worker is None:
            self._session = self._session_factory()
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="farebox-alerts")

    def submit(self, crossing: Crossing) -> None:
        """Log and count a crossing and queue its deliveries; never waits."""
        log.warning("%s", describe(crossing))
        threshold = percent_label(crossing.threshold)
        self.metrics.alerts.labels(crossing.scope, threshold, "crossed").inc()
        if not self.urls and self.mail is None:
            return
        alert_id = uuid.uuid4().hex
        occurred_at = self._clock()
        body = json.dumps(payload(crossing, alert_id=alert_id, occurred_at=occurred_at),
                          separators=(",", ":")).encode()
        what = f"{crossing.scope} '{crossing.id}' {threshold}%"
        jobs: list[tuple[_Delivery | _Email, str]] = [
            (_Delivery(url, alert_id, body, crossing.scope, threshold, what, crossing), _where(url))
            for url in self.urls]
        if self.mail is not None:
            jobs.append((_Email(crossing, alert_id, occurred_at, crossing.scope, threshold, what),
                         f"the e-mail addresses of {crossing.scope} '{crossing.id}'"))
        for job, where in jobs:
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                self.metrics.alerts.labels(crossing.scope, threshold, "dropped").inc()
                log.error("alert %s (%s) to %s dropped: %d deliveries are already waiting",
                          alert_id, what, where, self._queue.maxsize)

    async def drain(self) -> None:
        """Wait until every delivery submitted so far was delivered or given up."""
        await self._queue.join()
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self, flush_s: float = FLUSH_S) -> None:
        """Give pending deliveries up to ``flush_s`` seconds, then stop (what is left is logged)."""
        if self._worker is None:
            return
        try:
            await asyncio.wait_for(self.drain(), flush_s)
        except TimeoutError:
            left = self._queue.qsize() + len(self._tasks)
            log.error("shutting down with %d alert deliveries not done; they are abandoned", left)
        self._worker.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(self._worker, *self._tasks, return_exceptions=True)
        self._worker = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            delivery = await self._queue.get()
            job = self._deliver(delivery) if isinstance(delivery, _Delivery) else self._email(delivery)
            task = asyncio.get_running_loop().create_task(job)
            self._tasks.add(task)
            task.add_done_callback(self._finished)
            self._queue.task_done()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("alert delivery failed unexpectedly", exc_info=task.exception())

    def _headers(self, d: _Delivery) -> dict[str, str]:
        timestamp = str(int(self._clock()))
        headers = {"Content-Type": "application/json", "X-Farebox-Event": EVENT,
                   "X-Farebox-Alert-Id": d.alert_id, "X-Farebox-Timestamp": timestamp}
        if self._secret is not None:
            headers["X-Farebox-Signature"] = sign(self._secret, timestamp, d.body)
        return headers

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before attempt ``attempt + 1``: exponential, jittered down by up to half."""
        delay = min(MAX_DELAY_S, self.base_delay_s * 2 ** (attempt - 1))
        delay *= 1 - random.random() / 2
        if retry_after is not None:
            delay = max(delay, min(MAX_DELAY_S, retry_after))
        return delay

    async def _deliver(self, d: _Delivery) -> None:
        assert self._session is not None
        where = _where(d.url)
        problem = ""
        for attempt in range(1, self.max_attempts + 1):
            retry_after: float | None = None
            try:
                async with self._session.post(d.url, data=d.body, headers=self._headers(d), timeout=self._timeout,
                                              allow_redirects=False) as response:
                    status = response.status
                    await response.read()
                    if 200 <= status < 300:
                        self.metrics.alerts.labels(d.scope, d.threshold, "delivered").inc()
                        log.info("alert %s (%s) delivered to %s (attempt %d)", d.alert_id, d.what, where, attempt)
                        await self._note(d.crossing, d.alert_id, "webhook", where, "delivered", attempt, "")
                        return
                    problem = f"HTTP {status}"
                    if status != 429 and status < 500:
                        break  # the receiver refused it: asking again would not help
                    retry_after = _seconds(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt < self.max_attempts:
                delay = self._backoff(attempt, retry_after)
                log.debug("alert %s (%s) to %s: attempt %d failed (%s); next in %.2fs",
                          d.alert_id, d.what, where, attempt, problem, delay)
                await asyncio.sleep(delay)
        self.metrics.alerts.labels(d.scope, d.threshold, "failed").inc()
        log.error("alert %s (%s) not delivered to %s: gave up after %d attempt%s (last: %s)",
                  d.alert_id, d.what, where, attempt, "" if attempt == 1 else "s", problem)
        await self._note(d.crossing, d.alert_id, "webhook", where, "failed", attempt, problem)


    async def _email(self, e: _Email) -> None:
        """One e-mail to every address of the crossed budget, retried like a webhook."""
        assert self.mail is not None
        where = self.mail.server.where
        problem = ""
        recipients: list[str] | None = None
        for attempt in range(1, self.max_attempts + 1):
            retry = True
            try:
                if recipients is None:
                    recipients = await self.mail.recipients(e.crossing.scope, e.crossing.id)
                    if not recipients:
                        log.debug("alert %s (%s): no e-mail addresses on the budget", e.alert_id, e.what)
                        return
                message = mail.compose(e.crossing, alert_id=e.alert_id, occurred_at=e.occurred_at,
                                       sender=self.mail.sender, recipients=recipients)
                refused = await mail.send(self.mail.server, message, timeout_s=self._timeout_s)
                self.metrics.alerts.labels(e.scope, e.threshold, "emailed").inc()
                log.info("alert %s (%s) e-mailed to %s through %s (attempt %d)", e.alert_id, e.what,
                         ", ".join(a for a in recipients if a not in refused), where, attempt)
                if refused:
                    log.error("alert %s (%s): %s refused the address(es) %s", e.alert_id, e.what, where,
                              ", ".join(refused))
                await self._note(e.crossing, e.alert_id, "email", ", ".join(a for a in recipients if a not in refused),
                                 "delivered", attempt, f"refused: {', '.join(refused)}" if refused else "")
                return
            except mail.MailFailure as exc:
                problem, retry = str(exc), exc.retry
            except Exception as exc:  # noqa: BLE001 - the ledger's read of the addresses failed
                problem = f"reading the addresses: {type(exc).__name__}: {exc}"
            if not retry:
                break
            if attempt < self.max_attempts:
                delay = self._backoff(attempt, None)
                log.debug("alert %s (%s) e-mail: attempt %d failed (%s); next in %.2fs",
                          e.alert_id, e.what, attempt, problem, delay)
                await asyncio.sleep(delay)
        self.metrics.alerts.labels(e.scope, e.threshold, "email_failed").inc()
        log.error("alert %s (%s) not e-mailed through %s: gave up after %d attempt%s (last: %s)",
                  e.alert_id, e.what, where, attempt, "" if attempt == 1 else "s", problem)
        await self._note(e.crossing, e.alert_id, "email", ", ".join(recipients or ()) or where, "failed", attempt,
                         problem)

    async def _note(self, c: Crossing, alert_id: str, channel: str, to: str, outcome: str, attempts: int,
                    problem: str) -> None:
        """Keep what became of one delivery (``alert_log``); a failure to keep it is logged only."""
        if self._note_to is None:
            return
        entry = {"alert_id": alert_id, "at": round(self._clock(), 3), "scope": c.scope, "id": c.id,
                 "threshold": c.threshold, "period": c.period,
                 "period_start": iso_utc(c.period_start),
                 "channel": channel, "to": to, "outcome": outcome, "attempts": attempts, "problem": problem}
        try:
            await self._note_to(c.id.split("/", 1)[0], entry)
        except Exception as exc:  # noqa: BLE001 - Redis unavailable, say: the log line above says it all
            log.warning("alert %s: what became of its delivery was not kept (%s)", alert_id, exc)


def _seconds(value: str | None) -> float | None:
    """A Retry-After header given in seconds (the HTTP-date form is ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
