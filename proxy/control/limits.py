"""Rate limits, for the admin API and the CLI: a project's or a farebox key's requests and tokens
per minute, set, shown and removed.

A limit's body is ``{"rpm": N | null, "tpm": N | null}`` and replaces what was there (a field
left out or null: no limit of that kind). A project's limits live in the ledger beside its keys;
a key's are fields of its record (as ``farebox key create --rpm/--tpm`` set them). Either way the
keys' change counter moves, so every farebox process applies the change within a second.
"""

from __future__ import annotations

from typing import Any

from proxy.control.keys import KEY_ID_PATTERN, MAX_RATE
from proxy.domain import ID_PATTERN, ID_RULE
from proxy.errors import BadRequest, NotFound

__all__ = ["SCOPES", "set_limits", "show_limits", "delete_limits"]

SCOPES = ("project", "key")
_FIELDS = ("rpm", "tpm")


def _bad(param: str, message: str) -> BadRequest:
    return BadRequest(message, param=param, code="invalid_value")


def _checked(scope: str, scope_id: str) -> None:
    if scope not in SCOPES:
        raise _bad("scope", f"Unknown rate limit scope '{scope[:64]}': use project or key.")
    if scope == "project" and not ID_PATTERN.fullmatch(scope_id):
        raise _bad("id", f"Invalid project id '{scope_id[:64]}': ids are {ID_RULE}.")
    if scope == "key" and not KEY_ID_PATTERN.fullmatch(scope_id):
        raise _bad("id", f"Invalid key id '{scope_id[:64]}': key ids look like key_0123456789abcdef.")


def _rates(body: dict[str, Any]) -> tuple[int | None, int | None]:
    for name in body:
        if name not in _FIELDS:
            raise _bad(name, f"Unknown field '{name[:64]}': a rate limit takes rpm and tpm.")
    out: list[int | None] = []
    for name in _FIELDS:
        value = body.get(name)
        if value is not None and (type(value) is not int or not 1 <= value <= MAX_RATE):
            raise _bad(name, f"Invalid {name} {value!r:.100}: a whole number from 1 to {MAX_RATE}, or null for none.")
        out.append(value)
    return out[0], out[1]


def _view(scope: str, scope_id: str, rpm: int | None, tpm: int | None) -> dict[str, Any]:
    return {"scope": scope, "id": scope_id, "rpm": rpm, "tpm": tpm}


async def _key_rates(ledger: Any, key_id: str) -> tuple[int | None, int | None]:
    record = await ledger.key_record(key_id)
    if record is None:
        raise NotFound(f"No key '{key_id}'.", code="key_not_found")
    return (int(record["rpm"]) if record.get("rpm") else None, int(record["tpm"]) if record.get("tpm") else None)


async def set_limits(ledger: Any, scope: str, scope_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Replace the rate limits of a project or a key; returns them as they now stand."""
    _checked(scope, scope_id)
    rpm, tpm = _rates(body)
    if scope == "project":
        await ledger.set_project_limits(scope_id, rpm, tpm)
    else:
        await _key_rates(ledger, scope_id)  # 404 for a key that does not exist
        await ledger.change_key(scope_id, {"rpm": "" if rpm is None else str(rpm), "tpm": "" if tpm is None else str(tpm)})
    return _view(scope, scope_id, rpm, tpm)


async def show_limits(ledger: Any, scope: str, scope_id: str) -> dict[str, Any]:
    """The rate limits of a project (none set: both null) or a key (404 when there is no such key)."""
    _checked(scope, scope_id)
    if scope == "project":
        return _view(scope, scope_id, *await ledger.project_limits(scope_id))
    return _view(scope, scope_id, *await _key_rates(ledger, scope_id))


async def delete_limits(ledger: Any, scope: str, scope_id: str) -> dict[str, Any]:
    """Remove both rate limits of a project or a key."""
    return await set_limits(ledger, scope, scope_id, {})
