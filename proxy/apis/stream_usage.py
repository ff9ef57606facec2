"""The usage chunk of an OpenAI stream: what chat completions and legacy completions share.

An OpenAI stream reports usage only when the request asks for it
(``stream_options.include_usage``), in one last chunk whose ``choices`` is empty. farebox
always asks, so that a stream is charged what the provider reports rather than an estimate;
when the client did not ask, that chunk is kept from it, so the client sees the stream it
asked for.

Here: reading ``stream`` and ``stream_options`` from a body (with the 400s they get), asking
for usage in a body to forward, and ``UsageChunkMeter``, the base of a stream meter that finds
the usage chunk and leaves reading the choices to its API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pricing.cost import Usage
from proxy.apis.body import json_type
from proxy.errors import BadRequest
from proxy.upstream.sse import event_data

__all__ = ["stream_flags", "ask_for_usage", "UsageChunkMeter"]

_DONE = b"[DONE]"


def stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """Whether ``body`` asks for a stream, and whether the client itself asked for its usage
    chunk; a 400 naming the field when ``stream`` or ``stream_options`` has the wrong type."""
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest(f"Invalid type for 'stream': expected a boolean, got {json_type(stream)}.",
                         param="stream", code="invalid_type")
    options = body.get("stream_options")
    wants_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequest(f"Invalid type for 'stream_options': expected an object, got {json_type(options)}.",
                             param="stream_options", code="invalid_type")
        include = options.get("include_usage", False)
        if not isinstance(include, bool):
            raise BadRequest(f"Invalid type for 'stream_options.include_usage': expected a boolean, got "
                             f"{json_type(include)}.", param="stream_options.include_usage", code="invalid_type")
        wants_usage = include
    return stream, wants_usage


def ask_for_usage(body: dict[str, Any]) -> None:
    """Set ``stream_options.include_usage`` in ``body``, keeping the client's other options."""
    body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}


@dataclass(slots=True)
class UsageChunkMeter:
    """Reads a stream of OpenAI chunks: hands each parsed chunk to ``feed`` (the API's own, which
    keeps the usage it finds in ``usage`` and whatever text it needs for an estimate), and keeps
    the usage-only chunk from a client that did not ask for it."""

    model: str
    strip_usage: bool  # farebox asked for the usage chunk, the client did not: keep it from the client
    usage: Usage | None = None

    def take(self, event: bytes) -> bool:
        """Read one raw SSE event; False when it is the usage-only chunk the client did not ask for."""
        payload = event_data(event)
        if not payload or payload == _DONE:
            return True
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(chunk, dict):
            return True
        self.feed(chunk)
        return not (self.strip_usage and chunk.get("usage") and not chunk.get("choices"))

    def feed(self, chunk: dict[str, Any]) -> None:
        """Read one parsed chunk (each API reads its own choices)."""
        raise NotImplementedError
