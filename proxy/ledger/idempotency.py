"""Settled once: which request ids were recorded, kept only as long as a duplicate can arrive.

A settle can reach Redis twice: the pipe or redis-py sends it again after a lost connection
(seconds later), or the fail-open spool replays an event whose first settle did land but whose
reply was lost (as soon as Redis answers again). Each request therefore leaves a marker, and a
settle whose marker is already there changes nothing.

Markers are grouped by the time of the event they record (``UsageEvent.ts``, which a resend
and a spooled copy keep): one Redis set per project and slot of event time (``SLOT_S``, or the
window when that is shorter; a resend is found as long as the window is not changed),
``fb:{acme}:done:<slot start>``, holding a 96-bit digest of each request id (16 characters,
75 bytes a member in Redis 7.0; docs/scaling.md). A set lives the idempotency window after its
last write and then goes whole: memory follows the rate of requests times the window, not
history.

A duplicate arriving later than the window after the first settle of its request is no longer
recognised and would be recorded again. Inside farebox only one path can be that late: a
settle sent when Redis failed, whose reply was lost, spooled, and replayed after an outage
longer than the window. The spool looks such a late event up in its project's event stream
before settling it (``spool.py``, ``events.in_stream``), so it is recorded once unless the
stream was trimmed past it meanwhile. A spool replay that stops halfway resumes after the last
event it recorded, so it never replays what it already settled.
"""

from __future__ import annotations

from base64 import b64encode
from hashlib import blake2b

__all__ = ["SLOT_S", "DEFAULT_WINDOW_S", "marker", "slot", "slot_length"]

SLOT_S = 600                  # event time per done-set: a set never grows past 10 minutes of requests
DEFAULT_WINDOW_S = 900        # how long a done-set is kept after its last write


def marker(request_id: str) -> str:
    """The request id's member in its done-set: 96 bits of BLAKE2b in base64 (16 characters;
    a collision in one project's 10 minutes is about as likely as 1 in 10^16)."""
    return b64encode(blake2b(request_id.encode(), digest_size=12).digest()).decode()


def slot_length(window_s: int) -> int:
    """Seconds of event time per done-set for an idempotency window of ``window_s``."""
    return min(SLOT_S, window_s)


def slot(ts: float, length: int = SLOT_S) -> int:
    """The start (epoch seconds) of the slot of event time ``ts``."""
    return int(ts // length) * length
