"""Long-context tiers: the rates above a threshold, what a request costs on either side of it,
and the worst case and output clamp that must stay upper bounds across it.

Prices are nano-dollars per million tokens (USD per million × 1e9); cost = Σ tokens × rate / 1e6,
rounded up once.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.catalog import Catalog, LongContext, ModelPrice
from pricing.cost import UNBOUNDED_OUTPUT, Usage, cost_nano, max_output_for_budget, worst_case_nano
from pricing.tiers import Rates

USD = 1_000_000_000  # nano-dollars per million tokens for a price of 1 USD per million

# gpt-5.4-like: 2.5 / 15, cached 0.25; above 272k: 5 / 22.5, cached 0.5.
TIERED = ModelPrice(name="tiered", provider="test", mode="chat", input=2_500_000_000, output=15 * USD,
                    cached_input=250_000_000,
                    long_context=LongContext(272_000, input=5 * USD, output=22_500_000_000, cached_input=500_000_000))


@pytest.fixture(scope="module")
def bundled() -> Catalog:
    return Catalog.load()


def test_a_request_at_the_threshold_costs_the_base_rates_and_one_token_more_the_tier_rates():
    # 272000: 172000×2.5e9 + 100000×0.25e9 + 2000×15e9 = 430e12 + 25e12 + 30e12 = 485e12 → /1e6
    assert cost_nano(TIERED, Usage(272_000, 2_000, cached_tokens=100_000)) == 485_000_000
    # 272001, every token at the tier: 172001×5e9 + 100000×0.5e9 + 2000×22.5e9
    #   = 860.005e12 + 50e12 + 45e12 = 955.005e12 → /1e6
    assert cost_nano(TIERED, Usage(272_001, 2_000, cached_tokens=100_000)) == 955_005_000


def test_the_threshold_counts_cached_and_cache_written_tokens_as_input():
    # 272001 prompt tokens, all but one read from the cache: still above the threshold.
    # 1×5e9 + 272000×0.5e9 = 5e9 + 136e12 → /1e6 = 136_005_000
    assert cost_nano(TIERED, Usage(272_001, 0, cached_tokens=272_000)) == 136_005_000
    # a report with more cached tokens than prompt tokens is above the threshold by its cached tokens
    assert cost_nano(TIERED, Usage(10, 0, cached_tokens=272_001)) == 136_000_500


def test_worst_case_above_the_threshold_is_every_token_at_the_highest_tier_rate():
    # 300000×5e9 + 1000×22.5e9 = 1500e12 + 22.5e12 → /1e6
    assert worst_case_nano(TIERED, 300_000, 1_000) == 1_522_500_000
    # at the threshold, the base rates: 272000×2.5e9 + 1000×15e9 = 680e12 + 15e12
    assert worst_case_nano(TIERED, 272_000, 1_000) == 695_000_000
    assert worst_case_nano(TIERED, 272_001, 1_000) == cost_nano(TIERED, Usage(272_001, 1_000))


def test_worst_case_above_the_threshold_covers_a_dearer_base_rate():
    # A tier cheaper than the base for output: a prompt counted above the threshold may be billed
    # at or below it, so the worst case keeps the base output rate.
    odd = ModelPrice(name="odd", provider="test", mode="chat", input=1 * USD, output=10 * USD,
                     long_context=LongContext(1_000, input=2 * USD, output=4 * USD))
    # 1001×2e9 + 100×10e9 = 2002e9 + 1000e9 → /1e6
    assert worst_case_nano(odd, 1_001, 100) == 3_002_000
    assert cost_nano(odd, Usage(1_000, 100)) <= worst_case_nano(odd, 1_001, 100)
    assert max_output_for_budget(odd, 1_001, 3_002_000) == 100


def test_max_output_for_budget_above_the_threshold_uses_the_tier_rates():
    # room 1522.5e12: 300000 prompt tokens take 1500e12, leaving 22.5e12 / 22.5e9 = 1000.
    assert max_output_for_budget(TIERED, 300_000, 1_522_500_000) == 1_000
    assert max_output_for_budget(TIERED, 300_000, 1_522_499_999) == 999
    # at the threshold: 695e12 - 680e12 = 15e12 / 15e9
    assert max_output_for_budget(TIERED, 272_000, 695_000_000) == 1_000


def test_missing_tier_rates_scale_the_models_own_rates_by_the_tier_ratio():
    price = ModelPrice(name="claude-like", provider="test", mode="chat", input=3 * USD, output=15 * USD,
                       cached_input=300_000_000, cache_creation_input=3_750_000_000,
                       cache_creation_input_1h=6 * USD, reasoning_output=20 * USD,
                       long_context=LongContext(200_000, input=6 * USD, output=22_500_000_000))
    # input ×2 for the cache kinds, output ×1.5 for reasoning
    assert price.rates(200_001) == Rates(input=6 * USD, cached_input=600_000_000, cache_creation_input=7_500_000_000,
                                         cache_creation_input_1h=12 * USD, output=22_500_000_000,
                                         reasoning_output=30 * USD)
    assert price.rates(200_000) == Rates(input=3 * USD, cached_input=300_000_000, cache_creation_input=3_750_000_000,
                                         cache_creation_input_1h=6 * USD, output=15 * USD, reasoning_output=20 * USD)


def test_scaled_rates_round_up_and_given_rates_win():
    # cached 1 × 3/2 = 1.5 → 2; the tier's own cache-write rate is used as given.
    price = ModelPrice(name="m", provider="test", mode="chat", input=2, output=2, cached_input=1,
                       cache_creation_input=5,
                       long_context=LongContext(10, input=3, output=2, cache_creation_input=4))
    rates = price.rates(11)
    assert (rates.cached_input, rates.cache_creation_input, rates.cache_creation_input_1h) == (2, 4, 4)


def test_kinds_without_their_own_rate_fall_back_within_the_tier():
    price = ModelPrice(name="m", provider="test", mode="chat", input=2 * USD, output=8 * USD,
                       long_context=LongContext(10, input=4 * USD, output=12 * USD))
    assert price.rates(11) == Rates(4 * USD, 4 * USD, 4 * USD, 4 * USD, 12 * USD, 12 * USD)


def test_a_free_base_rate_gives_no_ratio_so_the_higher_rate_applies():
    price = ModelPrice(name="m", provider="test", mode="chat", input=0, output=0, cached_input=0,
                       reasoning_output=0, long_context=LongContext(10, input=3, output=5))
    rates = price.rates(11)
    assert (rates.cached_input, rates.reasoning_output) == (3, 5)


@pytest.mark.parametrize("bad", [
    {"above_input_tokens": 0}, {"above_input_tokens": -1}, {"above_input_tokens": True},
    {"above_input_tokens": 1.5}, {"input": -1}, {"output": 1.5}, {"cached_input": -3}, {"reasoning_output": "1"},
])
def test_long_context_refuses_bad_values(bad):
    values = {"above_input_tokens": 1_000, "input": 1, "output": 1, **bad}
    field = next(iter(bad))
    with pytest.raises(ValueError, match=f"long_context.{field}"):
        LongContext(**values)


def test_model_price_refuses_a_tier_that_is_not_a_long_context():
    with pytest.raises(ValueError, match="long_context"):
        ModelPrice(name="m", provider="test", mode="chat", input=1, output=1,
                   long_context={"above_input_tokens": 10, "input": 1, "output": 1})


def test_bundled_gpt_5_4_prices_a_300k_request_at_its_tier(bundled):
    price = bundled.resolve("gpt-5.4")
    assert price.long_context == LongContext(272_000, input=5 * USD, output=22_500_000_000, cached_input=500_000_000)
    # 200000×5e9 + 100000×0.5e9 + 2000×22.5e9 = 1000e12 + 50e12 + 45e12 = 1095e12 → /1e6
    assert cost_nano(price, Usage(300_000, 2_000, cached_tokens=100_000)) == 1_095_000_000
    # the same tokens with 272000 of input: 172000×2.5e9 + 100000×0.25e9 + 2000×15e9 = 485e12
    assert cost_nano(price, Usage(272_000, 2_000, cached_tokens=100_000)) == 485_000_000
    # 300000×5e9 + 2000×22.5e9 = 1500e12 + 45e12
    assert worst_case_nano(price, 300_000, 2_000) == 1_545_000_000


def test_bundled_gemini_2_5_pro_prices_a_300k_request_at_its_tier(bundled):
    price = bundled.resolve("gemini-2.5-pro")
    assert price.name == "gemini/gemini-2.5-pro"
    assert price.long_context == LongContext(200_000, input=2_500_000_000, output=15 * USD, cached_input=250_000_000)
    # 250000×2.5e9 + 50000×0.25e9 + 3000×15e9 + 1000 reasoning×15e9
    #   = 625e12 + 12.5e12 + 45e12 + 15e12 = 697.5e12 → /1e6
    usage = Usage(300_000, 4_000, cached_tokens=50_000, reasoning_tokens=1_000)
    assert cost_nano(price, usage) == 697_500_000
    # at 200000: 150000×1.25e9 + 50000×0.125e9 + 4000×10e9 = 187.5e12 + 6.25e12 + 40e12 = 233.75e12
    usage = Usage(200_000, 4_000, cached_tokens=50_000, reasoning_tokens=1_000)
    assert cost_nano(price, usage) == 233_750_000


def test_bundled_tiers_are_read_for_the_models_that_list_them(bundled):
    tiered = [name for name in bundled.names() if bundled.resolve(name).long_context is not None]
    assert len(tiered) == 150
    assert bundled.resolve("gpt-4o").long_context is None
    for name in tiered:
        price = bundled.resolve(name)
        assert price.long_context.input >= price.input and price.long_context.output >= price.output, name


# -- properties --------------------------------------------------------------------------------

RATE = st.integers(min_value=0, max_value=100 * USD)
OPTIONAL_RATE = st.none() | RATE


@st.composite
def prices(draw) -> ModelPrice:
    tier = draw(st.none() | st.builds(
        LongContext, above_input_tokens=st.integers(1, 3_000), input=RATE, output=RATE, cached_input=OPTIONAL_RATE,
        cache_creation_input=OPTIONAL_RATE, cache_creation_input_1h=OPTIONAL_RATE, reasoning_output=OPTIONAL_RATE))
    return ModelPrice(name="p", provider="test", mode="chat", input=draw(RATE), output=draw(RATE),
                      cached_input=draw(OPTIONAL_RATE), cache_creation_input=draw(OPTIONAL_RATE),
                      cache_creation_input_1h=draw(OPTIONAL_RATE), reasoning_output=draw(OPTIONAL_RATE),
                      web_search_call=draw(st.none() | st.integers(0, 10**8)), long_context=tier)


@st.composite
def usages_within(draw, prompt: int, output: int, calls: int) -> Usage:
    """Any usage with at most ``prompt`` in, ``output`` out and ``calls`` searches, split into kinds."""
    p = draw(st.integers(0, prompt))
    cached = draw(st.integers(0, p))
    creation = draw(st.integers(0, p - cached))
    o = draw(st.integers(0, output))
    return Usage(p, o, cached_tokens=cached, cache_creation_tokens=creation,
                 cache_creation_1h_tokens=draw(st.integers(0, creation)), reasoning_tokens=draw(st.integers(0, o)),
                 web_search_calls=draw(st.integers(0, calls)))


@settings(max_examples=500, deadline=None)
@given(price=prices(), prompt=st.integers(0, 4_000), output=st.integers(0, 4_000), calls=st.integers(0, 3),
       data=st.data())
def test_the_worst_case_bounds_the_cost_of_every_usage_within_it(price, prompt, output, calls, data):
    usage = data.draw(usages_within(prompt, output, calls))
    assert cost_nano(price, usage) <= worst_case_nano(price, prompt, output, web_search_calls=calls)


@settings(max_examples=500, deadline=None)
@given(price=prices(), prompt=st.integers(0, 4_000), room=st.integers(-10, 10**9), calls=st.integers(0, 3))
def test_max_output_for_budget_is_exactly_the_largest_output_the_worst_case_allows(price, prompt, room, calls):
    k = max_output_for_budget(price, prompt, room, web_search_calls=calls)
    if worst_case_nano(price, prompt, 0, web_search_calls=calls) > room:
        assert k == 0
        return
    assert worst_case_nano(price, prompt, k, web_search_calls=calls) <= room
    if k < UNBOUNDED_OUTPUT:
        assert worst_case_nano(price, prompt, k + 1, web_search_calls=calls) > room


@settings(max_examples=300, deadline=None)
@given(price=prices(), output=st.integers(0, 4_000))
def test_just_above_the_threshold_every_token_costs_the_tier_rate(price, output):
    if price.long_context is None:
        return
    threshold = price.long_context.above_input_tokens
    above, base = price.rates(threshold + 1), price.rates(threshold)
    assert cost_nano(price, Usage(threshold + 1, output)) == -(-((threshold + 1) * above.input
                                                                + output * above.output) // 1_000_000)
    assert cost_nano(price, Usage(threshold, output)) == -(-(threshold * base.input + output * base.output)
                                                           // 1_000_000)
