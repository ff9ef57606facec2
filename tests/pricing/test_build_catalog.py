"""scripts/build_catalog.py: what it keeps, how it converts, and that it reproduces the bundled file."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "build_catalog.py"
BUNDLED = REPO_ROOT / "pricing" / "data" / "catalog.json"


@pytest.fixture(scope="module")
def build_catalog():
    spec = importlib.util.spec_from_file_location("build_catalog_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_select_models_keeps_token_priced_models_of_known_providers(build_catalog):
    community = {
        "sample_spec": {"litellm_provider": "one of the providers", "mode": "chat", "input_cost_per_token": 0.0},
        "gpt-4o-mini": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1.5e-07,
                        "output_cost_per_token": 6e-07, "cache_read_input_token_cost": 7.5e-08,
                        "input_cost_per_token_batches": 7.5e-08, "max_input_tokens": 128000,
                        "max_output_tokens": 16384, "supports_vision": True},
        "mistral/mistral-embed": {"litellm_provider": "mistral", "mode": "embedding", "input_cost_per_token": 1e-07,
                                  "max_input_tokens": 8192},
        "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_token": 1e-06,
                     "output_cost_per_token": 1e-06},
        "bedrock/some-model": {"litellm_provider": "bedrock", "mode": "chat", "input_cost_per_token": 1e-06,
                               "output_cost_per_token": 1e-06},
        "together-ai-4.1b-8b": {"litellm_provider": "together_ai", "mode": "chat", "input_cost_per_token": 2e-07,
                                "output_cost_per_token": 2e-07},
        "azure/container": {"litellm_provider": "azure", "mode": "chat"},
        "gpt-odd": {"litellm_provider": "openai", "mode": "responses", "input_cost_per_token": 1.1e-06,
                    "output_cost_per_token": 4.4e-06, "output_cost_per_reasoning_token": 4.4e-06,
                    "cache_creation_input_token_cost": 1.375e-06},
        "claude-x": {"litellm_provider": "anthropic", "mode": "chat", "input_cost_per_token": 3e-06,
                     "output_cost_per_token": 1.5e-05, "cache_read_input_token_cost": 3e-07,
                     "cache_creation_input_token_cost": 3.75e-06, "cache_creation_input_token_cost_above_1hr": 6e-06,
                     "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
                     "input_cost_per_token_above_200k_tokens": 6e-06, "output_cost_per_token_above_200k_tokens": 2.25e-05,
                     "cache_read_input_token_cost_above_200k_tokens": 6e-07,
                     "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
                     "input_cost_per_token_above_200k_tokens_batches": 3e-06,
                     "search_context_cost_per_query": {"search_context_size_low": 0.01,
                                                       "search_context_size_medium": 0.01,
                                                       "search_context_size_high": 0.01}},
        "gpt-tiered": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 2.5e-06,
                       "output_cost_per_token": 1.5e-05, "cache_read_input_token_cost": 2.5e-07,
                       "input_cost_per_token_above_272k_tokens": 5e-06,
                       "output_cost_per_token_above_272k_tokens": 2.25e-05,
                       "cache_read_input_token_cost_above_272k_tokens": 5e-07,
                       "input_cost_per_token_above_272k_tokens_flex": 2.5e-06,
                       "output_cost_per_token_above_272k_tokens_priority": 4.5e-05,
                       "input_cost_per_character_above_128k_tokens": 1e-06},
        "gpt-searcher": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 2.5e-06,
                         "output_cost_per_token": 1e-05,
                         "search_context_cost_per_query": {"search_context_size_low": 0.03,
                                                           "search_context_size_medium": 0.035,
                                                           "search_context_size_high": 0.05}},
    }
    assert build_catalog.select_models(community) == {
        "gpt-4o-mini": {"provider": "openai", "mode": "chat", "input": "0.15", "output": "0.6",
                        "cached_input": "0.075", "max_input_tokens": 128000, "max_output_tokens": 16384},
        "mistral/mistral-embed": {"provider": "mistral", "mode": "embedding", "input": "0.1", "output": "0",
                                  "max_input_tokens": 8192},
        "gpt-odd": {"provider": "openai", "mode": "responses", "input": "1.1", "output": "4.4",
                    "reasoning_output": "4.4", "cache_creation_input": "1.375"},
        "claude-x": {"provider": "anthropic", "mode": "chat", "input": "3", "output": "15", "cached_input": "0.3",
                     "cache_creation_input": "3.75", "cache_creation_input_1h": "6", "web_search_call": "0.01",
                     "long_context": {"above_input_tokens": 200_000, "input": "6", "output": "22.5",
                                      "cached_input": "0.6", "cache_creation_input": "7.5",
                                      "cache_creation_input_1h": "12"}},
        # only the standard tier: the flex and priority prices above 272k are not read
        "gpt-tiered": {"provider": "openai", "mode": "chat", "input": "2.5", "output": "15", "cached_input": "0.25",
                       "long_context": {"above_input_tokens": 272_000, "input": "5", "output": "22.5",
                                        "cached_input": "0.5"}},
        "gpt-searcher": {"provider": "openai", "mode": "chat", "input": "2.5", "output": "10",
                         "web_search_call": "0.05"},          # the highest size: no search costs more
    }


def test_render_is_sorted_one_model_per_line_and_valid_json(build_catalog):
    document = {"source": "s", "source_date": "2026-11-22", "generated_at": "2026-11-23", "generator": "g",
                "models": {"b": {"output": "2", "input": "1"}, "a": {"input": "1", "output": "2"}}}
    text = build_catalog.render(document)
    assert json.loads(text) == document
    assert text.splitlines()[4] == '    "a": {"input": "1", "output": "2"},'
    assert text.endswith("}\n")


def test_bundled_catalog_has_no_float_artefacts():
    models = json.loads(BUNDLED.read_text(encoding="utf-8"))["models"]
    for name, entry in models.items():
        for field in ("input", "output", "cached_input", "cache_creation_input", "cache_creation_input_1h",
                      "reasoning_output", "web_search_call"):
            if field in entry:
                assert isinstance(entry[field], str), (name, field)
                assert len(entry[field].replace(".", "").strip("0")) <= 8, (name, field, entry[field])
                assert "e" not in entry[field].lower(), (name, field)


def test_generator_reproduces_the_bundled_file(build_catalog, tmp_path):
    if not build_catalog.DEFAULT_SOURCE.exists():
        pytest.skip(f"source price list not present at {build_catalog.DEFAULT_SOURCE}")
    bundled_text = BUNDLED.read_text(encoding="utf-8")
    bundled = json.loads(bundled_text)
    out = tmp_path / "catalog.json"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--generated-at", bundled["generated_at"]],
                   check=True, capture_output=True, text=True)
    regenerated_text = out.read_text(encoding="utf-8")
    assert json.loads(regenerated_text)["models"] == bundled["models"]
    assert regenerated_text == bundled_text
