"""Step 1, parse: the request body becomes a validated ``ChatRequest`` or a 400.

Only what farebox needs is checked (the upstream validates the rest): a JSON object with a
string ``model``, a list ``messages`` and well-typed ``stream``, ``stream_options``,
``max_tokens`` / ``max_completion_tokens`` and ``n``. Nothing is forwarded or recorded
for a body that fails here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import BadRequest

__all__ = ["ChatRequest", "parse_chat", "parse_json_object"]


@dataclass(slots=True)
class ChatRequest:
    """A chat completions request as farebox sees it."""

    body: dict[str, Any]
    model: str
    stream: bool
    client_wants_usage: bool  # the client itself asked for stream_options.include_usage
    max_output: int | None    # max_completion_tokens, else max_tokens, as the client sent it
    max_output_field: str     # which of the two to lower when clamping
    n: int


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object, not {_json_type(body)}.", code="invalid_json")
    return body


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"Invalid type for '{name}': expected an integer, got {_json_type(value)}.",
                         param=name, code="invalid_type")
    if value < 1:
        raise BadRequest(f"Invalid value for '{name}': must be at least 1, got {value}.",
                         param=name, code="invalid_value")
    return value


def parse_chat(raw: bytes) -> ChatRequest:
    body = parse_json_object(raw)
    model = body.get("model")
    if model is None:
        raise BadRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest(f"Invalid type for 'model': expected a non-empty string, got {_json_type(model)}.",
                         param="model", code="invalid_type")
    if "messages" not in body:
        raise BadRequest("Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    if not isinstance(body["messages"], list):
        raise BadRequest(f"Invalid type for 'messages': expected an array, got {_json_type(body['messages'])}.",
                         param="messages", code="invalid_type")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest(f"Invalid type for 'stream': expected a boolean, got {_json_type(stream)}.",
                         param="stream", code="invalid_type")
    options = body.get("stream_options")
    wants_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequest(f"Invalid type for 'stream_options': expected an object, got {_json_type(options)}.",
                             param="stream_options", code="invalid_type")
        include = options.get("include_usage", False)
        if not isinstance(include, bool):
            raise BadRequest(f"Invalid type for 'stream_options.include_usage': expected a boolean, got {_json_type(include)}.",
                             param="stream_options.include_usage", code="invalid_type")
        wants_usage = include
    max_completion = _positive_int(body, "max_completion_tokens")
    max_tokens = _positive_int(body, "max_tokens")
    n = _positive_int(body, "n") or 1
    if max_completion is not None:
        max_output, field = max_completion, "max_completion_tokens"
    else:
        max_output, field = max_tokens, ("max_tokens" if max_tokens is not None else "max_completion_tokens")
    return ChatRequest(body=body, model=model, stream=stream, client_wants_usage=wants_usage,
                       max_output=max_output, max_output_field=field, n=n)
