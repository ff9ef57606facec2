"""What the fake upstream reads of a legacy completion's ``prompt`` or an embedding's ``input``,
and what it bills for them, the way OpenAI does: every string counted with the model's
encoding, a token array by its length, nothing else. Written apart from farebox's own reading
(``proxy.apis.text_inputs``), which must never count fewer tokens than this bills."""

from __future__ import annotations

from typing import Any

from proxy.fake_upstream.controls import Refused
from proxy.tokens import count_text, get_encoding

__all__ = ["read_inputs", "billed_tokens", "echo_text", "MAX_EMBEDDING_INPUTS", "MAX_BEST_OF",
           "LEGACY_DEFAULT_MAX_TOKENS"]

MAX_EMBEDDING_INPUTS = 2048
MAX_BEST_OF = 20
LEGACY_DEFAULT_MAX_TOKENS = 16  # a legacy completion's max_tokens when the request sets none


def _tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(token, int) and not isinstance(token, bool) for token in value)


def read_inputs(value: Any, name: str, *, empty_text: bool = True,
                max_items: int | None = None) -> list[str | list[int]]:
    """A prompt or an embedding input as a list of texts and token arrays, or a 400."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif _tokens(value):
        items = [value]
    elif isinstance(value, list) and value and all(isinstance(item, str) or _tokens(item) for item in value):
        items = value
    else:
        raise Refused(400, f"Invalid '{name}': expected a string, an array of strings or of token arrays.",
                      param=name)
    if max_items is not None and len(items) > max_items:
        raise Refused(400, f"Invalid '{name}': at most {max_items} inputs are allowed.", param=name)
    if not empty_text and any(item == "" for item in items):
        raise Refused(400, f"'$.{name}' is invalid: an input must not be an empty string.", param=name)
    return items


def billed_tokens(model: str, item: str | list[int]) -> int:
    """The prompt tokens billed for one input."""
    return count_text(model, item) if isinstance(item, str) else len(item)


def echo_text(model: str, item: str | list[int]) -> str:
    """The prompt as an echoing completion returns it: the text, or the token array decoded."""
    if isinstance(item, str):
        return item
    enc = get_encoding(model)
    if not all(0 <= token < enc.n_vocab for token in item):
        raise Refused(400, "Invalid 'prompt': a token is out of the model's vocabulary.", param="prompt")
    return enc.decode(item)
