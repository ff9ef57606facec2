"""An execution's cost summary (``GET /admin/executions/{project}/{execution}``): its LLM calls
and its usage records of compute, added up exactly.

An execution is a session: usage records name it in ``execution_id``, LLM calls with
``X-Session-Id`` (or the session header configured). The summary is the session's all-time
aggregate (which lives ``ttl_session_s`` after its last record), split by the breakdown by
model: models ``compute:<resource>`` are compute, the others LLM calls. The id is the session's
as budgets and reports write it: ``acme/job-7``.
"""

from __future__ import annotations

from typing import Any

from proxy.domain import USAGE_SCOPES, split_scope_id
from proxy.errors import BadRequest, NotFound
from proxy.ledger.ledger import Ledger
from proxy.ledger.reports import read_usage

__all__ = ["execution_summary"]


async def execution_summary(ledger: Ledger, execution_id: str) -> dict[str, Any]:
    """The cost of execution ``execution_id`` (``PROJECT/EXECUTION``): 400 for an id outside that
    form, 404 when nothing was recorded under it (or its aggregate expired)."""
    try:
        project, local = split_scope_id("session", execution_id, scopes=USAGE_SCOPES)
    except ValueError:
        raise BadRequest(f"Invalid execution id {execution_id[:140]!r}: write it as PROJECT/EXECUTION, e.g. "
                         "acme/job-7.", param="id", code="invalid_value") from None
    report = await read_usage(ledger, "session", execution_id, "total", top=0)
    if not report["requests"]:
        raise NotFound(f"No usage recorded for execution '{execution_id}' (LLM calls with X-Session-Id or usage "
                       "records with execution_id set to it).", param="id", code="execution_not_found")
    records = report["compute_records"]
    return {
        "execution_id": report["id"], "project": project, "execution": local,
        "cost_usd": report["cost_usd"], "llm_cost_usd": report["llm_cost_usd"],
        "compute_cost_usd": report["compute_cost_usd"],
        "llm": {"requests": report["requests"] - records, "prompt_tokens": report["prompt_tokens"],
                "completion_tokens": report["completion_tokens"], "cost_usd": report["llm_cost_usd"],
                "by_model": report["by_model"]},
        "compute": {"records": records, "cost_usd": report["compute_cost_usd"], "by_resource": report["by_resource"]},
    }

