"""Budget alerts by e-mail: the SMTP server (``smtp_url``), the message, and one attempt to send it.

``smtp_url`` names the server and how to reach it:

- ``smtp://host[:port]`` (port 25): plain SMTP, no TLS;
- ``smtp+starttls://host[:port]`` (port 587): upgraded with STARTTLS before anything is sent
  (the server must offer it);
- ``smtps://host[:port]`` (port 465): TLS from the first byte.

``user:password@`` before the host (percent-encoded where needed) logs in after the greeting
(and after TLS, with either TLS form). Certificates are checked against the system's CAs.

Sending uses ``aiosmtplib`` on the event loop: nothing blocks. ``MailFailure`` says whether a
failed attempt is worth retrying: a connection problem, a timeout or a 4xx (temporary) reply is;
a 5xx (permanent) reply to every recipient, the sender or the login is not. The alert
dispatcher (``proxy.control.alerts``) queues, retries and counts the deliveries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import unquote, urlsplit

import aiosmtplib

from pricing.money import nano_to_usd
from proxy.domain import Crossing, iso_utc

__all__ = ["SmtpServer", "MailFailure", "send", "compose", "check_address", "SCHEMES"]

# scheme → (default port, security)
SCHEMES: dict[str, tuple[int, str]] = {"smtp": (25, "plain"), "smtp+starttls": (587, "starttls"),
                                       "smtps": (465, "tls")}
# An address as budgets accept it: local part, "@", a domain of letters, digits and hyphens
# (dot-separated labels). No display names, no comments, no spaces or line breaks.
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
MAX_ADDRESS_LENGTH = 254
_ADJECTIVE = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly", "total": "total"}


def check_address(value: object) -> bool:
    """Whether ``value`` is an e-mail address budgets accept (``ops@example.com``)."""
    return isinstance(value, str) and len(value) <= MAX_ADDRESS_LENGTH and _ADDRESS.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where alert e-mails go, from ``smtp_url``."""

    host: str
    port: int
    security: str                       # plain, starttls or tls
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> "SmtpServer":
        """The server an ``smtp_url`` names; ValueError saying what to write when it names none."""
        parts = urlsplit(url.strip())
        if parts.scheme not in SCHEMES:
            raise ValueError("must be smtp://host[:port], smtp+starttls://host[:port] or smtps://host[:port], "
                             "optionally with user:password@ before the host")
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must name a host and nothing after it, e.g. smtp://mail.example.com:25")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        default_port, security = SCHEMES[parts.scheme]
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(parts.hostname, port or default_port, security, username, password)

    @property
    def where(self) -> str:
        """The server as logs show it (never the credentials)."""
        scheme = {v[1]: k for k, v in SCHEMES.items()}[self.security]
        return f"{scheme}://{self.host}:{self.port}"


class MailFailure(Exception):
    """An attempt to send failed; ``retry`` when another attempt may succeed."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def compose(c: Crossing, *, alert_id: str, occurred_at: float, sender: str, recipients: list[str]) -> EmailMessage:
    """The e-mail of one crossing: it names the project, the scope, the threshold and the spend."""
    project = c.id.partition("/")[0]
    adjective = _ADJECTIVE[c.period]
    percent = f"{round(c.threshold * 100, 6):g}%"
    kind = "soft" if c.mode == "soft" else "hard"
    occurred = datetime.fromtimestamp(occurred_at, tz=timezone.utc)
    since = f", since {iso_utc(c.period_start)}" if c.period_start is not None else ""
    msg = EmailMessage()
    msg["Subject"] = f"[farebox] {project}: {c.scope} '{c.id}' crossed {percent} of its {adjective} budget"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(occurred)
    msg["Message-ID"] = make_msgid(idstring=alert_id, domain="farebox")
    msg["X-Farebox-Alert-Id"] = alert_id
    msg.set_content("\n".join([
        "Budget alert from farebox.",
        "",
        f"Project:    {project}",
        f"Scope:      {c.scope} '{c.id}'",
        f"Threshold:  {percent} of the {adjective} limit ({kind} budget)",
        f"Spent:      ${nano_to_usd(c.spent_nano)} of ${nano_to_usd(c.limit_nano)} this period{since}",
        f"Resets:     {iso_utc(c.resets_at) or 'never'}",
        f"Occurred:   {iso_utc(occurred)}",
        f"Alert id:   {alert_id}",
        "",
    ]))
    return msg


def _temporary(code: int | None) -> bool:
    return code is None or 400 <= code < 500


async def send(server: SmtpServer, message: EmailMessage, *, timeout_s: float) -> list[str]:
    """One attempt to send ``message``; returns the recipients the server refused for good
    while it took the message for the others. Raises ``MailFailure`` when nobody got it."""
    try:
        refused, _ = await aiosmtplib.send(
            message, hostname=server.host, port=server.port, username=server.username, password=server.password,
            use_tls=server.security == "tls", start_tls=server.security == "starttls", timeout=timeout_s)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        raise MailFailure(f"every recipient refused ({', '.join(f'{r.code} {r.message}' for r in exc.recipients)})",
                          retry=any(_temporary(code) for code in codes)) from None
    except aiosmtplib.SMTPResponseException as exc:
        raise MailFailure(f"SMTP {exc.code} {exc.message}", retry=_temporary(exc.code)) from None
    except aiosmtplib.SMTPNotSupported as exc:
        raise MailFailure(f"not supported by the server: {exc}", retry=False) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise MailFailure(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, retry=True) from None
    return sorted(refused)
