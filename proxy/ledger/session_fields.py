"""A session's usage: one hash per session (``Keys.session``), every period's bucket in it.

Sessions are the one usage scope with an aggregate per session of each of millions of
sessions, so theirs is laid out for memory: one key (not one per period), and short field
names. Each bucket's fields carry the bucket as a prefix:

    <tag><code>                 the bucket's totals
    <tag><model index><code>    its breakdown by model (requests, prompt, completion, cost), but
                                for the first model (index 1): its share is the totals less the
                                other models' (most sessions use one model, which then costs no
                                field of its own)
    @<model>                    → the model's index in this hash (1, 2, ...)
    @                           → how many models have an index

``<tag>`` is the bucket id (``periods.bucket_id``: ``h2026120210``, ``d20261202``,
``w2026W49``, ``m202612``; ids of one period have one length and sort in time order) and
``t`` for the total. ``<code>`` is one character per field (``CODES``). A session of one model
over one hour holds 20 such fields (4 per period) and 2 ``@`` fields.

This module is the one place on the Python side that knows the mapping; settle.lua and
migrate_session.lua spell it out at their top. Everything else reads and writes the fields
in the names every other aggregate uses (``requests``, ``cost``, ``m|<model>|cost``...).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable, Mapping

from proxy.ledger.periods import PERIODS, TOTAL, bucket_id

__all__ = ["CODES", "NAMES", "BREAKDOWN", "TOTAL_TAG", "MODEL_TAG", "tag", "field", "spend_field", "decode",
           "encode", "oldest_kept"]

# Field name -> its one-character code (settle.lua's ``codes``, migrate_session.lua's).
CODES: dict[str, str] = {"requests": "r", "prompt_tokens": "p", "completion_tokens": "c", "cached_tokens": "k",
                         "cache_creation_tokens": "w", "reasoning_tokens": "x", "cost": "$", "estimated": "e"}
NAMES: dict[str, str] = {code: name for name, code in CODES.items()}
# The fields of the breakdown by model (settle.lua's ``picked``).
BREAKDOWN: tuple[str, ...] = ("requests", "prompt_tokens", "completion_tokens", "cost")
TOTAL_TAG = "t"
MODEL_TAG = "@"
_BY_MODEL = "m|"


def tag(bucket: str) -> str:
    """The field prefix of ``bucket`` (a ``periods.bucket_id``)."""
    return TOTAL_TAG if bucket == TOTAL else bucket


def field(bucket: str, name: str) -> str:
    """The session field of ``name`` (a total, such as ``cost``) in ``bucket``."""
    return tag(bucket) + CODES[name]


def spend_field(bucket: str) -> str:
    """The field a session budget's spend is read from in ``bucket``."""
    return field(bucket, "cost")


def _tag_length(first: str) -> int:
    """The length of the tags that start with ``first`` (0: not a bucket's field)."""
    return _TAG_LENGTHS.get(first, 0)


_SAMPLE = datetime(2026, 1, 1, tzinfo=timezone.utc)
_TAG_LENGTHS = {bucket_id(p, _SAMPLE)[0]: len(bucket_id(p, _SAMPLE)) for p in PERIODS if p != TOTAL}
_TAG_LENGTHS[TOTAL_TAG] = len(TOTAL_TAG)


def decode(raw: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """A session hash's fields as ``{bucket id: {field: value}}``, each bucket's fields in the
    names of every other aggregate (``requests``, ``m|<model>|cost``...; zeros left out)."""
    models = {str(v): name[len(MODEL_TAG):] for name, v in raw.items()
              if name.startswith(MODEL_TAG) and len(name) > len(MODEL_TAG)}
    out: dict[str, dict[str, int]] = {}
    for name, value in raw.items():
        n = _tag_length(name[:1])
        if not n or len(name) <= n:
            continue
        prefix, index, code = name[:n], name[n:-1], name[-1]
        if code not in NAMES:
            continue
        bucket = TOTAL if prefix == TOTAL_TAG else prefix
        if index:
            model = models.get(index)
            if model is None or index == "1":
                continue
            out.setdefault(bucket, {})[f"{_BY_MODEL}{model}|{NAMES[code]}"] = value
        else:
            out.setdefault(bucket, {})[NAMES[code]] = value
    first = models.get("1")
    if first is not None:
        for fields in out.values():
            others = [f for f in fields if f.startswith(_BY_MODEL)]
            for what in BREAKDOWN:
                share = fields.get(what, 0) - sum(fields[f] for f in others if f.endswith(f"|{what}"))
                if share:
                    fields[f"{_BY_MODEL}{first}|{what}"] = share
    return out


def encode(buckets: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """``decode``'s inverse: the fields of a session hash holding ``buckets`` (bucket id →
    fields in the usual names; zeros and fields other than totals and ``m|`` are left out)."""
    index: dict[str, int] = {}
    out: dict[str, int] = {}
    for bucket, fields in buckets.items():
        prefix = tag(bucket)
        for name, value in fields.items():
            if not value:
                continue
            if name.startswith(_BY_MODEL):
                model, _, what = name[len(_BY_MODEL):].rpartition("|")
                if what not in CODES:
                    continue
                n = index.setdefault(model, len(index) + 1)
                if n > 1:  # the first model's share: the totals less the others'
                    out[f"{prefix}{n}{CODES[what]}"] = value
            elif name in CODES:
                out[prefix + CODES[name]] = value
    for model, n in index.items():
        out[MODEL_TAG + model] = n
    if index:
        out[MODEL_TAG] = len(index)
    return out


def oldest_kept(ts: float, ttls: Iterable[int | None], session_ttl: int | None) -> tuple[str, ...]:
    """Per period but the total (hour, day, week, month), the oldest bucket a session keeps at
    epoch time ``ts``: the bucket holding ``ts`` - min(period TTL, session TTL), whose last
    write may be that recent; "" where nothing expires. ``ttls``: in PERIODS order."""
    out = []
    for period, ttl in zip(PERIODS[:-1], ttls):
        if session_ttl and (not ttl or ttl > session_ttl):
            ttl = session_ttl
        out.append(bucket_id(period, datetime.fromtimestamp(ts - ttl, tz=timezone.utc)) if ttl else "")
    return tuple(out)
