"""The API shapes farebox meters: what one endpoint's bodies and streams look like.

``proxy.flow`` runs every metered request the same way (reserve → forward → measure → settle →
respond) and knows nothing of any API's bodies: it asks the request's ``ApiShape`` for each
step that depends on them. A new endpoint is one module here implementing ``ApiShape``
(``proxy/apis/chat.py`` for chat completions), plus the route that calls
``proxy.flow.serve(services, exchange, shape)``.

A shape is a stateless object made once, at import: the flow dispatches on it once per request
and calls its methods directly. What one request carries between the steps is the shape's own
request object (``ApiRequest``), made by ``parse``; what a stream carries is its ``StreamMeter``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pricing.catalog import ModelPrice
from pricing.cost import Usage

__all__ = ["ApiShape", "ApiRequest", "StreamMeter", "Measured"]


@dataclass(slots=True)
class Measured:
    """The usage of one request, and whether farebox estimated it (the upstream reported none)."""

    usage: Usage
    estimated: bool


class ApiRequest(Protocol):
    """A parsed, validated request: what the generic flow reads of it. Each shape's own request
    class has these attributes and whatever else its other methods need."""

    body: dict[str, Any]        # the parsed JSON body (the shape may change it when forwarding)
    model: str                  # as the client named it (the catalog resolves it)
    stream: bool                # the client asked for a stream
    max_output: int | None      # the client's output bound per choice; None: none set; 0: the API generates none
    bound_field: str | None     # the body field that carries the output bound; None: there is none to set
    n: int                      # choices generated (the output bound counts once per choice)
    output_extra: int           # output tokens billed per choice on top of the bound (set by count_prompt; 0 if absent)
    hosted_calls: int           # the most calls billed per call (hosted web searches) the request can make; 0: none
    prompt_field: str           # the body field that holds the prompt, named when it alone is too large to price
    min_output: int             # the smallest output bound per choice the API takes for this body (clamping stops there)


class StreamMeter(Protocol):
    """Reads one stream's events as they pass through; made per stream by ``ApiShape.stream_meter``."""

    def take(self, event: bytes) -> bool:
        """Read one raw SSE event (with its blank line); False when it must not reach the client
        (e.g. a usage event farebox itself asked for)."""

    def result(self, prompt_tokens: int) -> Measured:
        """The stream's usage: as reported in its events, else estimated from the text seen
        (``prompt_tokens`` being the counted prompt)."""


class ApiShape(Protocol):
    """One metered API endpoint."""

    name: str            # the endpoint as recorded and labelled in metrics, e.g. "chat.completions"
    upstream_path: str   # below the upstream's base URL, e.g. "/chat/completions"
    family: str          # "openai" or "anthropic": the upstreams it goes to and the error shape its clients expect

    def parse(self, raw: bytes, headers: Mapping[str, str] | None = None) -> ApiRequest:
        """The body as this API's request; ``BadRequest`` (400) for what farebox cannot meter.
        ``headers``: the request's, for what a header changes about the body's cost (e.g. a beta
        that widens the context window)."""

    def count_prompt(self, request: Any, price: ModelPrice) -> Awaitable[int]:
        """The prompt part of the worst case, in tokens (counted off the event loop when large).

        Every part of the body the provider bills is counted, or bounded from above. Output
        tokens the body itself makes the provider bill (chat's ``prediction``) are set in
        ``request.output_extra``, per choice."""

    def forward_body(self, raw: bytes, request: Any, bound: int | None) -> bytes:
        """The body sent upstream: ``raw`` unless farebox must change it (usage asked for in a
        stream, ``bound`` set in ``request.bound_field`` when not None, a limit on hosted calls
        so that ``request.hosted_calls`` holds)."""

    def measure_body(self, payload: bytes, request: Any, prompt_tokens: int) -> Measured:
        """The usage of a whole (non-stream, successful) response body: reported, else estimated."""

    def stream_meter(self, request: Any) -> StreamMeter:
        """A meter for one streamed response to ``request``."""
