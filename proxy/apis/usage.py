"""OpenAI's ``usage`` object, in either naming (chat's ``prompt_tokens`` / ``completion_tokens``,
the Responses API's ``input_tokens`` / ``output_tokens``), as ``Usage``."""

from __future__ import annotations

from typing import Any

from pricing.cost import Usage

__all__ = ["usage_from_object"]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_object(usage: Any) -> Usage | None:
    """An OpenAI ``usage`` object (chat or responses naming) as ``Usage``; None if absent."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    if not isinstance(prompt_details, dict):
        prompt_details = {}
    if not isinstance(completion_details, dict):
        completion_details = {}
    cached = _int(prompt_details.get("cached_tokens"))
    # Some OpenAI-compatible gateways report cache writes at the top level.
    creation = _int(usage.get("cache_creation_input_tokens") or prompt_details.get("cache_creation_tokens"))
    return Usage(
        prompt_tokens=_int(prompt),
        completion_tokens=_int(completion),
        cached_tokens=cached,
        cache_creation_tokens=creation,
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
    )
