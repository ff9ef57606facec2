"""Long-context tiers, and the per-token rates a request is priced at.

Some providers price a whole request higher once its input passes a threshold: gpt-5.4 above
272,000 input tokens, gemini-2.5-pro and the 1M-context Claude models above 200,000. Above it,
every token of the request (input, cache reads and writes, output, reasoning) costs the tier's
rate, not only the tokens past the threshold. The input that counts is all of it, cached and
cache-written tokens included (the OpenAI ``prompt_tokens``).

A tier names its threshold and its input and output rates; the other rates are optional. A rate
the tier does not give is derived from the model's own rate for that kind, scaled by the tier's
ratio and rounded up to a whole nano-dollar per million tokens: cache reads and writes (and
hour-long cache writes) by the tier's input ratio, reasoning by its output ratio. That is what
providers do (gpt-5.4, gemini-2.5-pro and Claude double cached input exactly as they double
input), and never less: keeping the rate below the threshold would under-price the cache when
it, too, goes up. When the model has no rate of its own for that kind either, the tier falls
back exactly as the model does (cache reads and writes at the tier's input rate, hour-long
writes at its cache-write rate, reasoning at its output rate). When the model's input (or
output) rate is 0, so that no ratio exists, the derived rate is the higher of the model's rate
and the tier's input (or output) rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["LongContext", "Rates", "OwnPrices", "base_rates", "tier_rates"]

_OPTIONAL_RATES = ("cached_input", "cache_creation_input", "cache_creation_input_1h", "reasoning_output")


@dataclass(frozen=True, slots=True)
class LongContext:
    """A long-context tier: rates in nano-dollars per million tokens for requests whose input
    is more than ``above_input_tokens`` tokens. Optional rates that are None are derived (see
    this module's docstring)."""

    above_input_tokens: int
    input: int
    output: int
    cached_input: int | None = None
    cache_creation_input: int | None = None
    cache_creation_input_1h: int | None = None
    reasoning_output: int | None = None

    def __post_init__(self) -> None:
        threshold = self.above_input_tokens
        if threshold.__class__ is not int or threshold <= 0:
            raise ValueError(f"long_context.above_input_tokens must be a positive int, not {threshold!r}")
        for field in ("input", "output", *_OPTIONAL_RATES):
            value = getattr(self, field)
            if value is None and field in _OPTIONAL_RATES:
                continue
            if value.__class__ is not int or value < 0:
                raise ValueError(f"long_context.{field} must be a non-negative int, not {value!r}")


@dataclass(frozen=True, slots=True)
class Rates:
    """Every per-token rate of one tier, resolved (no None): nano-dollars per million tokens."""

    input: int
    cached_input: int
    cache_creation_input: int
    cache_creation_input_1h: int
    output: int
    reasoning_output: int

    def highest_input(self) -> int:
        """The highest rate a prompt token can cost (input, cache read or either cache write)."""
        return max(self.input, self.cached_input, self.cache_creation_input, self.cache_creation_input_1h)

    def highest_output(self) -> int:
        """The highest rate an output token can cost (output or reasoning)."""
        return max(self.output, self.reasoning_output)


class OwnPrices(Protocol):
    """A model's own per-token prices (``pricing.catalog.ModelPrice`` is one)."""

    @property
    def input(self) -> int: ...
    @property
    def output(self) -> int: ...
    @property
    def cached_input(self) -> int | None: ...
    @property
    def cache_creation_input(self) -> int | None: ...
    @property
    def cache_creation_input_1h(self) -> int | None: ...
    @property
    def reasoning_output(self) -> int | None: ...


def _resolved(input_rate: int, output_rate: int, cached: int | None, creation: int | None,
              creation_1h: int | None, reasoning: int | None) -> Rates:
    """Rates with each missing kind at what it falls back to."""
    creation_rate = input_rate if creation is None else creation
    return Rates(
        input=input_rate,
        cached_input=input_rate if cached is None else cached,
        cache_creation_input=creation_rate,
        cache_creation_input_1h=creation_rate if creation_1h is None else creation_1h,
        output=output_rate,
        reasoning_output=output_rate if reasoning is None else reasoning,
    )


def base_rates(own: OwnPrices) -> Rates:
    """The rates at or below a tier's threshold: the model's own prices."""
    return _resolved(own.input, own.output, own.cached_input, own.cache_creation_input,
                     own.cache_creation_input_1h, own.reasoning_output)


def _scaled(own: int | None, new_parent: int, old_parent: int) -> int | None:
    """The model's own rate ``own`` scaled by ``new_parent / old_parent``, rounded up; None without one."""
    if own is None:
        return None
    if old_parent == 0:
        return max(own, new_parent)
    return -(-own * new_parent // old_parent)


def tier_rates(tier: LongContext, own: OwnPrices) -> Rates:
    """The rates above the tier's threshold, for a model whose own prices are ``own``."""

    def pick(given: int | None, own_rate: int | None, new_parent: int, old_parent: int) -> int | None:
        return given if given is not None else _scaled(own_rate, new_parent, old_parent)

    return _resolved(
        tier.input, tier.output,
        pick(tier.cached_input, own.cached_input, tier.input, own.input),
        pick(tier.cache_creation_input, own.cache_creation_input, tier.input, own.input),
        pick(tier.cache_creation_input_1h, own.cache_creation_input_1h, tier.input, own.input),
        pick(tier.reasoning_output, own.reasoning_output, tier.output, own.output),
    )
