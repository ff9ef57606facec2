"""What tokens cost, in integer nano-dollars.

Prices are nano-dollars per million tokens, so a cost is a sum of ``tokens × price`` products
(exact integers) divided by one million once, rounded up to a whole nano-dollar: a request is
never charged less than it cost, and rounding happens once per request, not per token kind.

Token kinds follow the OpenAI usage convention: cached and cache-creation tokens are part of
``prompt_tokens`` (cache writes kept for an hour are part of the cache-creation tokens),
reasoning tokens are part of ``completion_tokens``. Each token is priced once, at the price of
its kind. Web search calls are priced per call, on top of the tokens.

A model with a long-context tier (``pricing.tiers``) prices a request whose input is more than
the tier's threshold at the tier's rates, every token of it: the tier is chosen by the input
alone, before any token is priced.
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

    When the input is more than the price's long-context threshold, every token is priced at
    the tier's rates. The input is ``prompt_tokens``, or the cached and cache-written tokens
    when a provider reports more of those than prompt tokens, so that a report undercounting
    its prompt is not priced below the threshold.
    """
    rates = price.rates(max(usage.prompt_tokens, usage.cached_tokens + usage.cache_creation_tokens))
    uncached = max(usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens, 0)
    short_creation = max(usage.cache_creation_tokens - usage.cache_creation_1h_tokens, 0)
    plain_output = max(usage.completion_tokens - usage.reasoning_tokens, 0)
    total = (uncached * rates.input
             + usage.cached_tokens * rates.cached_input
             + short_creation * rates.cache_creation_input
             + usage.cache_creation_1h_tokens * rates.cache_creation_input_1h
             + plain_output * rates.output
             + usage.reasoning_tokens * rates.reasoning_output)
    return _ceil_to_nano(total + _fixed_nano_millionths(price, usage.web_search_calls))


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

    When ``prompt_tokens`` is more than the long-context threshold, the highest prices are
    taken over the tier's rates and the model's own: ``prompt_tokens`` is an upper bound of the
    input, and the input billed may be at or below the threshold. So the worst case bounds the
    cost of any usage with at most ``prompt_tokens`` in and ``output_tokens`` out.
    """
    _check_tokens("prompt_tokens", prompt_tokens)
    _check_tokens("output_tokens", output_tokens)
    input_rate, output_rate = price.worst_rates(prompt_tokens)
    return _ceil_to_nano(prompt_tokens * input_rate + output_tokens * output_rate
                         + _fixed_nano_millionths(price, web_search_calls))


def max_output_for_budget(price: ModelPrice, prompt_tokens: int, room_nano: int, *, web_search_calls: int = 0) -> int:
    """The largest k with ``worst_case_nano(price, prompt_tokens, k, web_search_calls=...) <= room_nano``.

    0 when not even the prompt (or the prompt plus one output token) fits. When output costs
    nothing, or the room pays for more, ``UNBOUNDED_OUTPUT``. Exact: since the cost is
    rounded up from ``total / 1e6``, ``cost <= room`` exactly when ``total <= room × 1e6``;
    and the rates depend on ``prompt_tokens`` alone (the long-context tier is chosen by input),
    so they are the same for every k.
    """
    _check_tokens("prompt_tokens", prompt_tokens)
    if isinstance(room_nano, bool) or not isinstance(room_nano, int):
        raise ValueError(f"room_nano must be an int, not {room_nano!r}")
    input_rate, output_rate = price.worst_rates(prompt_tokens)
    spare = (room_nano * TOKENS_PER_PRICE_UNIT - prompt_tokens * input_rate
             - _fixed_nano_millionths(price, web_search_calls))
    if spare < 0:
        return 0
    if output_rate == 0:
        return UNBOUNDED_OUTPUT
    return min(spare // output_rate, UNBOUNDED_OUTPUT)
