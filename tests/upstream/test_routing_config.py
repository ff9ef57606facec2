"""The config file's ``[[upstreams]]``: what is read, and every bad value as one line naming it."""

from __future__ import annotations

import json

import pytest

from proxy.settings import SettingsError, load_settings

AZURE = """
[[upstreams]]
name = "azure-east"
api = "azure"
url = "https://example-east.openai.azure.com/"
api_version = "2024-10-21"
deployments = { "gpt-4o" = "gpt4o-prod" }
api_key_env = "AZURE_OPENAI_KEY"
models = ["gpt-4o*"]

[[upstreams]]
name = "local-vllm"
api = "openai"
url = "http://10.0.0.5:8000/v1"
models = ["meta-llama/*"]
"""


def load(tmp_path, text: str, *, env: dict[str, str] | None = None, suffix: str = ".toml"):
    path = tmp_path / f"farebox{suffix}"
    path.write_text(text)
    return load_settings({}, env or {}, path)


def entry(**fields) -> dict:
    return {"name": "east", "api": "openai", "url": "http://127.0.0.1:9/v1", "models": ["m*"], **fields}


def error_of(tmp_path, *entries: dict, env: dict[str, str] | None = None) -> str:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, json.dumps({"upstreams": list(entries)}), env=env, suffix=".json")
    return str(caught.value)


def test_toml_entries_are_read_in_order(tmp_path):
    settings = load(tmp_path, AZURE, env={"AZURE_OPENAI_KEY": "az-secret"})
    azure, vllm = settings.upstreams
    assert (azure.name, azure.api, azure.family, azure.url) == (
        "azure-east", "azure", "openai", "https://example-east.openai.azure.com")
    assert azure.api_version == "2024-10-21" and azure.deployments == {"gpt-4o": "gpt4o-prod"}
    assert azure.api_key_env == "AZURE_OPENAI_KEY" and azure.models == ["gpt-4o*"]
    assert (vllm.name, vllm.api, vllm.url, vllm.models, vllm.api_key_env) == (
        "local-vllm", "openai", "http://10.0.0.5:8000/v1", ["meta-llama/*"], None)
    assert "az-secret" not in repr(settings) and "az-secret" not in settings.model_dump_json()


def test_json_entries_and_upstreams_beside_a_farebox_table(tmp_path):
    settings = load(tmp_path, json.dumps({"upstreams": [entry(api="anthropic", url="http://127.0.0.1:9")]}),
                    suffix=".json")
    assert [(u.name, u.family) for u in settings.upstreams] == [("east", "anthropic")]
    beside = load(tmp_path, '[farebox]\nport = 9001\n[[upstreams]]\nname = "v"\napi = "openai"\n'
                            'url = "http://127.0.0.1:9/v1"\nmodels = ["x"]\n')
    assert beside.port == 9001 and [u.name for u in beside.upstreams] == ["v"]
    inside = load(tmp_path, '[farebox]\n[[farebox.upstreams]]\nname = "w"\napi = "openai"\n'
                            'url = "http://127.0.0.1:9/v1"\nmodels = ["x"]\n')
    assert [u.name for u in inside.upstreams] == ["w"]


def test_the_environment_can_carry_them_as_json(tmp_path):
    settings = load_settings({}, {"FAREBOX_UPSTREAMS": json.dumps([entry()])})
    assert [u.name for u in settings.upstreams] == ["east"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "has space"}, "invalid setting upstreams.0.name: must be 1-128 characters of letters, digits and . _ - @"),
    ({"name": "openai"}, "invalid setting upstreams.0.name: 'openai' is the name of the openai family's default "
                         "upstream; choose another"),
    ({"name": "anthropic"}, "invalid setting upstreams.0.name: 'anthropic' is the name of the anthropic family's "
                            "default upstream; choose another"),
    ({"api": "bedrock"}, "invalid setting upstreams.0.api: Input should be 'openai', 'anthropic' or 'azure'"),
    ({"url": "ftp://host/v1"}, "invalid setting upstreams.0.url: must be an http:// or https:// URL without a "
                               "query, e.g. http://10.0.0.5:8000/v1"),
    ({"url": "http://host/v1?x=1"}, "invalid setting upstreams.0.url: must be an http:// or https:// URL without "
                                    "a query, e.g. http://10.0.0.5:8000/v1"),
    ({"models": []}, "invalid setting upstreams.0.models: List should have at least 1 item after validation, not 0"),
    ({"models": ["gpt-*", " "]}, "invalid setting upstreams.0.models: a model pattern is empty"),
    ({"models": "gpt-*"}, "invalid setting upstreams.0.models: Input should be a valid list"),
    ({"api_key_env": "NOT-A-NAME"}, "invalid setting upstreams.0.api_key_env: must be the name of an environment "
                                    "variable (letters, digits, _)"),
    ({"api_key": "sk-in-the-file"}, "invalid setting upstreams.0.api_key: unknown setting"),
    ({"api_version": "2024-10-21"}, "invalid setting upstreams.0: upstream 'east': api_version is "
                                    "for api = \"azure\" only"),
    ({"deployments": {"a": "b"}}, "invalid setting upstreams.0: upstream 'east': deployments is for "
                                  "api = \"azure\" only"),
    ({"api": "azure"}, "invalid setting upstreams.0: upstream 'east': api_version is required when "
                       "api is \"azure\""),
    ({"api": "azure", "api_version": "2024/10"}, "invalid setting upstreams.0.api_version: must be an API version "
                                                 "such as 2024-10-21 (letters, digits, . _ -)"),
    ({"api": "azure", "api_version": "v1", "deployments": {"gpt-4o": "a/b"}},
     "invalid setting upstreams.0.deployments: 'a/b' (for 'gpt-4o') is not a deployment name (1-64 letters, "
     "digits, . _ -)"),
    ({"api": "azure", "api_version": "v1", "deployments": {"": "dep"}},
     "invalid setting upstreams.0.deployments: a model name is empty"),
])
def test_a_bad_value_is_one_line_naming_it(tmp_path, fields, message):
    assert error_of(tmp_path, entry(**fields)) == message


@pytest.mark.parametrize("missing", ["name", "api", "url", "models"])
def test_a_missing_field_is_named(tmp_path, missing):
    fields = entry()
    del fields[missing]
    assert error_of(tmp_path, fields) == f"invalid setting upstreams.0.{missing}: Field required"


def test_names_are_unique(tmp_path):
    assert error_of(tmp_path, entry(), entry(name="other"), entry()) == (
        "invalid setting upstreams: the name 'east' is used by more than one upstream")


def test_an_entry_must_be_a_table(tmp_path):
    assert error_of(tmp_path, "east") == (  # type: ignore[arg-type]
        "invalid setting upstreams.0: Input should be a valid dictionary or instance of UpstreamConfig")


def test_a_key_variable_named_but_not_set_is_an_error_at_start(tmp_path):
    named = entry(name="vllm", api_key_env="VLLM_KEY")
    expected = ("invalid setting upstreams.1.api_key_env: the environment variable VLLM_KEY is not set "
                "(upstream 'vllm')")
    assert error_of(tmp_path, entry(), named) == expected
    assert error_of(tmp_path, entry(), named, env={"VLLM_KEY": ""}) == expected
    settings = load(tmp_path, json.dumps({"upstreams": [named]}), env={"VLLM_KEY": "k"}, suffix=".json")
    assert settings.upstreams[0].api_key({"VLLM_KEY": "k"}) == "k"
