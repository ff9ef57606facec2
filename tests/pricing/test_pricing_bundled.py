"""The bundled catalog: the names it resolves (and refuses), and what it carries from its source list."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing.catalog import ADDED_PREFIXES, STRIPPED_PREFIXES, Catalog, ModelPrice
from pricing.cost import Usage, cost_nano

REPO_ROOT = Path(__file__).resolve().parents[2]
ALIASES = {"house-model": "gpt-4o-mini", "house-claude": "anthropic/claude-haiku-4-5"}


@pytest.fixture(scope="module")
def bundled() -> Catalog:
    return Catalog.load(aliases=ALIASES)


def reference_list() -> tuple[dict, str]:
    """The community price list the bundled catalog is built from, and the date it was taken."""
    for parent in REPO_ROOT.parents:
        path = parent / "shared" / "reference" / "model_prices.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8")), Catalog.load().source_date
    pytest.skip("the reference price list (shared/reference/model_prices.json) is not beside the repository")


def nano_per_million(per_token: float) -> int:
    return int(Decimal(repr(per_token)) * 10**15)


# --- names that only a prefix rule matched, and the names that still resolve --------------------

@pytest.mark.parametrize("model", [
    "gpt-4.5-preview",          # was gpt-4 ($30/$60 instead of $75/$150); the source lists it only under azure/
    "gpt-4-32k",                # was gpt-4; likewise only azure/gpt-4-32k
    "gpt-4o-audio-preview",     # was gpt-4o; the source lists only its dated snapshots
    "gpt-4o-miniX",
    "gpt-4o-mini ",
    "gpt-4o-mini-custom-ft",
    "gpt-4ox",
])
def test_names_only_a_prefix_matched_are_unknown(bundled, model):
    assert bundled.resolve(model) is None


def test_prefix_lookalikes_get_their_own_price_where_the_catalog_has_one(bundled):
    assert bundled.resolve("azure/gpt-4.5-preview") == ModelPrice(
        name="azure/gpt-4.5-preview", provider="azure", mode="chat", input=75_000_000_000, output=150_000_000_000,
        cached_input=37_500_000_000, max_input_tokens=128_000, max_output_tokens=16_384)
    assert bundled.resolve("azure/gpt-4-32k") == ModelPrice(
        name="azure/gpt-4-32k", provider="azure", mode="chat", input=60_000_000_000, output=120_000_000_000,
        max_input_tokens=32_768, max_output_tokens=4_096)
    assert bundled.resolve("gpt-4o-audio-preview-2024-12-17") == ModelPrice(
        name="gpt-4o-audio-preview-2024-12-17", provider="openai", mode="chat", input=2_500_000_000,
        output=10_000_000_000, max_input_tokens=128_000, max_output_tokens=16_384)


def test_a_price_file_gives_a_prefix_lookalike_its_own_price(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"gpt-4.5-preview": {"provider": "openai", "input": "75", "output": "150",
                                                                "cached_input": "37.5"}}}), encoding="utf-8")
    catalog = Catalog.load(extra_files=[path])
    expected = ModelPrice(name="gpt-4.5-preview", provider="openai", mode="chat", input=75_000_000_000,
                          output=150_000_000_000, cached_input=37_500_000_000)
    assert catalog.resolve("gpt-4.5-preview") == expected
    assert catalog.resolve("gpt-4.5-preview-2025-02-27") == expected
    assert catalog.resolve("gpt-4").input == 30_000_000_000


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4o", "gpt-4o"),
    ("openai/gpt-4o", "gpt-4o"),
    ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
    ("gpt-4o-2099-01-01", "gpt-4o"),
    ("gpt-4-0314", "gpt-4"),
    ("ft:gpt-4o-mini:org::id", "ft:gpt-4o-mini-2024-07-18"),
    ("ft:gpt-4o-mini-2024-07-18:org:suffix:id", "ft:gpt-4o-mini-2024-07-18"),
    ("house-model", "gpt-4o-mini"),
    ("house-claude", "claude-haiku-4-5"),
    ("gemini-2.5-pro", "gemini/gemini-2.5-pro"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"),
    ("anthropic/claude-opus-4-5", "claude-opus-4-5"),
    ("mistral-large-latest", "mistral/mistral-large-latest"),
    ("grok-4.3", "xai/grok-4.3"),
    ("deepseek-chat", "deepseek-chat"),
    ("azure/gpt-4o", "azure/gpt-4o"),
    ("groq/openai/gpt-oss-120b", "groq/openai/gpt-oss-120b"),
])
def test_bundled_catalog_resolves_common_names(bundled, model, expected):
    found = bundled.resolve(model)
    assert found is not None and found.name == expected


@pytest.mark.parametrize("model", [
    "openai/gpt-oss-120b",                                  # Groq, Together, Fireworks... each its own price
    "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "accounts/fireworks/models/llama-v3p1-8b-instruct",
])
def test_a_host_of_open_models_is_never_guessed(bundled, model):
    assert bundled.resolve(model) is None


def test_fine_tunes_cost_their_fine_tune_price_not_the_base_price(bundled):
    fine_tune = bundled.resolve("ft:gpt-4o-mini:acme::abc123")
    base = bundled.resolve("gpt-4o-mini")
    assert (fine_tune.input, fine_tune.output) == (300_000_000, 1_200_000_000)
    assert (base.input, base.output) == (150_000_000, 600_000_000)
    assert bundled.resolve("ft:gpt-5-mini:acme::abc123") is None     # no fine-tune price for it


# --- no name resolves unless it is one of the permitted forms of a catalog name ------------------

_DATE = r"(?:20\d\d-(?P<m1>\d\d)-(?P<d1>\d\d)|(?P<m2>\d\d)(?P<d2>\d\d))"
_FINE_TUNE = re.compile(r"ft:(?P<base>[A-Za-z0-9._-]+)(?::[A-Za-z0-9._-]*){1,4}")


def _provider_forms(name: str) -> set[str]:
    head, slash, rest = name.partition("/")
    forms = {name, rest} if slash and rest and head in STRIPPED_PREFIXES else {name}
    return forms | {f"{prefix}/{form}" for form in forms for prefix in ADDED_PREFIXES}


def _is_date(text: str) -> bool:
    match = re.fullmatch(_DATE, text)
    if match is None:
        return False
    month, day = (match["m1"], match["d1"]) if match["m1"] else (match["m2"], match["d2"])
    return 1 <= int(month) <= 12 and 1 <= int(day) <= 31


def _dated(name: str, base: str) -> bool:
    """``name`` is ``base`` plus a snapshot date (case aside)."""
    if not name.lower().startswith(base.lower() + "-"):
        return False
    return _is_date(name[len(base) + 1:])


def permitted(requested: str, priced: str) -> bool:
    """The criterion: ``requested`` may cost ``priced``'s price only when it is that catalog name
    (case aside), a configured alias, or the name with a provider prefix dropped or added, plus
    at most a snapshot date (``-YYYY-MM-DD`` or ``-MMDD``), or a fine-tune ``ft:BASE:…`` of a base
    whose fine-tune price is ``priced`` (``ft:BASE``, ``ft:`` + BASE undated, or ``ft:BASE`` + date)."""
    if requested in ALIASES:
        return True
    for form in _provider_forms(requested):
        if form.lower() == priced.lower() or _dated(form, priced):
            return True
        match = _FINE_TUNE.fullmatch(form)
        if match and priced.startswith("ft:"):
            base = match["base"]
            if priced.lower() == f"ft:{base}".lower() or _dated(f"ft:{base}", priced) \
                    or _dated(priced, f"ft:{base}"):
                return True
    return False


_LOOKALIKE_SUFFIXES = ["x", "X", "-x", " ", "\n", ".1", "0", "-preview", "-mini", "-32k", "-audio-preview",
                       ":org", "/v2", "@001", "-latest", "-2099-01-01", "-0613", "-20990101", "-2411",
                       "-1399", "-2099-13-01", ":org::id"]


def test_no_catalog_name_plus_a_suffix_resolves_outside_the_permitted_forms(bundled):
    wrong = []
    for name in bundled.names():
        for candidate in [name + suffix for suffix in _LOOKALIKE_SUFFIXES] + [name[:-1], "ft:" + name + ":o::id"]:
            found = bundled.resolve(candidate)
            if found is not None and not permitted(candidate, found.name):
                wrong.append((candidate, found.name))
    assert wrong == []


def test_each_catalog_name_resolves_with_a_snapshot_date_and_its_provider_prefix(bundled):
    unresolved = []
    for name in bundled.names():
        for candidate in (name + "-2099-12-31", name + "-1231"):
            if bundled.resolve(candidate) is None:
                unresolved.append(candidate)
        if name.partition("/")[0] not in STRIPPED_PREFIXES and bundled.resolve("openai/" + name) is None:
            unresolved.append("openai/" + name)
    assert unresolved == []


_piece = st.text(alphabet="-.:@/_ xX0123456789abcdefgimnoprstuz", max_size=8)
_date = st.one_of(st.from_regex(r"\A-20[0-9]{2}-[0-9]{2}-[0-9]{2}\Z"), st.from_regex(r"\A-[0-9]{4}\Z"))


@st.composite
def requested_names(draw, names: list[str]) -> str:
    name = draw(st.sampled_from(names))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(["append", "date", "truncate", "prefix", "fine_tune", "case"]))
        if kind == "append":
            name += draw(_piece)
        elif kind == "date":
            name += draw(_date)
        elif kind == "truncate":
            name = name[: draw(st.integers(min_value=0, max_value=len(name)))]
        elif kind == "prefix":
            name = draw(st.sampled_from(["openai/", "azure/", "anthropic/", "gemini/", "groq/", "acme/", ""])) + name
        elif kind == "fine_tune":
            name = f"ft:{name}:{draw(_piece)}"
        else:
            name = name.upper() if draw(st.booleans()) else name.swapcase()
    return name


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_name_resolves_unless_it_is_a_permitted_form_of_a_catalog_name(bundled, data):
    requested = data.draw(requested_names(bundled.names() + list(ALIASES)))
    found = bundled.resolve(requested)
    assert found is None or permitted(requested, found.name), (requested, found.name)


# --- what the bundled catalog carries from the reference list ------------------------------------

def test_catalog_has_every_current_openai_chat_model_of_the_reference_list(bundled):
    """Criterion: provider ``openai``, mode ``chat``, an input and an output price per token, and
    no ``deprecation_date`` or one on or after the date the list was taken (2026-11-22)."""
    reference, taken = reference_list()
    current = {name: entry for name, entry in reference.items()
               if isinstance(entry, dict) and entry.get("litellm_provider") == "openai"
               and entry.get("mode") == "chat" and "input_cost_per_token" in entry
               and "output_cost_per_token" in entry and (entry.get("deprecation_date") or "9999") >= taken}
    assert len(current) > 60
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3", "gpt-4o-audio-preview-2025-06-03"} <= set(current)
    missing = sorted(name for name in current if name not in bundled)
    assert missing == []
    for name, entry in current.items():
        price = bundled.resolve(name)
        assert (price.name, price.input, price.output) == (
            name, nano_per_million(entry["input_cost_per_token"]), nano_per_million(entry["output_cost_per_token"]))


def test_catalog_has_every_meterable_openai_and_anthropic_model_of_the_reference_list(bundled):
    reference, _ = reference_list()
    meterable = {name for name, entry in reference.items()
                 if isinstance(entry, dict)
                 and entry.get("litellm_provider") in ("openai", "text-completion-openai", "anthropic")
                 and entry.get("mode") in ("chat", "responses", "completion", "embedding")
                 and "input_cost_per_token" in entry}
    assert {"o1-pro", "gpt-5-codex", "text-embedding-3-small", "gpt-3.5-turbo-instruct", "claude-opus-4-5"} <= meterable
    assert sorted(meterable - set(bundled.names())) == []


def test_claude_models_carry_cache_read_write_and_hour_write_prices(bundled):
    reference, _ = reference_list()
    claude = {name: entry for name, entry in reference.items()
              if isinstance(entry, dict) and entry.get("litellm_provider") == "anthropic"
              and "cache_creation_input_token_cost_above_1hr" in entry}
    assert len(claude) >= 15
    for name, entry in claude.items():
        price = bundled.resolve(name)
        assert (price.cached_input, price.cache_creation_input, price.cache_creation_input_1h) == (
            nano_per_million(entry["cache_read_input_token_cost"]),
            nano_per_million(entry["cache_creation_input_token_cost"]),
            nano_per_million(entry["cache_creation_input_token_cost_above_1hr"])), name
    opus = bundled.resolve("claude-opus-4-5")
    assert (opus.input, opus.cached_input, opus.cache_creation_input, opus.cache_creation_input_1h) == (
        5_000_000_000, 500_000_000, 6_250_000_000, 10_000_000_000)


def test_models_carry_the_web_search_price_per_call_of_the_reference_list(bundled):
    reference, _ = reference_list()
    priced = {name: entry["search_context_cost_per_query"] for name, entry in reference.items()
              if name in bundled and isinstance(entry.get("search_context_cost_per_query"), dict)}
    assert len(priced) > 200
    for name, by_size in priced.items():
        assert bundled.resolve(name).web_search_call == max(int(Decimal(repr(v)) * 10**9) for v in by_size.values())
    assert bundled.resolve("gpt-4.1").web_search_call == 25_000_000      # $0.025 per call
    assert bundled.resolve("gpt-5").web_search_call == 10_000_000        # $0.01 per call
    assert bundled.resolve("gpt-4o").web_search_call is None             # the list gives none


def test_bundled_claude_usage_with_hour_cache_writes_and_searches_costs_exactly(bundled):
    usage = Usage(prompt_tokens=10_000, completion_tokens=1_000, cached_tokens=2_000, cache_creation_tokens=5_000,
                  cache_creation_1h_tokens=3_000, web_search_calls=2)
    # 3000 × $5 + 2000 × $0.50 + 2000 × $6.25 + 3000 × $10 per M in, 1000 × $25 per M out, 2 × $0.01
    assert cost_nano(bundled.resolve("claude-opus-4-5"), usage) == (
        15_000_000 + 1_000_000 + 12_500_000 + 30_000_000 + 25_000_000 + 20_000_000)


def test_models_carry_the_long_context_tier_of_the_reference_list(bundled):
    reference, _ = reference_list()
    tier_key = re.compile(r"input_cost_per_token_above_(\d+)k_tokens")
    kinds = {"input": "input_cost_per_token", "output": "output_cost_per_token",
             "cached_input": "cache_read_input_token_cost", "cache_creation_input": "cache_creation_input_token_cost",
             "cache_creation_input_1h": "cache_creation_input_token_cost_above_1hr"}
    tiered = 0
    for name in bundled.names():
        entry = reference[name]
        thresholds = [int(m[1]) * 1000 for key in entry if (m := tier_key.fullmatch(key))]
        tier = bundled.resolve(name).long_context
        if not thresholds:
            assert tier is None, name
            continue
        tiered += 1
        assert tier is not None and tier.above_input_tokens == min(thresholds), name
        suffix = f"_above_{tier.above_input_tokens // 1000}k_tokens"
        for ours, theirs in kinds.items():
            listed = entry.get(theirs + suffix)
            assert getattr(tier, ours) == (None if listed is None else nano_per_million(listed)), (name, ours)
    assert tiered == 150
