"""Inputs as embeddings take them (``input``) and legacy completions take them (``prompt``): a
string, a list of strings, one token array (a list of integers) or a list of token arrays.

``text_inputs`` reads such a value as a list of inputs, each a string or a token array, with a
400 naming the field (and the item) for what the APIs do not take; ``count_inputs`` counts
each: a string with tiktoken in the model's encoding (``encode_ordinary``, so a special-token
string counts as the text it is, never fewer tokens than a provider bills), a token array by
its length.
"""

from __future__ import annotations

from typing import Any

from proxy.apis.body import json_type
from proxy.errors import BadRequest
from proxy.tokens import DEFAULT_OFFLOAD_THRESHOLD_CHARS, encoding_loaded, get_encoding, offloaded, tokens_in

__all__ = ["TextInput", "text_inputs", "count_inputs", "count_inputs_async"]

TextInput = str | list[int]

_EXPECTED = "a string, an array of strings, an array of integers or an array of integer arrays"


def _is_token(value: Any) -> bool:
    return type(value) is int  # not bool, which JSON's true and false become


def _token_array(items: list[Any], name: str) -> list[int]:
    if set(map(type, items)) == {int}:  # the common case, checked at C speed (a million tokens: ~30 ms)
        return items
    for position, token in enumerate(items):
        if not _is_token(token):
            raise BadRequest(f"Invalid type for '{name}[{position}]': expected an integer, got {json_type(token)}.",
                             param=f"{name}[{position}]", code="invalid_type")
    return items


def text_inputs(value: Any, name: str, *, max_items: int | None = None, empty_text: bool = True) -> list[TextInput]:
    """``value`` (the body's field ``name``) as a list of strings and token arrays.

    A list whose first item is an integer is one token array; any other list holds inputs, each
    a string or a token array. Empty lists and token arrays are a 400, as are empty strings
    unless ``empty_text``; so are more than ``max_items`` inputs."""
    if value is None:
        raise BadRequest(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    if isinstance(value, str):
        if not value and not empty_text:
            raise BadRequest(f"Invalid value for '{name}': must not be an empty string.", param=name,
                             code="invalid_value")
        return [value]
    if not isinstance(value, list):
        raise BadRequest(f"Invalid type for '{name}': expected {_EXPECTED}, got {json_type(value)}.",
                         param=name, code="invalid_type")
    if not value:
        raise BadRequest(f"Invalid value for '{name}': must not be an empty array.", param=name, code="invalid_value")
    if _is_token(value[0]):
        return [_token_array(value, name)]
    if max_items is not None and len(value) > max_items:
        raise BadRequest(f"Invalid value for '{name}': must hold at most {max_items} inputs, got {len(value)}.",
                         param=name, code="invalid_value")
    for position, item in enumerate(value):
        where = f"{name}[{position}]"
        if isinstance(item, str):
            if not item and not empty_text:
                raise BadRequest(f"Invalid value for '{where}': must not be an empty string.", param=where,
                                 code="invalid_value")
        elif isinstance(item, list):
            if not item:
                raise BadRequest(f"Invalid value for '{where}': must not be an empty array.", param=where,
                                 code="invalid_value")
            _token_array(item, where)
        else:
            raise BadRequest(f"Invalid type for '{where}': expected a string or an array of integers, got "
                             f"{json_type(item)}.", param=where, code="invalid_type")
    return value


def count_inputs(model: str, inputs: list[TextInput]) -> list[int]:
    """The tokens of each input on ``model``: a string counted, a token array its length."""
    enc = get_encoding(model)
    return [tokens_in(enc, item) if isinstance(item, str) else len(item) for item in inputs]


async def count_inputs_async(model: str, inputs: list[TextInput], *,
                             offload_threshold_chars: int = DEFAULT_OFFLOAD_THRESHOLD_CHARS) -> list[int]:
    """``count_inputs``, in a worker thread when the strings hold more than the threshold in all
    (or the model's encoding is not loaded yet), so the event loop is not held up."""
    chars = 0
    for item in inputs:
        if isinstance(item, str):
            chars += len(item)
    if encoding_loaded(model) and chars <= offload_threshold_chars:
        return count_inputs(model, inputs)
    return await offloaded(count_inputs, model, inputs)
