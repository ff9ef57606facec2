"""Advice from a project's own usage mix: arithmetic on recorded events and catalog prices, no I/O.

Three kinds, each from the events of one period (``proxy.control.recommendations`` reads them):

- ``cheaper_model``: per model, the calls whose output was short (at most
  ``SHORT_OUTPUT_TOKENS``) priced again, token for token, at a smaller model of the same provider
  and mode (``smaller_siblings``: ``X`` → ``X-mini``, ``X-mini`` → ``X-nano``, ``X-pro`` → ``X``,
  opus → sonnet → haiku, pro → flash → flash-lite; the first the catalog prices that costs less).
  Saving: what those calls cost minus what they would have cost.
- ``prompt_caching``: per agent and model with a cache price, calls with long prompts (at least
  ``LONG_PROMPT_TOKENS``) of which less than half were read from the provider's cache. farebox
  keeps no prompts, so it cannot see which prefixes repeat: it assumes that half of the shortest
  of those prompts is a prefix every call repeats (system prompt, tools, shared context). Each
  call would read ``max(0, prefix − cached)`` more tokens from the cache at the cached price
  instead of the input price; where writing the cache costs more than input (Anthropic), a call
  coming more than ``CACHE_TTL_S`` after the previous one writes it instead and costs the
  difference.
- ``output_bound``: per agent and model, calls whose output bound (the ``max_tokens`` the
  reservation assumed) is at least ``BOUND_FACTOR`` times the longest output seen. A bound
  changes no bill, so the saving is 0; the advice names the budget room each call held beyond
  its cost (``reserved`` − cost), and suggests a bound of twice the longest output.

None applies below ``MIN_CALLS`` calls. Costs use ``pricing.cost`` (integer nano-USD, each call
rounded up as when it was billed; base rates, not a long-context tier's). ``Window.monthly``
turns what a period's events show into a month (see there). Priority follows the monthly
saving: ``high`` from $100, ``medium`` from $10, else ``low``; an output bound is ``high`` when
calls were already clamped to fit a budget, else ``low``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pricing.catalog import Catalog, ModelPrice, undated
from pricing.cost import Usage, cost_nano
from pricing.money import nano_to_usd
from proxy.domain import COMPUTE_PREFIX, UsageEvent

__all__ = ["Window", "advise", "smaller_siblings", "SHORT_OUTPUT_TOKENS", "LONG_PROMPT_TOKENS", "MIN_CALLS",
           "CACHE_TTL_S", "BOUND_FACTOR", "MONTH_MS", "MIN_WINDOW_MS"]

SHORT_OUTPUT_TOKENS = 256
LONG_PROMPT_TOKENS = 1024
MIN_CALLS = 10
CACHE_TTL_S = 300               # a provider's prompt cache lives about five minutes unused
BOUND_FACTOR = 4
MONTH_MS = 30 * 86_400_000      # "a month" of the estimates: 30 days
MIN_WINDOW_MS = 3_600_000       # a window shorter than an hour counts as an hour
HIGH_NANO = 100 * 10**9
MEDIUM_NANO = 10 * 10**9
PER_MILLION = 1_000_000
_SMALLER = (("opus", "sonnet"), ("sonnet", "haiku"), ("-pro", "-flash"), ("-flash", "-flash-lite"))


def _div_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


@dataclass(frozen=True, slots=True)
class Window:
    """What the events read cover: ``[start_ms, end_ms)`` of the period, the cost of the events
    read (``sample_nano``) and what the period's aggregate recorded (``recorded_nano``)."""

    start_ms: int
    end_ms: int
    sample_nano: int
    recorded_nano: int

    @property
    def elapsed_ms(self) -> int:
        return max(MIN_WINDOW_MS, self.end_ms - self.start_ms)

    def monthly(self, nano: int) -> int:
        """``nano`` seen in the window, as a month: × 30 days / elapsed, and × recorded / sample
        when the events read cost less than the period recorded (older events were trimmed
        from the stream); rounded half up to whole nano-USD."""
        sample, recorded = self.sample_nano, max(self.recorded_nano, self.sample_nano)
        if sample <= 0:
            return _div_half_up(nano * MONTH_MS, self.elapsed_ms)
        return _div_half_up(nano * MONTH_MS * recorded, self.elapsed_ms * sample)

    def shown(self) -> dict[str, Any]:
        return {"elapsed_hours": f"{self.elapsed_ms / 3_600_000:.2f}", "month_hours": MONTH_MS // 3_600_000,
                "events_cost_usd": nano_to_usd(self.sample_nano), "recorded_cost_usd": nano_to_usd(self.recorded_nano)}


def smaller_siblings(name: str) -> list[str]:
    """Names of a smaller model of the same family, most alike first (see the module's docstring)."""
    base = undated(name) or name
    out = []
    if base.endswith("-pro"):
        out.append(base[:-4])
    if base.endswith("-mini"):
        out.append(base[:-5] + "-nano")
    elif not base.endswith("-nano"):
        out.append(base + "-mini")
    for big, small in _SMALLER:
        if big in base and not (big == "-flash" and "-flash-lite" in base):
            out.append(base.replace(big, small, 1))
    return list(dict.fromkeys(n for n in out if n != name))


def _usage(e: UsageEvent) -> Usage:
    return Usage(e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.cache_creation_tokens, e.reasoning_tokens,
                 e.cache_creation_1h_tokens, e.web_search_calls)


def _priority(monthly_nano: int) -> str:
    return "high" if monthly_nano >= HIGH_NANO else "medium" if monthly_nano >= MEDIUM_NANO else "low"


def _groups(events: Iterable[UsageEvent], key: Callable[[UsageEvent], Any]) -> dict[Any, list[UsageEvent]]:
    out: dict[Any, list[UsageEvent]] = defaultdict(list)
    for e in events:
        out[key(e)].append(e)
    return out


def advise(events: list[UsageEvent], catalog: Catalog, window: Window) -> list[dict[str, Any]]:
    """Every recommendation the events support, the largest monthly saving first."""
    found: list[tuple[int, dict[str, Any]]] = []
    # Usage records of compute (``compute:<resource>``) are no model to advise on, whatever the
    # catalog's fallback price.
    prices = {m: None if m.startswith(COMPUTE_PREFIX) else catalog.resolve(m) for m in {e.priced_model for e in events}}
    for model, calls in sorted(_groups(events, lambda e: e.priced_model).items()):
        price = prices[model]
        if price is not None:
            found += _cheaper_model(model, price, calls, catalog, window)
    for (agent, model), calls in sorted(_groups(events, lambda e: (e.attribution.agent, e.priced_model)).items()):
        price = prices[model]
        if price is not None:
            found += _caching(agent, model, price, calls, window)
            found += _bound(agent, model, price, calls)
    found.sort(key=lambda f: (-f[0], f[1]["type"], f[1]["current_model"], f[1]["based_on"].get("agent", "")))
    return [rec for _, rec in found]


def _recommendation(kind: str, priority: str, title: str, description: str, current: str, recommended: str | None,
                    monthly_nano: int, based_on: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "priority": priority, "title": title, "description": description,
            "current_model": current, "recommended_model": recommended,
            "estimated_monthly_savings_usd": nano_to_usd(monthly_nano), "based_on": based_on}


def _cheaper_model(model: str, price: ModelPrice, calls: list[UsageEvent], catalog: Catalog,
                   window: Window) -> list[tuple[int, dict[str, Any]]]:
    short = [e for e in calls if e.completion_tokens <= SHORT_OUTPUT_TOKENS]
    if len(short) < MIN_CALLS:
        return []
    current = sum(cost_nano(price, _usage(e)) for e in short)
    for name in smaller_siblings(model):
        other = catalog.resolve(name) if name in catalog else None
        if other is None or other.provider != price.provider or other.mode != price.mode:
            continue
        fits = [e for e in short if other.max_input_tokens is None or e.prompt_tokens <= other.max_input_tokens]
        if len(fits) != len(short):
            continue
        cheaper = sum(cost_nano(other, _usage(e)) for e in short)
        saving = current - cheaper
        if saving <= 0:
            continue
        monthly = window.monthly(saving)
        output = sum(e.completion_tokens for e in short)
        based_on = {
            "calls": len(calls), "short_calls": len(short), "short_output_max_tokens": SHORT_OUTPUT_TOKENS,
            "short_calls_prompt_tokens": sum(e.prompt_tokens for e in short), "short_calls_output_tokens": output,
            "short_calls_average_output_tokens": output // len(short),
            "short_calls_cost_usd": nano_to_usd(current), "short_calls_cost_at_recommended_usd": nano_to_usd(cheaper),
            "observed_savings_usd": nano_to_usd(saving), **window.shown(),
        }
        description = (f"{len(short)} of {len(calls)} calls to {model} returned at most {SHORT_OUTPUT_TOKENS} output "
                       f"tokens ({output // len(short)} on average). At {name}'s prices (same provider) they would "
                       f"have cost ${nano_to_usd(cheaper)} instead of ${nano_to_usd(current)}: "
                       f"${nano_to_usd(saving)} less in this period, about ${nano_to_usd(monthly, places=2)} a month.")
        return [(monthly, _recommendation("cheaper_model", _priority(monthly),
                                          f"Use {name} for the short answers now asked of {model}", description,
                                          model, name, monthly, based_on))]
    return []


def _caching(agent: str, model: str, price: ModelPrice, calls: list[UsageEvent],
             window: Window) -> list[tuple[int, dict[str, Any]]]:
    cached_price = price.cached_input
    if cached_price is None or cached_price >= price.input:
        return []
    long = sorted((e for e in calls if e.prompt_tokens >= LONG_PROMPT_TOKENS), key=lambda e: e.ts)
    if len(long) < MIN_CALLS:
        return []
    prompt = sum(e.prompt_tokens for e in long)
    cached = sum(e.cached_tokens for e in long)
    if 2 * cached >= prompt:
        return []
    prefix = min(e.prompt_tokens for e in long) // 2
    write_price = price.cache_creation_input
    writes_cost = write_price is not None and write_price > price.input
    saved = reads = writes = 0          # saved: nano-USD × one million
    previous: float | None = None
    for e in long:
        extra = max(0, prefix - e.cached_tokens)
        if writes_cost and (previous is None or e.ts - previous > CACHE_TTL_S):
            writes += 1
            saved -= extra * (write_price - price.input)     # type: ignore[operator]
        else:
            reads += 1
            saved += extra * (price.input - cached_price)
        previous = e.ts
    saving = saved // PER_MILLION
    if saving <= 0:
        return []
    monthly = window.monthly(saving)
    share = f"{cached * 100 // prompt}%"
    based_on = {"agent": agent, "long_prompt_calls": len(long), "long_prompt_min_tokens": LONG_PROMPT_TOKENS,
                "prompt_tokens": prompt, "cached_tokens": cached, "cached_share": share,
                "assumed_repeated_prefix_tokens": prefix, "cache_reads": reads, "cache_writes": writes,
                "input_price_usd_per_million": nano_to_usd(price.input),
                "cached_price_usd_per_million": nano_to_usd(cached_price),
                "observed_savings_usd": nano_to_usd(saving), **window.shown()}
    description = (f"Agent '{agent}' sent {len(long)} prompts of at least {LONG_PROMPT_TOKENS} tokens to {model} "
                   f"({prompt} tokens) and only {share} of them came from the prompt cache. If the first {prefix} "
                   f"tokens (half the shortest of those prompts) are the same every time, putting them first and "
                   f"unchanged lets the provider cache them: ${nano_to_usd(saving)} less in this period, about "
                   f"${nano_to_usd(monthly, places=2)} a month.")
    return [(monthly, _recommendation("prompt_caching", _priority(monthly),
                                      f"Cache the repeated prompt prefix of agent '{agent}' on {model}", description,
                                      model, None, monthly, based_on))]


def _bound(agent: str, model: str, price: ModelPrice, calls: list[UsageEvent]) -> list[tuple[int, dict[str, Any]]]:
    bounded = [e for e in calls if e.output_bound is not None and e.reserved_nano is not None]
    if len(bounded) < MIN_CALLS:
        return []
    longest = max(e.completion_tokens for e in bounded)
    bounds = sorted(e.output_bound for e in bounded)       # type: ignore[type-var]
    typical = bounds[(len(bounds) - 1) // 2]                # the median (the lower one of an even count)
    if typical < BOUND_FACTOR * max(1, longest):
        return []
    suggested = 2 * max(1, longest)
    held = sum(e.reserved_nano for e in bounded)            # type: ignore[misc]
    spent = sum(e.cost_nano for e in bounded)
    freed = (typical - suggested) * price.output // PER_MILLION
    clamped = sum(1 for e in bounded if e.clamped_max_tokens is not None)
    based_on = {"agent": agent, "calls": len(bounded), "median_output_bound_tokens": typical,
                "longest_output_tokens": longest, "suggested_output_bound_tokens": suggested,
                "held_per_call_usd": nano_to_usd(held // len(bounded)),
                "spent_per_call_usd": nano_to_usd(spent // len(bounded)),
                "freed_per_call_usd": nano_to_usd(freed), "clamped_calls": clamped}
    description = (f"Agent '{agent}' asks {model} for up to {typical} output tokens, but its longest answer of "
                   f"{len(bounded)} was {longest}. Each call holds ${nano_to_usd(held // len(bounded))} of budget "
                   f"while it runs and spends ${nano_to_usd(spent // len(bounded))}: a max_tokens of {suggested} "
                   f"would hold ${nano_to_usd(freed)} less per call, so a hard budget admits more calls at once "
                   "and refuses or clamps later. It lowers no bill.")
    return [(0, _recommendation("output_bound", "high" if clamped else "low",
                                f"Lower the output bound of agent '{agent}' on {model} to {suggested} tokens",
                                description, model, None, 0, based_on))]
