"""Which price a requested model name gets: each rule, and the names no rule may match."""

from __future__ import annotations

import pytest

from pricing.catalog import FALLBACK_NAME, RESOLVE_CACHE_SIZE, Catalog, ModelPrice, spellings, undated


def price(name: str, provider: str = "openai", input: int = 1_000_000_000, output: int = 2_000_000_000) -> ModelPrice:
    return ModelPrice(name=name, provider=provider, mode="chat", input=input, output=output)


NAMES = [
    "gpt-4", "gpt-4-0613", "gpt-4o", "gpt-4o-mini", "gpt-4o-2024-08-06", "gpt-4.1",
    "claude-sonnet-4-5", "gemini/gemini-2.5-pro", "mistral/mistral-large", "xai/grok-4.3",
    "groq/openai/gpt-oss-120b", "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "azure/gpt-4o", "text-embedding@001",
]


@pytest.fixture
def catalog() -> Catalog:
    return Catalog({name: price(name) for name in NAMES})


def resolved(catalog: Catalog, model: str) -> str | None:
    found = catalog.resolve(model)
    return None if found is None else found.name


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-2024-08-06", "azure/gpt-4o", "gemini/gemini-2.5-pro"])
def test_exact_name(catalog, model):
    assert resolved(catalog, model) == model


def test_exact_name_ignoring_case(catalog):
    assert resolved(catalog, "GPT-4o") == "gpt-4o"
    assert resolved(catalog, "together_ai/meta-llama/llama-3.3-70b-instruct-turbo") == \
        "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo"


@pytest.mark.parametrize(("model", "expected"), [
    ("openai/gpt-4o", "gpt-4o"),
    ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
    ("azure/gpt-4.1", "gpt-4.1"),                     # not priced under azure/: the model's own price
    ("google/gemini-2.5-pro", "gemini/gemini-2.5-pro"),
])
def test_provider_prefix_is_dropped(catalog, model, expected):
    assert resolved(catalog, model) == expected


@pytest.mark.parametrize(("model", "expected"), [
    ("gemini-2.5-pro", "gemini/gemini-2.5-pro"),
    ("grok-4.3", "xai/grok-4.3"),
    ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    ("openai/gpt-oss-120b", "groq/openai/gpt-oss-120b"),
])
def test_provider_prefix_is_added(catalog, model, expected):
    assert resolved(catalog, model) == expected


def test_added_prefixes_are_tried_in_their_documented_order():
    both = Catalog({"mistral/shared-model": price("mistral/shared-model", "mistral"),
                    "groq/shared-model": price("groq/shared-model", "groq")})
    assert resolved(both, "shared-model") == "mistral/shared-model"


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4o-2099-12-31", "gpt-4o"),
    ("gpt-4o-mini-20990101", "gpt-4o-mini"),
    ("claude-sonnet-4-5-20991231", "claude-sonnet-4-5"),
    ("gpt-4-1106", "gpt-4"),
    ("mistral-large-2411", "mistral/mistral-large"),   # YYMM, and the provider prefix added
    ("openai/gpt-4.1-2099-01-01", "gpt-4.1"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
    ("gemini-2.5-pro-09-2025", "gemini/gemini-2.5-pro"),
])
def test_dated_snapshot_falls_back_to_the_undated_name(catalog, model, expected):
    assert resolved(catalog, model) == expected


def test_a_priced_dated_snapshot_keeps_its_own_price(catalog):
    assert resolved(catalog, "gpt-4-0613") == "gpt-4-0613"
    assert resolved(catalog, "gpt-4o-2024-08-06") == "gpt-4o-2024-08-06"


@pytest.mark.parametrize(("name", "expected"), [
    ("gpt-4o-2024-08-06", "gpt-4o"), ("x-20241022", "x"), ("x-0613", "x"), ("x-2411", "x"),
    ("x@20241022", "x"), ("x-09-2025", "x"),
    ("x-8192", None), ("x-2024-13-01", None), ("x-0000", None), ("mixtral-8x7b-32768", None),
    ("gpt-4o", None), ("-0613", None),
])
def test_undated_recognises_only_real_dates(name, expected):
    assert undated(name) == expected


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4o-mini-custom-ft", "gpt-4o-mini"),
    ("gpt-4o-realtime-preview", "gpt-4o"),
    ("gpt-4.1:my-deployment", "gpt-4.1"),
    ("text-embedding@001/v2", "text-embedding@001"),
    ("openai/gpt-4o-mini-custom", "gpt-4o-mini"),
    ("gemini-2.5-pro-exp", "gemini/gemini-2.5-pro"),
])
def test_longest_prefix_at_a_name_boundary(catalog, model, expected):
    assert resolved(catalog, model) == expected


@pytest.mark.parametrize("model", [
    "gpt-4ox", "gpt-4omni", "gpt-", "gpt", "claude-sonnet-45", "grok-4.30", "unknown-model",
    "openai/", "/gpt-4o", "", "llama-3-70b",
])
def test_names_no_rule_matches(catalog, model):
    assert catalog.resolve(model) is None


def test_alias_resolves_to_its_target(catalog):
    aliased = Catalog({name: price(name) for name in NAMES},
                      aliases={"house-model": "gpt-4o-mini", "house-gemini": "gemini-2.5-pro", "chain": "house-model"})
    assert resolved(aliased, "house-model") == "gpt-4o-mini"
    assert resolved(aliased, "house-gemini") == "gemini/gemini-2.5-pro"   # the target resolves by the rules
    assert resolved(aliased, "chain") == "gpt-4o-mini"


def test_alias_wins_over_the_guessing_rules():
    models = {name: price(name) for name in NAMES}
    aliased = Catalog(models, aliases={"gpt-4o-custom": "gpt-4.1", "openai/gpt-4": "gpt-4o"})
    assert resolved(aliased, "gpt-4o-custom") == "gpt-4.1"          # not the prefix gpt-4o
    assert resolved(aliased, "openai/gpt-4") == "gpt-4o"            # not the stripped gpt-4


def test_a_priced_name_is_not_overridden_by_an_alias():
    aliased = Catalog({name: price(name) for name in NAMES}, aliases={"gpt-4o": "gpt-4o-mini"})
    assert resolved(aliased, "gpt-4o") == "gpt-4o"


def test_alias_to_an_unpriced_model_is_refused():
    with pytest.raises(ValueError, match="'house-model' → 'nowhere-model'"):
        Catalog({name: price(name) for name in NAMES}, aliases={"house-model": "nowhere-model"})


def test_alias_loop_is_refused():
    with pytest.raises(ValueError, match="loop"):
        Catalog({name: price(name) for name in NAMES}, aliases={"a": "b", "b": "a"})


def test_unknown_model_gets_the_fallback_named_fallback():
    fallback = price("whatever", provider="fallback", input=5_000_000_000, output=15_000_000_000)
    with_fallback = Catalog({"gpt-4o": price("gpt-4o")}, fallback=fallback)
    found = with_fallback.resolve("brand-new-model")
    assert found is not None
    assert (found.name, found.input, found.output) == (FALLBACK_NAME, 5_000_000_000, 15_000_000_000)
    assert with_fallback.resolve("gpt-4o").name == "gpt-4o"


def test_unknown_model_without_fallback_is_none():
    assert Catalog({"gpt-4o": price("gpt-4o")}).resolve("brand-new-model") is None


def test_resolution_is_cached(catalog):
    first = catalog.resolve("openai/gpt-4o-mini-custom")
    assert catalog.resolve("openai/gpt-4o-mini-custom") is first
    assert catalog._cache["openai/gpt-4o-mini-custom"] is first


def test_resolution_cache_stays_bounded(catalog):
    for index in range(RESOLVE_CACHE_SIZE + 10):
        catalog.resolve(f"unknown-{index}")
    assert len(catalog._cache) <= RESOLVE_CACHE_SIZE
    assert resolved(catalog, "gpt-4o") == "gpt-4o"


def test_spellings_list_the_prefix_variants_in_order():
    assert spellings("openai/gpt-oss-120b")[:4] == [
        "openai/gpt-oss-120b", "gpt-oss-120b", "gemini/openai/gpt-oss-120b", "mistral/openai/gpt-oss-120b"]
    assert spellings("gpt-4o")[:3] == ["gpt-4o", "gemini/gpt-4o", "mistral/gpt-4o"]


def test_resolve_refuses_non_strings(catalog):
    with pytest.raises(TypeError):
        catalog.resolve(None)


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4o", "gpt-4o"),
    ("openai/gpt-4o", "gpt-4o"),
    ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
    ("gpt-4o-2099-01-01", "gpt-4o"),
    ("gpt-4o-mini-custom-ft", "gpt-4o-mini"),
    ("gemini-2.5-pro", "gemini/gemini-2.5-pro"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"),
    ("mistral-large-latest", "mistral/mistral-large-latest"),
    ("grok-4.3", "xai/grok-4.3"),
    ("deepseek-chat", "deepseek-chat"),
    ("azure/gpt-4o", "azure/gpt-4o"),
    ("accounts/fireworks/models/llama-v3p1-8b-instruct",
     "fireworks_ai/accounts/fireworks/models/llama-v3p1-8b-instruct"),
])
def test_bundled_catalog_resolves_common_names(model, expected):
    assert resolved(Catalog.load(), model) == expected


def test_bundled_catalog_does_not_match_across_a_non_boundary():
    assert Catalog.load().resolve("gpt-4ox") is None
