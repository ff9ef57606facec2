"""The choice of upstream: the first configured one of the family whose patterns match the
model, else the family's default; decisions kept, boundedly; one pool per upstream."""

from __future__ import annotations

import pytest
from aiohttp import web

from proxy.settings import Settings, SettingsError, UpstreamConfig
from proxy.upstream import routing
from proxy.upstream.kinds import AnthropicKind, AzureKind, OpenAIKind
from proxy.upstream.routing import Upstreams

AZURE_KEY = "az-held-secret-0001"


def config(name: str, api: str, models: list[str], **fields) -> UpstreamConfig:
    url = fields.pop("url", "http://127.0.0.1:9/v1")
    return UpstreamConfig(name=name, api=api, url=url, models=models, **fields)


def upstreams(*entries: UpstreamConfig, env: dict[str, str] | None = None, **settings) -> Upstreams:
    return Upstreams.from_settings(Settings(upstreams=list(entries), **settings), env=env or {})


def test_without_entries_every_model_goes_to_the_family_default():
    ups = upstreams(upstream="http://127.0.0.1:1/v1", anthropic_upstream="http://127.0.0.1:2")
    assert ups.pick("openai", "gpt-4o").name == "openai"
    assert ups.pick("anthropic", "claude-sonnet-4-5").name == "anthropic"
    assert ups.default("openai").base_url == "http://127.0.0.1:1/v1"
    assert [u.name for u in ups.all()] == ["openai", "anthropic"]


def test_first_matching_entry_of_the_family_wins_then_the_default():
    ups = upstreams(
        config("azure-east", "azure", ["gpt-4o*"], api_version="2024-10-21"),
        config("catch-gpt", "openai", ["gpt-*", "o?-mini"]),
        config("local-vllm", "openai", ["meta-llama/*"]),
        config("claude-eu", "anthropic", ["claude-*"], url="http://127.0.0.1:9"),
        config("claude-late", "anthropic", ["claude-sonnet-*"], url="http://127.0.0.1:9"),
    )
    picks = {model: ups.pick("openai", model).name for model in
             ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini", "o3-mini-high", "meta-llama/Llama-3.1-8B", "Gpt-4o",
              "claude-sonnet-4-5", "text-embedding-3-small")}
    assert picks == {"gpt-4o": "azure-east", "gpt-4o-mini": "azure-east", "gpt-4.1": "catch-gpt",
                     "o3-mini": "catch-gpt", "o3-mini-high": "openai", "meta-llama/Llama-3.1-8B": "local-vllm",
                     "Gpt-4o": "openai",                      # patterns are case-sensitive, as model names are
                     "claude-sonnet-4-5": "openai",            # an anthropic entry never serves the openai family
                     "text-embedding-3-small": "openai"}
    assert ups.pick("anthropic", "claude-sonnet-4-5").name == "claude-eu"
    assert ups.pick("anthropic", "gpt-4o").name == "anthropic"
    assert [u.name for u in ups.all()] == ["openai", "anthropic", "azure-east", "catch-gpt", "local-vllm",
                                          "claude-eu", "claude-late"]


def test_glob_forms_match_whole_names():
    ups = upstreams(config("brackets", "openai", ["llama-[0-9]b", "exact"]))
    assert ups.pick("openai", "llama-7b").name == "brackets"
    assert ups.pick("openai", "llama-xb").name == "openai"
    assert ups.pick("openai", "exact").name == "brackets"
    assert ups.pick("openai", "exactly").name == "openai"   # a pattern matches the whole name
    assert ups.pick("openai", "not-exact").name == "openai"


def test_the_kind_follows_the_api_and_the_key_comes_from_the_environment():
    ups = upstreams(config("az", "azure", ["a"], url="https://res.openai.azure.com/openai/", api_version="v1",
                           api_key_env="AZ_KEY"),
                    config("vllm", "openai", ["v"], api_key_env="VLLM_KEY"),
                    config("claude", "anthropic", ["c"], url="http://127.0.0.1:9"),
                    env={"AZ_KEY": AZURE_KEY, "VLLM_KEY": "vllm-held-key"})
    az, vllm, claude = (ups.pick(family, model) for family, model in
                        (("openai", "a"), ("openai", "v"), ("anthropic", "c")))
    assert isinstance(az.kind, AzureKind) and az.base_url == "https://res.openai.azure.com"
    assert isinstance(vllm.kind, OpenAIKind) and isinstance(claude.kind, AnthropicKind)
    assert vllm.request_headers({"Authorization": "Bearer client"})["Authorization"] == "Bearer vllm-held-key"
    assert az.request_headers({"Authorization": "Bearer client"})["api-key"] == AZURE_KEY
    assert claude.request_headers({"x-api-key": "client"})["x-api-key"] == "client"   # no key held: the client's


def test_a_key_variable_unset_when_the_upstreams_are_built_is_a_settings_error():
    with pytest.raises(SettingsError) as caught:
        upstreams(config("vllm", "openai", ["v"], api_key_env="VLLM_KEY"), env={})
    assert str(caught.value) == ("invalid setting upstreams.0.api_key_env: the environment variable VLLM_KEY "
                                 "is not set (upstream 'vllm')")


def test_describe_tells_where_each_upstream_is_and_never_a_key():
    ups = upstreams(config("az", "azure", ["gpt-4o*"], url="https://res.openai.azure.com", api_version="2024-10-21",
                           deployments={"gpt-4o": "prod"}, api_key_env="AZ_KEY"),
                    config("vllm", "openai", ["meta-llama/*"]),
                    env={"AZ_KEY": AZURE_KEY}, upstream_api_key="sk-default-held")
    described = ups.describe()
    assert described == [
        {"name": "openai", "family": "openai", "models": ["*"], "base_url": "https://api.openai.com/v1",
         "auth": "replaced"},
        {"name": "anthropic", "family": "anthropic", "models": ["*"], "base_url": "https://api.anthropic.com",
         "auth": "passthrough"},
        {"name": "az", "family": "openai", "models": ["gpt-4o*"], "base_url": "https://res.openai.azure.com",
         "api_version": "2024-10-21", "deployments": {"gpt-4o": "prod"}, "auth": "replaced"},
        {"name": "vllm", "family": "openai", "models": ["meta-llama/*"], "base_url": "http://127.0.0.1:9/v1",
         "auth": "passthrough"},
    ]
    assert AZURE_KEY not in repr(described) and "sk-default-held" not in repr(described)
    assert AZURE_KEY not in repr(ups.pick("openai", "gpt-4o").kind.describe())


def test_decisions_are_kept_per_family_and_model_and_stay_bounded(monkeypatch):
    monkeypatch.setattr(routing, "CACHE_SIZE", 3)
    ups = upstreams(config("gpt", "openai", ["gpt-*"]))
    calls: list[str] = []
    route = ups._by_family["openai"][0]   # noqa: SLF001 - counting how often the patterns are consulted
    match = route._match   # noqa: SLF001
    monkeypatch.setattr(route, "_match", lambda model: calls.append(model) or match(model))
    for _ in range(3):
        assert ups.pick("openai", "gpt-4o").name == "gpt"
    assert calls == ["gpt-4o"]
    for model in ("a", "b", "c", "d"):
        assert ups.pick("openai", model).name == "openai"
    assert len(ups._chosen) == 3                       # noqa: SLF001 - the bound
    assert ("openai", "gpt-4o") not in ups._chosen     # noqa: SLF001 - the oldest went first
    assert ups.pick("openai", "gpt-4o").name == "gpt"
    assert calls == ["gpt-4o", "a", "b", "c", "d", "gpt-4o"]


def test_a_family_without_entries_keeps_no_decisions():
    ups = upstreams(config("gpt", "openai", ["gpt-*"]))
    for n in range(100):
        ups.pick("anthropic", f"claude-{n}")
    assert ups._chosen == {}   # noqa: SLF001


async def test_every_upstream_has_its_own_pool_started_and_closed(aiohttp_server):
    seen: list[tuple[str, str]] = []

    def app(tag: str) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            seen.append((tag, request.path_qs))
            return web.json_response({"tag": tag})
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", handler)
        return application

    default, vllm, azure = [await aiohttp_server(app(tag)) for tag in ("default", "vllm", "azure")]
    ups = upstreams(config("vllm", "openai", ["meta-llama/*"], url=str(vllm.make_url("/v1"))),
                    config("az", "azure", ["gpt-4o"], url=str(azure.make_url("")), api_version="2024-10-21",
                           deployments={"gpt-4o": "prod"}),
                    upstream=str(default.make_url("/v1")))
    await ups.start()
    try:
        for model in ("gpt-4o-mini", "meta-llama/Llama-3.1-8B", "gpt-4o"):
            target = ups.pick("openai", model)
            async with target.send("POST", "/chat/completions", {}, b"{}", query="x=1", model=model) as answer:
                await target.read(answer)
    finally:
        await ups.close()
    assert seen == [("default", "/v1/chat/completions?x=1"), ("vllm", "/v1/chat/completions?x=1"),
                    ("azure", "/openai/deployments/prod/chat/completions?api-version=2024-10-21&x=1")]
    assert all(u._pool is None for u in ups.all())   # noqa: SLF001 - every pool closed


def test_requests_per_upstream_are_counted_under_its_name():
    from prometheus_client.parser import text_string_to_metric_families

    from proxy.metrics import Metrics

    metrics = Metrics()
    for name, status in (("azure-east", 200), ("azure-east", 200), ("local-vllm", 502)):
        metrics.upstream_request(name, status)
    samples = {tuple(sorted(s.labels.items())): s.value
               for family in text_string_to_metric_families(metrics.render().decode())
               for s in family.samples if s.name == "farebox_upstream_requests_total"}
    assert samples == {(("status", "200"), ("upstream", "azure-east")): 2,
                       (("status", "502"), ("upstream", "local-vllm")): 1}
