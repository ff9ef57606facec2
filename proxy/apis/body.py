"""Reading a request body as JSON, with 400s that say what is wrong: shared by the API shapes
(and the admin API)."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import BadRequest

__all__ = ["parse_json_object", "json_type", "positive_int", "required_model"]


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object, not {json_type(body)}.", code="invalid_json")
    return body


def json_type(value: Any) -> str:
    """How an error message names the JSON type of ``value``: "null", "a string", ..."""
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


def positive_int(body: dict[str, Any], name: str, maximum: int | None = None) -> int | None:
    """``body[name]`` when it is an integer of at least 1 (and at most ``maximum``); None when
    absent or null; else a 400."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"Invalid type for '{name}': expected an integer, got {json_type(value)}.",
                         param=name, code="invalid_type")
    if value < 1:
        raise BadRequest(f"Invalid value for '{name}': must be at least 1, got {value}.",
                         param=name, code="invalid_value")
    if maximum is not None and value > maximum:
        raise BadRequest(f"Invalid value for '{name}': must be at most {maximum}, got {value}.",
                         param=name, code="invalid_value")
    return value


def required_model(body: dict[str, Any]) -> str:
    """The body's ``model``: 400 when it is missing or not a non-empty string (OpenAI's wording)."""
    model = body.get("model")
    if model is None:
        raise BadRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest(f"Invalid type for 'model': expected a non-empty string, got {json_type(model)}.",
                         param="model", code="invalid_type")
    return model
