"""farebox keys: issued, listed, shown, revoked and rotated, for the admin API and the CLI.

A key's secret is ``fbk_``, its id's 16 hex digits, then 43 random URL-safe characters (256
bits from ``secrets``). It is shown once, when the key is created or rotated; the ledger keeps
only its SHA-256. A plain hash is enough here, where a password would need a slow one: nobody
chooses these secrets, so there is no dictionary to try, and 256 random bits cannot be searched
whatever the hash costs; a fast hash keeps checking a key cheap on every request.

The id inside the secret tells farebox which record to read, so resolving a key is one read of
one record, and the hash is then compared in constant time. The key id (``key_`` and the same 16
hex digits) is what events, budgets (scope ``key``, id ``PROJECT/KEY_ID``) and the API name;
it is not a credential.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any

import orjson

from proxy.domain import ID_PATTERN, ID_RULE, iso_utc
from proxy.errors import BadRequest, NotFound

__all__ = ["SECRET_PREFIX", "KEY_ID_PATTERN", "secret_hash", "key_id_of", "parse_duration", "create_key",
           "list_keys", "show_key", "revoke_key", "rotate_key", "key_view", "MAX_PATTERNS"]

SECRET_PREFIX = "fbk_"
KEY_ID_PATTERN = re.compile(r"key_[0-9a-f]{16}")
_SECRET = re.compile(r"fbk_([0-9a-f]{16})[A-Za-z0-9_-]{43}")
_DURATION = re.compile(r"([1-9][0-9]{0,9})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_EXPIRY_S = 10 * 366 * 86400
MAX_PATTERNS = 100
MAX_NAME = 200
MAX_RATE = 1_000_000_000
_FIELDS = ("project", "agent", "name", "models", "rpm", "tpm", "expires_in")


def secret_hash(secret: str) -> str:
    """What the ledger keeps of a secret: its SHA-256, in hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_of(secret: str) -> str | None:
    """The id of the key a secret claims to be (None: not a farebox key's form)."""
    found = _SECRET.fullmatch(secret)
    return f"key_{found.group(1)}" if found else None


def _new_secret(key_id: str) -> str:
    return SECRET_PREFIX + key_id.removeprefix("key_") + secrets.token_urlsafe(32)


def parse_duration(value: object, param: str = "expires_in") -> int:
    """Seconds from ``90s``, ``15m``, ``12h`` or ``30d`` (at most ten years)."""
    found = _DURATION.fullmatch(value) if isinstance(value, str) else None
    seconds = int(found.group(1)) * _UNIT_S[found.group(2)] if found else 0
    if not found or seconds > MAX_EXPIRY_S:
        raise BadRequest(f"Invalid {param} {_shown(value)}: use a duration such as 90s, 15m, 12h or 30d "
                         "(at most ten years).", param=param, code="invalid_value")
    return seconds


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else orjson.dumps(value).decode()[:100]


def _bad(param: str, message: str) -> BadRequest:
    return BadRequest(message, param=param, code="invalid_value")


def _checked_id(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _bad(name, f"'{name}' is required: the {name} the key is bound to.")
        return None
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise _bad(name, f"Invalid {name} {_shown(value)}: ids are {ID_RULE}.")
    return value


def _checked_rate(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_RATE:
        raise _bad(name, f"Invalid {name} {_shown(value)}: a whole number from 1 to {MAX_RATE}.")
    return value


def _checked_models(body: dict[str, Any]) -> list[str] | None:
    value = body.get("models")
    if value is None:
        return None
    if (not isinstance(value, list) or not value or len(value) > MAX_PATTERNS
            or not all(isinstance(p, str) and p.strip() and len(p) <= 256 for p in value)):
        raise _bad("models", f"Invalid models {_shown(value)}: a list of 1 to {MAX_PATTERNS} model names or glob "
                             "patterns such as [\"gpt-4o-mini\", \"claude-*\"]; leave it out to allow every model.")
    return value


def _checked_body(body: dict[str, Any]) -> dict[str, Any]:
    for name in body:
        if name not in _FIELDS:
            raise _bad(name, f"Unknown field '{name}': a key takes {', '.join(_FIELDS)}.")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable()):
        raise _bad("name", f"Invalid name {_shown(name)}: printable text of at most {MAX_NAME} characters.")
    expires_in = body.get("expires_in")
    return {"project": _checked_id(body, "project", required=True), "agent": _checked_id(body, "agent"),
            "name": name, "models": _checked_models(body), "rpm": _checked_rate(body, "rpm"),
            "tpm": _checked_rate(body, "tpm"),
            "expires_in_s": parse_duration(expires_in) if expires_in is not None else None}


def _opt(value: object) -> str:
    return "" if value is None else str(value)


def _iso(epoch: str) -> str | None:
    return iso_utc(datetime.fromtimestamp(int(epoch), timezone.utc)) if epoch else None


def key_view(key_id: str, record: dict[str, str], now: float | None = None) -> dict[str, Any]:
    """What the API shows of a key: never its secret, never its hash. ``state`` is ``active``,
    ``revoked`` or ``expired``."""
    now = time.time() if now is None else now
    expires = record.get("expires_at", "")
    state = ("revoked" if record.get("revoked_at") else
             "expired" if expires and int(expires) <= now else "active")
    models = record.get("models", "")
    return {"id": key_id, "project": record["project"], "agent": record.get("agent") or None,
            "name": record.get("name") or None, "models": orjson.loads(models) if models else None,
            "rpm": int(record["rpm"]) if record.get("rpm") else None,
            "tpm": int(record["tpm"]) if record.get("tpm") else None,
            "expires_at": _iso(expires), "created_at": _iso(record.get("created_at", "")),
            "revoked_at": _iso(record.get("revoked_at", "")), "rotated_at": _iso(record.get("rotated_at", "")),
            "state": state}


def _issued(key_id: str, secret: str, record: dict[str, str]) -> dict[str, Any]:
    """The answer of a create or rotate: the secret (this once) and what a create's 201 lists."""
    view = key_view(key_id, record)
    return {"id": key_id, "key": secret, **{k: view[k] for k in ("project", "agent", "name", "models", "rpm",
                                                                    "tpm", "expires_at", "created_at")}}


async def create_key(ledger: Any, body: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """Issue a key from the admin API's body; the answer holds its secret, shown this once."""
    given = _checked_body(body)
    now = int(time.time() if now is None else now)
    key_id = "key_" + secrets.token_hex(8)
    secret = _new_secret(key_id)
    expires = given["expires_in_s"]
    record = {"hash": secret_hash(secret), "project": given["project"], "agent": _opt(given["agent"]),
              "name": _opt(given["name"]),
              "models": orjson.dumps(given["models"]).decode() if given["models"] is not None else "",
              "rpm": _opt(given["rpm"]), "tpm": _opt(given["tpm"]),
              "expires_at": str(now + expires) if expires is not None else "", "created_at": str(now),
              "revoked_at": "", "rotated_at": ""}
    await ledger.add_key(key_id, record, given["project"])
    return _issued(key_id, secret, record)


def _check_key_id(key_id: str) -> str:
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise _bad("id", f"Invalid key id {_shown(key_id)}: key ids look like key_0123456789abcdef.")
    return key_id


def _not_found(key_id: str) -> NotFound:
    return NotFound(f"No key '{key_id}'.", code="key_not_found")


async def list_keys(ledger: Any, project: str) -> list[dict[str, Any]]:
    """Every key of ``project`` (revoked and expired ones too, with their state)."""
    if not ID_PATTERN.fullmatch(project):
        raise _bad("project", f"Invalid project {_shown(project)}: ids are {ID_RULE}.")
    return [key_view(record["id"], record) for record in await ledger.project_keys(project)]


async def show_key(ledger: Any, key_id: str) -> dict[str, Any]:
    record = await ledger.key_record(_check_key_id(key_id))
    if record is None:
        raise _not_found(key_id)
    return key_view(key_id, record)


async def revoke_key(ledger: Any, key_id: str, now: float | None = None) -> dict[str, Any]:
    """Stop a key for good (every farebox process refuses it within a second); revoking it
    again changes nothing."""
    record = await ledger.key_record(_check_key_id(key_id))
    if record is None:
        raise _not_found(key_id)
    if not record.get("revoked_at"):
        record = await ledger.change_key(key_id, {"revoked_at": str(int(time.time() if now is None else now))})
        if record is None:
            raise _not_found(key_id)
    return key_view(key_id, record)


async def rotate_key(ledger: Any, key_id: str, now: float | None = None) -> dict[str, Any]:
    """A new secret for the same key (same id, project, limits and budgets); the old secret stops
    working on every farebox process within a second. A revoked key cannot be rotated."""
    record = await ledger.key_record(_check_key_id(key_id))
    if record is None:
        raise _not_found(key_id)
    if record.get("revoked_at"):
        raise _bad("id", f"Key '{key_id}' is revoked: create a new key instead.")
    secret = _new_secret(key_id)
    changed = await ledger.change_key(key_id, {"hash": secret_hash(secret),
                                               "rotated_at": str(int(time.time() if now is None else now))})
    if changed is None:
        raise _not_found(key_id)
    return _issued(key_id, secret, changed)
