"""Every Redis key farebox uses, built in one place.

All keys of a project carry the hash tag ``{project}``, so each multi-key script touches a
single Redis Cluster slot. The only keys without a tag are the set of known projects and the
layout version.

    fb:projects                              set    project ids seen (usage or budgets)
    fb:{acme}:events                         stream one entry per settled request
    fb:{acme}:done:<slot>                    set    markers of the requests settled in a time slot (idempotency.py)
    fb:{acme}:u:<scope>:<bucket>:<id>        hash   usage aggregate; scope project|agent|key|model
    fb:{acme}:s:<session>                    hash   a session's usage aggregates, every bucket of every period in
                                                    one hash (session_fields.py)
    fb:{acme}:top:session:<bucket>           zset   the costliest sessions of a bucket, by cost (nano)
    fb:{acme}:top:pruned:<hour bucket>       string present once the hour's rankings were pruned
    fb:{acme}:budgets                        set    "<scope>:<local id>" of the project's budgets
    fb:{acme}:budget:<scope>:<local id>      hash   budget config: limit (nano), period, mode, thresholds, alert_at, created_at,
                                                    alert_emails (a JSON list; absent when none)
    fb:{acme}:resv:<scope>:<local id>        zset   live reservations: request id → deadline (epoch ms)
    fb:{acme}:resv-amt:<scope>:<local id>    hash   request id → reserved nano; field "" = their running total
    fb:{acme}:alerted:<scope>:<local id>     hash   "<bucket>|<threshold>" → 1: alert thresholds crossed (claims)
    fb:{acme}:op:<operation id>              string reply of a lease grant or partial release (idempotency), with a TTL
    fb:{acme}:hold:<hold id>                 hash   a usage hold (holds.py): attribution, resource, unit price, most
                                                    quantity, reserved (nano), expires_at (ms), closed (once settled
                                                    or released); expires a day after the hold does
    fb:{acme}:alerts:sent                    list   what became of each alert delivery, newest first (alert_log.py)
    fb:layout                                string the version of the key layout (2: one hash per session;
                                                    sessions.py migrates version 1's at start)
    fb:{acme}:limits                         hash   the project's rate limits: rpm, tpm (absent = none)
    fb:{acme}:rl:<scope>:<minute>:<id>       hash   requests (r) and tokens (t) counted on a rate limit in a
                                                    minute (epoch seconds // 60); scope project|key; expires a
                                                    minute after the minute ends

``<id>`` / ``<local id>`` is the id inside the project: the project id itself for scope
``project``, the bare agent / session / key id, or the model name as priced (which may contain
``:`` and ``/``; it comes last so no key can be read two ways). Project, agent, session and key
ids are validated elsewhere to ``[A-Za-z0-9._@-]{1,128}``, so they never contain ``{``, ``}`` or ``:``.
"""

from __future__ import annotations

__all__ = ["Keys", "DEFAULT_PREFIX"]

DEFAULT_PREFIX = "fb"


class Keys:
    """Key names under one prefix (``fb`` unless tests or a shared Redis want another)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"invalid key prefix {prefix!r}: use a non-empty string without braces")
        self.prefix = prefix

    def key(self, project: str, *parts: str) -> str:
        """The one builder of project keys: ``<prefix>:{<project>}:<part>:<part>...``."""
        return f"{self.prefix}:{{{project}}}:" + ":".join(parts)

    def projects(self) -> str:
        return f"{self.prefix}:projects"

    def events(self, project: str) -> str:
        return self.key(project, "events")

    def done(self, project: str, slot: int) -> str:
        return self.key(project, "done", str(slot))

    def usage(self, project: str, scope: str, bucket: str, scope_id: str) -> str:
        return self.key(project, "u", scope, bucket, scope_id)

    def session(self, project: str, session: str) -> str:
        return self.key(project, "s", session)

    def layout(self) -> str:
        return f"{self.prefix}:layout"

    def top_sessions(self, project: str, bucket: str) -> str:
        return self.key(project, "top", "session", bucket)

    def top_pruned(self, project: str, hour_bucket: str) -> str:
        return self.key(project, "top", "pruned", hour_bucket)

    def budget_index(self, project: str) -> str:
        return self.key(project, "budgets")

    def budget(self, project: str, scope: str, local_id: str) -> str:
        return self.key(project, "budget", scope, local_id)

    def reservations(self, project: str, scope: str, local_id: str) -> str:
        return self.key(project, "resv", scope, local_id)

    def reservation_amounts(self, project: str, scope: str, local_id: str) -> str:
        return self.key(project, "resv-amt", scope, local_id)

    def op(self, project: str, op_id: str) -> str:
        return self.key(project, "op", op_id)

    def hold(self, project: str, hold_id: str) -> str:
        return self.key(project, "hold", hold_id)

    def limits(self, project: str) -> str:
        return self.key(project, "limits")

    def rate(self, project: str, scope: str, window: int, scope_id: str) -> str:
        return self.key(project, "rl", scope, str(window), scope_id)

    def alerted(self, project: str, scope: str, local_id: str) -> str:
        return self.key(project, "alerted", scope, local_id)
