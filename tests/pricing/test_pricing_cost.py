"""Cost arithmetic against hand-computed amounts from the bundled catalog's prices.

Prices below are USD per million tokens as written in pricing/data/catalog.json; in
nano-dollars per million tokens they are that × 1e9. Cost = Σ tokens × price / 1e6, rounded up.
"""

from __future__ import annotations

import pytest

from pricing.catalog import Catalog, ModelPrice
from pricing.cost import UNBOUNDED_OUTPUT, Usage, cost_nano, max_output_for_budget, worst_case_nano


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def cost(catalog: Catalog, model: str, usage: Usage) -> int:
    price = catalog.resolve(model)
    assert price is not None, model
    return cost_nano(price, usage)


def test_gpt_4o_prices_cached_tokens_at_the_cached_price(catalog):
    # gpt-4o: input 2.5, cached 1.25, output 10.
    # (1200-1024)×2.5e9 + 1024×1.25e9 + 350×10e9 = 440e9 + 1280e9 + 3500e9 = 5220e9 → /1e6
    assert cost(catalog, "gpt-4o", Usage(1200, 350, cached_tokens=1024)) == 5_220_000


def test_gpt_4o_mini(catalog):
    # gpt-4o-mini: input 0.15, cached 0.075, output 0.6.
    # 5904×150e6 + 4096×75e6 + 1000×600e6 = 885.6e9 + 307.2e9 + 600e9 = 1792.8e9 → /1e6
    assert cost(catalog, "gpt-4o-mini", Usage(10_000, 1_000, cached_tokens=4_096)) == 1_792_800


def test_gpt_4_1(catalog):
    # gpt-4.1: input 2, cached 0.5, output 8.
    # 30000×2e9 + 20000×0.5e9 + 2000×8e9 = 60e12 + 10e12 + 16e12 = 86e12 → /1e6
    assert cost(catalog, "gpt-4.1", Usage(50_000, 2_000, cached_tokens=20_000)) == 86_000_000


def test_o3_reasoning_tokens_are_part_of_completion_tokens(catalog):
    # o3: input 2, output 8, no separate reasoning price.
    # 3000×2e9 + (800 + 4200)×8e9 = 6e12 + 40e12 = 46e12 → /1e6
    assert cost(catalog, "o3", Usage(3_000, 5_000, reasoning_tokens=4_200)) == 46_000_000


def test_o1_with_cached_and_reasoning_tokens(catalog):
    # o1: input 15, cached 7.5, output 60.
    # 1000×15e9 + 1000×7.5e9 + 500×60e9 + 2500×60e9 = 15e12 + 7.5e12 + 30e12 + 150e12 = 202.5e12
    usage = Usage(2_000, 3_000, cached_tokens=1_000, reasoning_tokens=2_500)
    assert cost(catalog, "o1", usage) == 202_500_000


def test_claude_sonnet_prices_cache_reads_and_cache_writes(catalog):
    # claude-sonnet-4-5: input 3, cache read 0.3, cache write 3.75, output 15.
    # (12000-8000-3000)×3e9 + 8000×0.3e9 + 3000×3.75e9 + 800×15e9
    #   = 3e12 + 2.4e12 + 11.25e12 + 12e12 = 28.65e12 → /1e6
    usage = Usage(12_000, 800, cached_tokens=8_000, cache_creation_tokens=3_000)
    assert cost(catalog, "claude-sonnet-4-5", usage) == 28_650_000


def test_gemini_flash_with_reasoning_price(catalog):
    # gemini/gemini-2.5-flash: input 0.3, cached 0.03, output 2.5, reasoning 2.5.
    # 3000×0.3e9 + 1000×0.03e9 + 500×2.5e9 + 1000×2.5e9 = 0.9e12 + 0.03e12 + 1.25e12 + 2.5e12
    usage = Usage(4_000, 1_500, cached_tokens=1_000, reasoning_tokens=1_000)
    assert cost(catalog, "gemini-2.5-flash", usage) == 4_680_000


def test_mistral_large(catalog):
    # mistral/mistral-large-latest: input 0.5, output 1.5.
    # 2000×0.5e9 + 500×1.5e9 = 1e12 + 0.75e12 → /1e6
    assert cost(catalog, "mistral-large-latest", Usage(2_000, 500)) == 1_750_000


def test_deepseek_chat(catalog):
    # deepseek-chat: input 0.28, cached 0.028, output 0.42.
    # 400×280e6 + 600×28e6 + 333×420e6 = 112e9 + 16.8e9 + 139.86e9 = 268.66e9 → /1e6
    assert cost(catalog, "deepseek-chat", Usage(1_000, 333, cached_tokens=600)) == 268_660


def test_grok(catalog):
    # xai/grok-4.3: input 1.25, cached 0.2, output 2.5.
    # 40000×1.25e9 + 60000×0.2e9 + 10000×2.5e9 = 50e12 + 12e12 + 25e12 = 87e12 → /1e6
    assert cost(catalog, "grok-4.3", Usage(100_000, 10_000, cached_tokens=60_000)) == 87_000_000


def test_groq_llama(catalog):
    # groq/llama-guard-3-8b: input 0.2, output 0.2.
    # 700×0.2e9 + 3×0.2e9 = 140e9 + 0.6e9 = 140.6e9 → /1e6
    assert cost(catalog, "groq/llama-guard-3-8b", Usage(700, 3)) == 140_600


def test_together_llama(catalog):
    # together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo: input 1.04, output 1.04.
    # (1234 + 567)×1.04e9 = 1873.04e9 → /1e6
    assert cost(catalog, "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo", Usage(1_234, 567)) == 1_873_040


def test_embedding_costs_input_only(catalog):
    # text-embedding-3-small: input 0.02, output 0.
    # 8000×0.02e9 = 160e9 → /1e6
    assert cost(catalog, "text-embedding-3-small", Usage(8_000, 0)) == 160_000


def test_azure_price_rounds_up_once_per_request(catalog):
    # azure/us-gov/gpt-5.1: input 1.71875, cached 0.171875, output 13.75.
    # 2×1718.75e6 + 1×171.875e6 + 1×13750e6 = 3437.5e6 + 171.875e6 + 13750e6 = 17359.375e6
    #   → 17359.375 nano-dollars → 17360
    assert cost(catalog, "azure/us-gov/gpt-5.1", Usage(3, 1, cached_tokens=1)) == 17_360


def test_a_single_cached_token_costs_a_rounded_up_nano_dollar(catalog):
    # azure/eu/gpt-5-mini: cached 0.0275 → 1×27.5e6 / 1e6 = 27.5 → 28
    assert cost(catalog, "azure/eu/gpt-5-mini", Usage(1, 0, cached_tokens=1)) == 28


PLAIN = ModelPrice(name="plain", provider="test", mode="chat", input=3_000_000_000, output=15_000_000_000)
PRICEY_CACHE = ModelPrice(name="pricey", provider="test", mode="chat", input=3_000_000_000,
                          output=15_000_000_000, cached_input=300_000_000,
                          cache_creation_input=3_750_000_000, reasoning_output=20_000_000_000)


def test_no_tokens_cost_nothing():
    assert cost_nano(PLAIN, Usage(0, 0)) == 0


def test_more_cached_than_prompt_tokens_does_not_go_negative():
    # Uncached clamps at 0; the 10 cached tokens cost 10×3e9 (cached price falls back to input).
    assert cost_nano(PLAIN, Usage(5, 0, cached_tokens=10)) == 30_000


def test_more_reasoning_than_completion_tokens_does_not_go_negative():
    # Plain output clamps at 0; the 10 reasoning tokens cost 10×20e9.
    assert cost_nano(PRICEY_CACHE, Usage(0, 5, reasoning_tokens=10)) == 200_000


@pytest.mark.parametrize("bad", [-1, 1.5, True, None])
def test_usage_refuses_non_counts(bad):
    with pytest.raises(ValueError):
        Usage(bad, 0)
    with pytest.raises(ValueError):
        Usage(0, 0, cached_tokens=bad)


def test_worst_case_equals_the_cost_of_that_usage_for_an_ordinary_model():
    # 1000×3e9 + 500×15e9 = 10.5e12 → /1e6
    assert worst_case_nano(PLAIN, 1_000, 500) == 10_500_000 == cost_nano(PLAIN, Usage(1_000, 500))


def test_worst_case_covers_cache_writes_and_dearer_reasoning():
    # every prompt token at 3.75 (cache write), every output token at 20 (reasoning):
    # 1000×3.75e9 + 500×20e9 = 3.75e12 + 10e12 → /1e6
    assert worst_case_nano(PRICEY_CACHE, 1_000, 500) == 13_750_000
    for usage in (Usage(1_000, 500, cache_creation_tokens=1_000, reasoning_tokens=500),
                  Usage(1_000, 500, cached_tokens=400, cache_creation_tokens=600, reasoning_tokens=100)):
        assert cost_nano(PRICEY_CACHE, usage) <= worst_case_nano(PRICEY_CACHE, 1_000, 500)


def test_max_output_for_budget_exact_boundary():
    # room 10.5e6 nano: 1000 prompt tokens take 3e12 of 10.5e12, leaving 7.5e12 / 15e9 = 500.
    assert max_output_for_budget(PLAIN, 1_000, 10_500_000) == 500
    assert max_output_for_budget(PLAIN, 1_000, 10_499_999) == 499


def test_max_output_for_budget_is_the_largest_count_that_fits():
    price = ModelPrice(name="odd", provider="test", mode="chat", input=1_718_750_000, output=13_750_000_000,
                       cached_input=171_875_000)
    for prompt in (0, 1, 7, 1_000, 123_457):
        for room in (0, 1, 17_359, 17_360, 5_000_000, 987_654_321):
            k = max_output_for_budget(price, prompt, room)
            if worst_case_nano(price, prompt, 0) > room:
                assert k == 0
                continue
            assert worst_case_nano(price, prompt, k) <= room
            assert worst_case_nano(price, prompt, k + 1) > room


def test_max_output_for_budget_is_zero_when_the_prompt_does_not_fit():
    # 1000 prompt tokens cost 3_000_000 nano.
    assert max_output_for_budget(PLAIN, 1_000, 2_999_999) == 0
    assert max_output_for_budget(PLAIN, 1_000, -5) == 0


def test_max_output_for_budget_with_free_output_is_unbounded():
    free_output = ModelPrice(name="embed", provider="test", mode="embedding", input=20_000_000, output=0)
    assert max_output_for_budget(free_output, 1_000, 20_000) == UNBOUNDED_OUTPUT == 2**31 - 1
    assert max_output_for_budget(free_output, 1_000, 19_999) == 0


def test_max_output_for_budget_caps_huge_answers():
    cheap = ModelPrice(name="cheap", provider="test", mode="chat", input=1, output=1)
    assert max_output_for_budget(cheap, 0, 10**12) == UNBOUNDED_OUTPUT


def test_max_output_for_budget_uses_the_worst_case_prices():
    # prompt at 3.75: 1000×3.75e9 = 3.75e12; room 13.75e6 → 10e12 left / 20e9 (reasoning) = 500.
    assert max_output_for_budget(PRICEY_CACHE, 1_000, 13_750_000) == 500


HOUR_CACHE = ModelPrice(name="hour-cache", provider="test", mode="chat", input=5_000_000_000, output=25_000_000_000,
                        cached_input=500_000_000, cache_creation_input=6_250_000_000,
                        cache_creation_input_1h=10_000_000_000, web_search_call=10_000_000)


def test_hour_long_cache_writes_cost_the_hour_price_and_are_part_of_the_cache_writes():
    # 10000 prompt: 2000 read, 5000 written of which 3000 for an hour; 1000 output.
    # 3000×5e9 + 2000×0.5e9 + 2000×6.25e9 + 3000×10e9 + 1000×25e9 = 15e12+1e12+12.5e12+30e12+25e12 → /1e6
    usage = Usage(10_000, 1_000, cached_tokens=2_000, cache_creation_tokens=5_000, cache_creation_1h_tokens=3_000)
    assert cost_nano(HOUR_CACHE, usage) == 83_500_000


def test_hour_long_cache_writes_without_an_hour_price_cost_the_cache_write_price():
    # claude-sonnet-like PRICEY_CACHE has no hour price: 1000 writes at 3.75e9 whatever their duration.
    assert cost_nano(PRICEY_CACHE, Usage(1_000, 0, cache_creation_tokens=1_000, cache_creation_1h_tokens=600)) == \
        cost_nano(PRICEY_CACHE, Usage(1_000, 0, cache_creation_tokens=1_000)) == 3_750_000


def test_more_hour_writes_than_cache_writes_does_not_go_negative():
    # short-lived writes clamp at 0; the 10 hour writes cost 10×10e9; 5 prompt tokens are all written.
    assert cost_nano(HOUR_CACHE, Usage(5, 0, cache_creation_tokens=5, cache_creation_1h_tokens=10)) == 100_000


def test_web_search_calls_cost_their_price_per_call():
    # 2 calls × 10_000_000 nano ($0.01) on top of 1000×5e9 + 100×25e9 = 7.5e12 → 7_500_000
    assert cost_nano(HOUR_CACHE, Usage(1_000, 100, web_search_calls=2)) == 27_500_000
    assert cost_nano(PLAIN, Usage(1_000, 100, web_search_calls=2)) == cost_nano(PLAIN, Usage(1_000, 100))


def test_worst_case_covers_hour_long_cache_writes_and_web_search_calls():
    # every prompt token at 10 (hour write): 1000×10e9 + 500×25e9 = 22.5e12 → 22_500_000; + 3 calls × 1e7
    assert worst_case_nano(HOUR_CACHE, 1_000, 500) == 22_500_000
    assert worst_case_nano(HOUR_CACHE, 1_000, 500, web_search_calls=3) == 52_500_000
    usage = Usage(1_000, 500, cache_creation_tokens=1_000, cache_creation_1h_tokens=1_000, web_search_calls=3)
    assert cost_nano(HOUR_CACHE, usage) == worst_case_nano(HOUR_CACHE, 1_000, 500, web_search_calls=3)


def test_max_output_for_budget_leaves_room_for_web_search_calls():
    # 52.5e6 room: prompt 10e12 + 3 calls 30e12 leave 12.5e12 / 25e9 = 500 output tokens.
    assert max_output_for_budget(HOUR_CACHE, 1_000, 52_500_000, web_search_calls=3) == 500
    assert max_output_for_budget(HOUR_CACHE, 1_000, 52_499_999, web_search_calls=3) == 499
    assert max_output_for_budget(HOUR_CACHE, 1_000, 52_500_000) == 1_700


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_new_usage_counts_refuse_non_counts(bad):
    with pytest.raises(ValueError):
        Usage(0, 0, cache_creation_1h_tokens=bad)
    with pytest.raises(ValueError):
        Usage(0, 0, web_search_calls=bad)
    with pytest.raises(ValueError):
        worst_case_nano(HOUR_CACHE, 0, 0, web_search_calls=bad)
