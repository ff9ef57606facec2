"""What tokens cost, in integer nano-dollars.

Prices are nano-dollars per million tokens, so a cost is a sum of ``tokens × price`` products
(exact integers) divided by one million once, rounded up to a whole nano-dollar: a request is
never charged less than it cost, and rounding happens once per request, not per token kind.

Token kinds follow the OpenAI usage convention: cached and cache-creation tokens are part of
``prompt_tokens`` (cache writes kept for an hour are part of the cache-creation tokens),
reasoning tokens are part of ``completion_tokens``. Each token is priced once, at the price of
its kind. Web search calls are priced per call, on top of the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from pricing.catalog import ModelPrice

__all__ = ["Usage", "cost_nano", "worst_case_nano", "max_output_for_budget", "UNBOUNDED_OUTPUT"]

TOKENS_PER_PRICE_UNIT = 1_000_000   # prices are per million tokens

# What max_output_for_budget answers when output costs nothing (or the budget pays for more):
# the largest signed 32-bit int, far above any model's output limit.
UNBOUNDED_OUTPUT = 2**31 - 1

_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens", "reasoning_tokens",
                 "cache_creation_1h_tokens", "web_search_calls")


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one request used.

    ``cached_tokens`` (read from the provider's prompt cache) and ``cache_creation_tokens``
    (written to it) are part of ``prompt_tokens``; ``cache_creation_1h_tokens`` (written to it
    for an hour) are part of ``cache_creation_tokens``; ``reasoning_tokens`` are part of
    ``completion_tokens``. ``web_search_calls`` counts the web searches the model made.
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    web_search_calls: int = 0

    def __post_init__(self) -> None:
        for field in _TOKEN_FIELDS:
            value = getattr(self, field)
            if value.__class__ is not int or value < 0:  # a plain non-negative int needs no more checking
                _check_tokens(field, value)


def _check_tokens(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field} must be a non-negative int, not {value!r}")


def _ceil_to_nano(total: int) -> int:
    return -(-total // TOKENS_PER_PRICE_UNIT)


def cost_nano(price: ModelPrice, usage: Usage) -> int:
    """The cost of ``usage`` at ``price``, in nano-dollars (rounded up once).

    Uncached input is ``prompt - cached - cache_creation`` (never below zero, should a provider
    report more cached tokens than prompt tokens); plain output is ``completion - reasoning``
    (likewise); short-lived cache writes are ``cache_creation - cache_creation_1h`` (likewise).
    Hour-long cache writes cost the hour price, else the cache-write price. Each web search call
    costs ``web_search_call``, nothing when the catalog has no price for it.
    """
    cached_rate = price.input if price.cached_input is None else price.cached_input
    creation_rate = price.input if price.cache_creation_input is None else price.cache_creation_input
    creation_1h_rate = creation_rate if price.cache_creation_input_1h is None else price.cache_creation_input_1h
    reasoning_rate = price.output if price.reasoning_output is None else price.reasoning_output
    uncached = max(usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens, 0)
    short_creation = max(usage.cache_creation_tokens - usage.cache_creation_1h_tokens, 0)
    plain_output = max(usage.completion_tokens - usage.reasoning_tokens, 0)
    total = (uncached * price.input
             + usage.cached_tokens * cached_rate
             + short_creation * creation_rate
             + usage.cache_creation_1h_tokens * creation_1h_rate
             + plain_output * price.output
             + usage.reasoning_tokens * reasoning_rate)
    return _ceil_to_nano(total + _fixed_nano_millionths(price, usage.web_search_calls))


def _worst_rates(price: ModelPrice) -> tuple[int, int]:
    """The highest price a prompt token and an output token can have."""
    input_rate = max(price.input, price.cached_input or 0, price.cache_creation_input or 0,
                     price.cache_creation_input_1h or 0)
    output_rate = max(price.output, price.reasoning_output or 0)
    return input_rate, output_rate


def _fixed_nano_millionths(price: ModelPrice, web_search_calls: int) -> int:
    """What ``web_search_calls`` calls add, in nano-dollars × 1e6 (the unit of the token sums)."""
    _check_tokens("web_search_calls", web_search_calls)
    return web_search_calls * (price.web_search_call or 0) * TOKENS_PER_PRICE_UNIT


def worst_case_nano(price: ModelPrice, prompt_tokens: int, output_tokens: int, *, web_search_calls: int = 0) -> int:
    """The most ``prompt_tokens`` in and ``output_tokens`` out can cost, in nano-dollars.

    Each prompt token at the highest input price (input, cached or either cache write) and each
    output token at the highest output price (output or reasoning), so no split of the tokens
    into kinds costs more. For the usual model, where cache reads are cheaper than input and
    reasoning costs as much as output, this equals
    ``cost_nano(price, Usage(prompt_tokens, output_tokens))``. ``web_search_calls`` (at most
    that many web searches) adds their price.
    """
    _check_tokens("prompt_tokens", prompt_tokens)
    _check_tokens("output_tokens", output_tokens)
    input_rate, output_rate = _worst_rates(price)
    return _ceil_to_nano(prompt_tokens * input_rate + output_tokens * output_rate
                         + _fixed_nano_millionths(price, web_search_calls))


def max_output_for_budget(price: ModelPrice, prompt_tokens: int, room_nano: int, *, web_search_calls: int = 0) -> int:
    """The largest k with ``worst_case_nano(price, prompt_tokens, k, web_search_calls=...) <= room_nano``.

    0 when not even the prompt (or the prompt plus one output token) fits. When output costs
    nothing, or the room pays for more, ``UNBOUNDED_OUTPUT``. Exact: since the cost is
    rounded up from ``total / 1e6``, ``cost <= room`` exactly when ``total <= room × 1e6``.
    """
    _check_tokens("prompt_tokens", prompt_tokens)
    if isinstance(room_nano, bool) or not isinstance(room_nano, int):
        raise ValueError(f"room_nano must be an int, not {room_nano!r}")
    input_rate, output_rate = _worst_rates(price)
    spare = (room_nano * TOKENS_PER_PRICE_UNIT - prompt_tokens * input_rate
             - _fixed_nano_millionths(price, web_search_calls))
    if spare < 0:
        return 0
    if output_rate == 0:
        return UNBOUNDED_OUTPUT
    return min(spare // output_rate, UNBOUNDED_OUTPUT)
