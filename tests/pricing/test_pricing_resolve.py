"""Which price a requested model name gets: each rule, and the names no rule may match."""

from __future__ import annotations

import pytest

from pricing.catalog import FALLBACK_NAME, RESOLVE_CACHE_SIZE, Catalog, ModelPrice, fine_tune_base, spellings, undated


def price(name: str, provider: str = "openai", input: int = 1_000_000_000, output: int = 2_000_000_000) -> ModelPrice:
    return ModelPrice(name=name, provider=provider, mode="chat", input=input, output=output)


NAMES = [
    "gpt-4", "gpt-4-0613", "gpt-4o", "gpt-4o-mini", "gpt-4o-2024-08-06", "gpt-4.1",
    "claude-sonnet-4-5", "gemini/gemini-2.5-pro", "mistral/mistral-large", "xai/grok-4.3",
    "groq/openai/gpt-oss-120b", "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "azure/gpt-4o", "text-embedding@001",
    "ft:gpt-4o-mini-2024-07-18", "ft:gpt-4o-2024-08-06", "ft:gpt-4o-2024-11-20", "ft:gpt-3.5-turbo",
    "ft:gpt-4.1-2025-04-14",
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
])
def test_provider_prefix_is_added(catalog, model, expected):
    assert resolved(catalog, model) == expected


def test_added_prefixes_are_tried_in_their_documented_order():
    both = Catalog({"mistral/shared-model": price("mistral/shared-model", "mistral"),
                    "groq/shared-model": price("groq/shared-model", "groq")})
    assert resolved(both, "shared-model") == "mistral/shared-model"


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4o-2099-12-31", "gpt-4o"),
    ("gpt-4o-mini-2099-01-01", "gpt-4o-mini"),
    ("gpt-4-1106", "gpt-4"),                           # OpenAI's four-digit -MMDD snapshots
    ("gpt-4-0314", "gpt-4"),
    ("mistral-large-2099-01-01", "mistral/mistral-large"),   # and the provider prefix added
    ("openai/gpt-4.1-2099-01-01", "gpt-4.1"),
    ("claude-sonnet-4-5-2099-12-31", "claude-sonnet-4-5"),
])
def test_dated_snapshot_falls_back_to_the_undated_name(catalog, model, expected):
    assert resolved(catalog, model) == expected


def test_a_priced_dated_snapshot_keeps_its_own_price(catalog):
    assert resolved(catalog, "gpt-4-0613") == "gpt-4-0613"
    assert resolved(catalog, "gpt-4o-2024-08-06") == "gpt-4o-2024-08-06"


@pytest.mark.parametrize("model", [
    "gpt-4o-mini-20990101",          # eight digits: not a form the snapshot rule drops
    "claude-sonnet-4-5-20991231",
    "claude-sonnet-4-5@20250929",
    "gemini-2.5-pro-09-2025",
    "mistral-large-2411",            # YYMM is not a month and day
    "gpt-4-1306", "gpt-4-0632", "gpt-4o-2099-13-01", "gpt-4o-2099-01-32",
    "gpt-4o-audio-preview-2099-01-01",   # drops only the date; gpt-4o-audio-preview has no price here
    "gpt-4o-2099-01-01-2099-01-01",      # one date, once
])
def test_snapshot_rule_drops_only_a_real_trailing_date_down_to_a_priced_name(catalog, model):
    assert catalog.resolve(model) is None


@pytest.mark.parametrize(("name", "expected"), [
    ("gpt-4o-2024-08-06", "gpt-4o"), ("x-0613", "x"), ("x-1231", "x"), ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("x-20241022", None), ("x-2411", None), ("x@20241022", None), ("x-09-2025", None), ("x@2024-08-06", None),
    ("x-8192", None), ("x-2024-13-01", None), ("x-0000", None), ("x-0100", None), ("mixtral-8x7b-32768", None),
    ("gpt-4o", None), ("-0613", None), ("x-2024-08-06 ", None), ("x-2024-08-06\n", None), ("x-0613\n", None),
])
def test_undated_recognises_only_the_two_snapshot_forms(name, expected):
    assert undated(name) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("ft:gpt-4o-mini:org::id", "gpt-4o-mini"),
    ("ft:gpt-4o-mini-2024-07-18:org:suffix:id", "gpt-4o-mini-2024-07-18"),
    ("ft:gpt-4o-mini-2024-07-18:org::id:ckpt-step-88", "gpt-4o-mini-2024-07-18"),
    ("ft:gpt-4o-mini", None), ("ft:gpt-4o-mini:a:b:c:d:e", None), ("ft::org::id", None),
    ("ft:gpt-4o-mini:org::id ", None), ("xft:gpt-4o:org::id", None), ("gpt-4o-mini", None),
])
def test_fine_tune_base_reads_the_openai_fine_tune_form(name, expected):
    assert fine_tune_base(name) == expected


@pytest.mark.parametrize(("model", "expected"), [
    ("ft:gpt-4o-mini-2024-07-18:org:suffix:id", "ft:gpt-4o-mini-2024-07-18"),
    ("ft:gpt-4o-mini-2024-07-18:org::id:ckpt-step-88", "ft:gpt-4o-mini-2024-07-18"),
    ("ft:gpt-4o-mini:org::id", "ft:gpt-4o-mini-2024-07-18"),       # the only snapshot priced for fine-tunes
    ("ft:gpt-4o:org::id", "ft:gpt-4o-2024-11-20"),                 # the most recent of two
    ("ft:gpt-3.5-turbo-0613:org::id", "ft:gpt-3.5-turbo"),         # dated base: its undated fine-tune price
    ("ft:gpt-3.5-turbo:org:custom_suffix:id", "ft:gpt-3.5-turbo"),
    ("openai/ft:gpt-4.1-2025-04-14:org::id", "ft:gpt-4.1-2025-04-14"),
])
def test_fine_tune_costs_the_fine_tune_price_of_its_base(catalog, model, expected):
    assert resolved(catalog, model) == expected


@pytest.mark.parametrize("model", [
    "ft:gpt-4:org::id",                  # no fine-tune price for gpt-4 (its base price is lower)
    "ft:gpt-4.1:org::id ",               # not the fine-tune form
    "ft:gpt-4o-2024-05-13:org::id",      # a snapshot with no fine-tune price
    "ft:gpt-4o-mini-custom:org::id",
    "ft:gpt-4o-mini-2024-07-18x:org::id",
])
def test_fine_tune_without_a_fine_tune_price_is_unknown(catalog, model):
    assert catalog.resolve(model) is None


@pytest.mark.parametrize("model", [
    "gpt-4ox", "gpt-4omni", "gpt-", "gpt", "claude-sonnet-45", "grok-4.30", "unknown-model",
    "openai/", "/gpt-4o", "", "llama-3-70b",
    # what only a longest-prefix rule would match
    "gpt-4.5-preview", "gpt-4-32k", "gpt-4o-audio-preview", "gpt-4o-miniX", "gpt-4o-mini ", " gpt-4o",
    "gpt-4o\n", "gpt-4o-2099-01-01\n", "gpt-4-1106\n", "gpt-4o-mini-custom-ft", "gpt-4o-realtime-preview", "gpt-4.1:my-deployment",
    "text-embedding@001/v2", "openai/gpt-4o-mini-custom", "gemini-2.5-pro-exp", "gpt-4o-2024-08-06x",
    "azure/gpt-4o-deployment",
])
def test_names_no_rule_matches(catalog, model):
    assert catalog.resolve(model) is None


def test_alias_resolves_to_its_target(catalog):
    aliased = Catalog({name: price(name) for name in NAMES},
                      aliases={"house-model": "gpt-4o-mini", "house-gemini": "gemini-2.5-pro", "chain": "house-model"})
    assert resolved(aliased, "house-model") == "gpt-4o-mini"
    assert resolved(aliased, "house-gemini") == "gemini/gemini-2.5-pro"   # the target resolves by the rules
    assert resolved(aliased, "chain") == "gpt-4o-mini"


def test_alias_gives_a_name_the_rules_leave_unknown():
    models = {name: price(name) for name in NAMES}
    aliased = Catalog(models, aliases={"gpt-4o-custom": "gpt-4.1", "openai/gpt-4": "gpt-4o"})
    assert resolved(aliased, "gpt-4o-custom") == "gpt-4.1"
    assert resolved(aliased, "openai/gpt-4") == "gpt-4o"            # not the stripped gpt-4
    assert aliased.resolve("gpt-4o-custom-2") is None               # an alias is one exact name


def test_a_priced_name_is_not_overridden_by_an_alias():
    aliased = Catalog({name: price(name) for name in NAMES}, aliases={"gpt-4o": "gpt-4o-mini"})
    assert resolved(aliased, "gpt-4o") == "gpt-4o"


def test_alias_to_an_unpriced_model_is_refused():
    with pytest.raises(ValueError, match="'house-model' → 'nowhere-model'"):
        Catalog({name: price(name) for name in NAMES}, aliases={"house-model": "nowhere-model"})


def test_alias_to_a_name_only_a_prefix_would_match_is_refused():
    with pytest.raises(ValueError, match="'house-model' → 'gpt-4o-mini-custom'"):
        Catalog({name: price(name) for name in NAMES}, aliases={"house-model": "gpt-4o-mini-custom"})


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
    assert with_fallback.resolve("gpt-4o-custom").name == FALLBACK_NAME


def test_unknown_model_without_fallback_is_none():
    assert Catalog({"gpt-4o": price("gpt-4o")}).resolve("brand-new-model") is None


def test_resolution_is_cached(catalog):
    first = catalog.resolve("openai/gpt-4o-mini-2099-01-01")
    assert first is not None and first.name == "gpt-4o-mini"
    assert catalog.resolve("openai/gpt-4o-mini-2099-01-01") is first
    assert catalog._cache["openai/gpt-4o-mini-2099-01-01"] is first


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
