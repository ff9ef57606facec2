"""Attribute: who is spending — project, agent, session and key — from the headers."""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from proxy.errors import BadRequest, Forbidden, InvalidId
from proxy.domain import Attribution
from proxy.domain import ID_PATTERN
from proxy.settings import Settings

__all__ = ["attribute", "attribute_key", "key_fingerprint"]

_ID_RULE = "ids are 1-128 characters of letters, digits and . _ - @"


def _checked(header: str, value: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        shown = value if value.isprintable() and value.isascii() and len(value) <= 140 else repr(value[:140])
        raise InvalidId(f"Invalid {header} header {shown!s}: {_ID_RULE}.", param=header)
    return value


def key_fingerprint(authorization: str | None) -> str | None:
    """A short, stable, non-reversible id for the client's API key (never the key itself): from
    ``Authorization: Bearer ...``, or Anthropic's ``x-api-key`` value."""
    if not authorization:
        return None
    token = authorization.removeprefix("Bearer ").strip()
    if not token:
        return None
    return "k" + hashlib.sha256(token.encode()).hexdigest()[:15]


def attribute(headers: Mapping[str, str], settings: Settings) -> Attribution:
    project = headers.get(settings.project_header)
    if project is None:
        if settings.default_project is None:
            raise BadRequest(f"Missing {settings.project_header} header: every request must name its project.",
                             param=settings.project_header, code="missing_project")
        project = settings.default_project
    agent = headers.get(settings.agent_header)
    session = headers.get(settings.session_header)
    if session is not None:
        session = _checked(settings.session_header, session)
    else:
        session = _client_session(headers, settings.client_session_headers)
    return Attribution(
        project=_checked(settings.project_header, project),
        agent=_checked(settings.agent_header, agent) if agent is not None else settings.default_agent,
        session=session,
        key_id=key_fingerprint(headers.get("Authorization") or headers.get("x-api-key")),
    )


def attribute_key(headers: Mapping[str, str], settings: Settings, key: Any) -> Attribution:
    """Who pays for a request presenting a farebox key (``proxy.keyauth.ResolvedKey``): the key's
    project, the key's agent when it is pinned to one, the key's id. A header naming another
    project (or, for a pinned key, another agent) is a 403: the key decides, not the client."""
    project = headers.get(settings.project_header)
    if project is not None and project != key.project:
        raise Forbidden(f"This farebox key belongs to project '{key.project}'; the {settings.project_header} header "
                        "names another. Leave the header out or name the key's project.",
                        param=settings.project_header, code="project_mismatch")
    agent = headers.get(settings.agent_header)
    if key.agent is not None:
        if agent is not None and agent != key.agent:
            raise Forbidden(f"This farebox key belongs to agent '{key.agent}'; the {settings.agent_header} header "
                            "names another. Leave the header out or name the key's agent.",
                            param=settings.agent_header, code="agent_mismatch")
        agent = key.agent
    elif agent is not None:
        agent = _checked(settings.agent_header, agent)
    session = headers.get(settings.session_header)
    if session is not None:
        session = _checked(settings.session_header, session)
    else:
        session = _client_session(headers, settings.client_session_headers)
    return Attribution(project=key.project, agent=agent if agent is not None else settings.default_agent,
                       session=session, key_id=key.id)


def _client_session(headers: Mapping[str, str], names: list[str]) -> str | None:
    """The session a coding agent names in a header of its own (Claude Code's
    ``x-claude-code-session-id``, Codex's ``session-id``), the first of ``names`` present. A value
    outside the id rule is not the client's fault: it is passed over, not refused."""
    for name in names:
        value = headers.get(name)
        if value is not None and ID_PATTERN.fullmatch(value):
            return value
    return None
