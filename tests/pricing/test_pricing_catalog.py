"""Loading the catalog: the bundled file, user price files in both formats, and bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pricing.catalog import Catalog, LongContext, ModelPrice
from pricing.formats import per_token_to_per_million


def write(path: Path, document) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document, encoding="utf-8")
    return path


def test_bundled_catalog_records_its_source_and_date():
    catalog = Catalog.load()
    assert "litellm 1.109.1" in catalog.source
    assert "model_prices_and_context_window_backup.json" in catalog.source
    assert catalog.source_date == "2026-11-22"
    assert len(catalog.generated_at) == 10 and catalog.generated_at[:2] == "20"
    assert catalog.files == ()


def test_bundled_catalog_prices_are_nano_dollars_per_million_tokens():
    gpt_4o = Catalog.load().resolve("gpt-4o")
    assert gpt_4o == ModelPrice(name="gpt-4o", provider="openai", mode="chat", input=2_500_000_000,
                                output=10_000_000_000, cached_input=1_250_000_000, cache_creation_input=None,
                                reasoning_output=None, max_input_tokens=128_000, max_output_tokens=16_384)


def test_bundled_catalog_covers_the_main_providers():
    catalog = Catalog.load()
    providers = {catalog.resolve(name).provider for name in catalog.names()}
    assert {"openai", "text-completion-openai", "azure", "anthropic", "gemini", "mistral", "deepseek", "xai",
            "groq", "together_ai", "fireworks_ai"} <= providers
    assert len(catalog) == len(catalog.names()) > 1_000
    assert catalog.names() == sorted(catalog.names())


def test_user_file_in_farebox_format_overrides_and_adds(tmp_path):
    path = write(tmp_path / "prices.json", {"models": {
        "gpt-4o": {"provider": "openai", "input": "2", "output": "8.5", "cached_input": "0.5"},
        "house-llm": {"input": "0.000000001", "output": 3, "max_output_tokens": 4096},
    }})
    catalog = Catalog.load(extra_files=[path])
    assert catalog.resolve("gpt-4o") == ModelPrice(name="gpt-4o", provider="openai", mode="chat",
                                                   input=2_000_000_000, output=8_500_000_000,
                                                   cached_input=500_000_000)
    assert catalog.resolve("house-llm") == ModelPrice(name="house-llm", provider="custom", mode="chat", input=1,
                                                      output=3_000_000_000, max_output_tokens=4096)
    assert catalog.files == (str(path),)
    assert len(catalog) == len(Catalog.load()) + 1


def test_user_file_in_community_format(tmp_path):
    path = write(tmp_path / "model_prices.json", {
        "sample_spec": {"input_cost_per_token": 0.0, "max_input_tokens": "max input tokens"},
        "gpt-4o": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 2e-06,
                   "output_cost_per_token": 8e-06, "cache_read_input_token_cost": 1.5e-07},
        "my-embedder": {"mode": "embedding", "input_cost_per_token": 1e-08},
        "my-reasoner": {"input_cost_per_token": 1.1e-06, "output_cost_per_token": 4.4e-06,
                        "output_cost_per_reasoning_token": 5.5e-06, "max_output_tokens": 100000},
        "an-image-model": {"mode": "image_generation", "input_cost_per_token": 1e-06, "output_cost_per_image": 0.04},
        "no-output-price": {"mode": "chat", "input_cost_per_token": 1e-06},
    })
    catalog = Catalog.load(extra_files=[str(path)])
    assert catalog.resolve("gpt-4o") == ModelPrice(name="gpt-4o", provider="openai", mode="chat",
                                                   input=2_000_000_000, output=8_000_000_000,
                                                   cached_input=150_000_000)
    assert catalog.resolve("my-embedder") == ModelPrice(name="my-embedder", provider="custom", mode="embedding",
                                                        input=10_000_000, output=0)
    assert catalog.resolve("my-reasoner") == ModelPrice(name="my-reasoner", provider="custom", mode="chat",
                                                        input=1_100_000_000, output=4_400_000_000,
                                                        reasoning_output=5_500_000_000, max_output_tokens=100_000)
    assert "an-image-model" not in catalog
    assert "no-output-price" not in catalog
    assert "sample_spec" not in catalog


def test_later_user_files_override_earlier_ones(tmp_path):
    first = write(tmp_path / "a.json", {"models": {"house-llm": {"input": "1", "output": "1"}}})
    second = write(tmp_path / "b.json", {"house-llm": {"input_cost_per_token": 2e-06, "output_cost_per_token": 2e-06}})
    catalog = Catalog.load(extra_files=[first, second])
    assert (catalog.resolve("house-llm").input, catalog.resolve("house-llm").output) == (2_000_000_000, 2_000_000_000)


def test_a_single_path_is_one_file_not_its_characters(tmp_path):
    path = write(tmp_path / "a.json", {"models": {"house-llm": {"input": "1", "output": "1"}}})
    assert "house-llm" in Catalog.load(extra_files=str(path))


def test_aliases_and_fallback_through_load(tmp_path):
    fallback = ModelPrice(name="x", provider="fallback", mode="chat", input=10_000_000_000, output=30_000_000_000)
    catalog = Catalog.load(aliases={"our-default": "gpt-4o-mini"}, fallback=fallback)
    assert catalog.resolve("our-default").name == "gpt-4o-mini"
    assert catalog.resolve("never-heard-of-it").name == "fallback"


@pytest.mark.parametrize(("document", "message"), [
    ("{not json", "not valid JSON"),
    ([1, 2], "expected a JSON object"),
    ({"hello": "world"}, "not a price file"),
    ({"models": [1]}, "'models' must be an object"),
    ({"models": {"bad-model": {"input": "1"}}}, "model 'bad-model': missing required price 'output'"),
    ({"models": {"bad-model": {"input": "-1", "output": "1"}}}, "model 'bad-model': input"),
    ({"models": {"bad-model": {"input": "cheap", "output": "1"}}}, "model 'bad-model': input"),
    ({"models": {"bad-model": {"input": "1", "output": "1", "max_output_tokens": "lots"}}},
     "model 'bad-model': max_output_tokens"),
    ({"models": {"bad-model": "1"}}, "model 'bad-model': entry must be a JSON object"),
    ({"bad-model": {"input_cost_per_token": "free", "output_cost_per_token": 1e-06}},
     "model 'bad-model': input_cost_per_token"),
    ({"bad-model": {"input_cost_per_token": -1e-06, "output_cost_per_token": 1e-06}},
     "model 'bad-model': input_cost_per_token"),
])
def test_malformed_user_file_names_the_file_and_model(tmp_path, document, message):
    path = write(tmp_path / "broken.json", document)
    with pytest.raises(ValueError) as raised:
        Catalog.load(extra_files=[path])
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def test_missing_user_file_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="nope.json"):
        Catalog.load(extra_files=[tmp_path / "nope.json"])


@pytest.mark.parametrize(("per_token", "per_million"), [
    (1.5e-07, "0.15"), (2.5e-06, "2.5"), (1e-05, "10"), (0.0, "0"), (0, "0"), (3.75e-08, "0.0375"),
    (1.71875e-06, "1.71875"), (7e-09, "0.007"), (0.00012, "120"),
])
def test_per_token_floats_convert_exactly(per_token, per_million):
    assert per_token_to_per_million(per_token) == per_million


def test_model_price_refuses_bad_amounts():
    with pytest.raises(ValueError):
        ModelPrice(name="m", provider="p", mode="chat", input=-1, output=0)
    with pytest.raises(ValueError):
        ModelPrice(name="m", provider="p", mode="chat", input=1.5, output=0)
    with pytest.raises(ValueError):
        ModelPrice(name="m", provider="p", mode="chat", input=1, output=1, max_output_tokens=-3)


def test_pricing_imports_without_aiohttp_redis_or_proxy():
    code = ("import sys, pricing, pricing.catalog, pricing.cost, pricing.money, pricing.formats\n"
            "pricing.Catalog.load()\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'redis', 'proxy'))\n"
            "print(','.join(bad))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_hour_cache_write_and_web_search_prices_in_both_formats(tmp_path):
    ours = write(tmp_path / "ours.json", {"models": {"house-claude": {
        "provider": "anthropic", "input": "3", "output": "15", "cached_input": "0.3", "cache_creation_input": "3.75",
        "cache_creation_input_1h": "6", "web_search_call": "0.01"}}})
    theirs = write(tmp_path / "theirs.json", {"house-searcher": {
        "litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
        "search_context_cost_per_query": {"search_context_size_low": 0.03, "search_context_size_medium": 0.035,
                                          "search_context_size_high": 0.05}}})
    catalog = Catalog.load(extra_files=[ours, theirs])
    assert catalog.resolve("house-claude") == ModelPrice(
        name="house-claude", provider="anthropic", mode="chat", input=3_000_000_000, output=15_000_000_000,
        cached_input=300_000_000, cache_creation_input=3_750_000_000, cache_creation_input_1h=6_000_000_000,
        web_search_call=10_000_000)
    assert catalog.resolve("house-searcher") == ModelPrice(
        name="house-searcher", provider="openai", mode="chat", input=2_500_000_000, output=10_000_000_000,
        web_search_call=50_000_000)


@pytest.mark.parametrize("search", [{}, 0.01, {"search_context_size_low": -0.01}, {"search_context_size_low": "x"}])
def test_malformed_web_search_price_names_the_file_and_model(tmp_path, search):
    path = write(tmp_path / "theirs.json", {"bad-model": {
        "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06, "search_context_cost_per_query": search}})
    with pytest.raises(ValueError, match="model 'bad-model': search_context_cost_per_query"):
        Catalog.load(extra_files=[path])


def test_long_context_tiers_in_both_formats(tmp_path):
    ours = write(tmp_path / "ours.json", {"models": {"house-long": {
        "provider": "openai", "input": "2.5", "output": "15", "cached_input": "0.25",
        "long_context": {"above_input_tokens": 272000, "input": "5", "output": "22.5", "cached_input": "0.5"}}}})
    theirs = write(tmp_path / "theirs.json", {
        "house-gemini": {"litellm_provider": "gemini", "mode": "chat", "input_cost_per_token": 1.25e-06,
                         "output_cost_per_token": 1e-05, "input_cost_per_token_above_200k_tokens": 2.5e-06,
                         "output_cost_per_token_above_200k_tokens": 1.5e-05,
                         "input_cost_per_token_above_200k_tokens_priority": 4.5e-06},
        # two thresholds: one tier at the lower, each kind at the highest price listed
        "house-steps": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                        "input_cost_per_token_above_32k_tokens": 2e-06, "output_cost_per_token_above_32k_tokens": 5e-06,
                        "input_cost_per_token_above_256k_tokens": 3e-06, "output_cost_per_token_above_256k_tokens": 4e-06},
        # a tier price without the tier's input and output: those are the entry's own
        "house-partial": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                          "cache_read_input_token_cost_above_100k_tokens": 5e-07}})
    catalog = Catalog.load(extra_files=[ours, theirs])
    assert catalog.resolve("house-long").long_context == LongContext(
        272_000, input=5_000_000_000, output=22_500_000_000, cached_input=500_000_000)
    assert catalog.resolve("house-gemini").long_context == LongContext(200_000, input=2_500_000_000,
                                                                        output=15_000_000_000)
    assert catalog.resolve("house-steps").long_context == LongContext(32_000, input=3_000_000_000,
                                                                       output=5_000_000_000)
    assert catalog.resolve("house-partial").long_context == LongContext(
        100_000, input=1_000_000_000, output=2_000_000_000, cached_input=500_000_000)
    assert catalog.resolve("gpt-4o").long_context is None


def _tiered(tier) -> dict:
    return {"models": {"bad-model": {"input": "1", "output": "2", "long_context": tier}}}


@pytest.mark.parametrize(("document", "message"), [
    (_tiered({"above_input_tokens": 0, "input": "2", "output": "3"}), "long_context.above_input_tokens"),
    (_tiered({"above_input_tokens": -5, "input": "2", "output": "3"}), "long_context.above_input_tokens"),
    (_tiered({"above_input_tokens": "272k", "input": "2", "output": "3"}), "long_context.above_input_tokens"),
    (_tiered({"above_input_tokens": 1.5, "input": "2", "output": "3"}), "long_context.above_input_tokens"),
    (_tiered({"above_input_tokens": True, "input": "2", "output": "3"}), "long_context.above_input_tokens"),
    (_tiered({"input": "2", "output": "3"}), "long_context.above_input_tokens"),
    (_tiered({"above_input_tokens": 1000, "output": "3"}), "long_context: missing required price 'input'"),
    (_tiered({"above_input_tokens": 1000, "input": "2"}), "long_context: missing required price 'output'"),
    (_tiered({"above_input_tokens": 1000, "input": "-2", "output": "3"}), "long_context.input"),
    (_tiered({"above_input_tokens": 1000, "input": "2", "output": "3", "cached_input": "x"}),
     "long_context.cached_input"),
    (_tiered({"above_input_tokens": 1000, "input": "2", "output": "3", "cached_inptu": "1"}),
     "long_context.cached_inptu is not a field"),
    (_tiered("272000"), "long_context must be a JSON object"),
    ({"bad-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
                    "input_cost_per_token_above_200k_tokens": -1e-06}},
     "model 'bad-model': input_cost_per_token_above_200k_tokens"),
    ({"bad-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
                    "output_cost_per_token_above_200k_tokens": "dear"}},
     "model 'bad-model': output_cost_per_token_above_200k_tokens"),
    ({"bad-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
                    "input_cost_per_token_above_0k_tokens": 2e-06}},
     "model 'bad-model': input_cost_per_token_above_0k_tokens"),
])
def test_a_bad_long_context_tier_names_the_file_model_and_field(tmp_path, document, message):
    path = write(tmp_path / "broken.json", document)
    with pytest.raises(ValueError) as raised:
        Catalog.load(extra_files=[path])
    assert str(path) in str(raised.value)
    assert "model 'bad-model'" in str(raised.value)
    assert message in str(raised.value)
