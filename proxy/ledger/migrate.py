"""The key layout moved on: what an earlier version left in Redis, rewritten once at start.

Layout 1 kept a session's usage in one hash per bucket (``fb:{p}:u:session:<bucket>:<id>``,
five per session); layout 2 keeps it in one hash per session (``Keys.session``,
``session_fields.py``). A session budget reads its spend from the new hash, so before farebox
serves, every old hash is added into its session's hash (``migrate_session.lua``: one
atomic call per old hash, which then goes) and ``fb:layout`` is set to 2, after which starts
skip the scan. Processes that start together may both scan: an old hash is moved by exactly
one call, the others find it gone. On a Redis Cluster the scan visits every master.

Stop every process of the earlier version before the first start of this one: what such a
process writes to the old hashes afterwards is not moved.
"""

from __future__ import annotations

from typing import Any

from proxy.ledger.errors import redis_errors, text
from proxy.ledger.keys import Keys
from proxy.ledger.session_fields import tag

__all__ = ["LAYOUT", "migrate_sessions", "old_session_key"]

LAYOUT = "2"
_SCAN_COUNT = 1000
_GLOB = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


def old_session_key(name: str, keys: Keys) -> tuple[str, str, str] | None:
    """(project, bucket, session) of a layout-1 session hash's name, or None when it is not one."""
    head = f"{keys.prefix}:{{"
    if not name.startswith(head):
        return None
    project, sep, rest = name[len(head):].partition("}:u:session:")
    bucket, colon, session = rest.partition(":")
    if not sep or not colon or not project or not bucket or not session:
        return None
    return project, bucket, session


async def migrate_sessions(redis: Any, keys: Keys, script: Any) -> int:
    """Move every layout-1 session hash into its session's hash, unless ``fb:layout`` says it
    was done; returns how many moved. ``script``: migrate_session.lua, registered."""
    with redis_errors():
        if text(await redis.get(keys.layout()) or b"") == LAYOUT:
            return 0
        moved = 0
        pattern = f"{keys.prefix.translate(_GLOB)}:{{*}}:u:session:*"
        async for raw in redis.scan_iter(match=pattern, count=_SCAN_COUNT):
            name = text(raw)
            found = old_session_key(name, keys)
            if found is None:
                continue
            project, bucket, session = found
            moved += int(await script(keys=[name, keys.session(project, session)], args=[tag(bucket)]))
        await redis.set(keys.layout(), LAYOUT)
    return moved
