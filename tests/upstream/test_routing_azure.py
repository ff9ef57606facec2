"""Azure OpenAI as an upstream kind: the request target (deployment, API version, the client's
query) and the ``api-key`` credential."""

from __future__ import annotations

import pytest

from proxy.upstream.kinds import AzureKind
from proxy.upstream.relay import Upstream

HELD = "az-held-secret-0002"


def kind(**options) -> AzureKind:
    return AzureKind("https://res.openai.azure.com", "2024-10-21", {"gpt-4o": "gpt4o-prod"}, **options)


@pytest.mark.parametrize(("path", "query", "model", "target"), [
    ("/chat/completions", "", "gpt-4o", "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"),
    ("/chat/completions", "", "gpt-4o-mini",   # no deployment configured: one named like the model
     "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"),
    ("/embeddings", "", "text-embedding-3-small",
     "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"),
    ("/completions", "", "gpt-4o", "/openai/deployments/gpt4o-prod/completions?api-version=2024-10-21"),
    ("/chat/completions", "beta=true&x=a%20b", "gpt-4o",
     "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21&beta=true&x=a%20b"),
    ("/chat/completions", "api-version=1999-01-01&beta=true", "gpt-4o",   # the version is farebox's
     "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21&beta=true"),
    ("/chat/completions", "API-Version=x", "gpt-4o",
     "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"),
    ("/chat/completions", "q=\u00e9 x", "gpt-4o",
     "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21&q=%C3%A9%20x"),
    ("/chat/completions", "", "a/b c", "/openai/deployments/a%2Fb%20c/chat/completions?api-version=2024-10-21"),
    ("/responses", "", "gpt-4o", "/openai/responses?api-version=2024-10-21"),   # Azure names it in the body
    ("/models", "", None, "/openai/models?api-version=2024-10-21"),
])
def test_target(path, query, model, target):
    assert kind().target(path, query, model) == target


def test_a_url_given_with_its_openai_path_is_the_resource_endpoint():
    assert AzureKind("https://res.openai.azure.com/openai/", "v1").base_url == "https://res.openai.azure.com"
    assert AzureKind("http://127.0.0.1:9/", "v1").deployment("m") == "m"


@pytest.mark.parametrize(("sent", "forwarded"), [
    ({"Authorization": "Bearer sk-client", "X-Other": "1"}, {"api-key": "sk-client", "X-Other": "1"}),
    ({"authorization": "bearer  sk-client "}, {"api-key": "sk-client"}),
    ({"api-key": "client-key"}, {"api-key": "client-key"}),
    ({"Api-Key": "client-key", "Authorization": "Bearer other"}, {"Api-Key": "client-key"}),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Basic dXNlcjpwYXNz"}),   # not a key: as sent
    ({"Authorization": "Bearer "}, {"Authorization": "Bearer "}),
    ({}, {}),
])
def test_the_clients_credential_becomes_api_key(sent, forwarded):
    headers = dict(sent)
    kind().authenticate(headers)
    assert headers == forwarded


@pytest.mark.parametrize("sent", [{}, {"Authorization": "Bearer sk-client"}, {"API-KEY": "client-key"},
                                  {"api-key": "a", "authorization": "Bearer b"}])
def test_a_held_key_replaces_whatever_the_client_sent(sent):
    headers = dict(sent)
    kind(api_key=HELD).authenticate(headers)
    assert headers == {"api-key": HELD}


def test_describe_names_no_key():
    described = kind(api_key=HELD).describe()
    assert described == {"base_url": "https://res.openai.azure.com", "api_version": "2024-10-21",
                         "deployments": {"gpt-4o": "gpt4o-prod"}, "auth": "replaced"}
    assert kind().describe()["auth"] == "passthrough"
    assert HELD not in repr(described) and HELD not in repr(kind(api_key=HELD).__slots__)


def test_forwarded_headers_drop_hop_by_hop_ones_and_carry_the_key():
    upstream = Upstream("https://res.openai.azure.com", kind=kind(api_key=HELD), name="azure-east",
                        drop_headers=("X-Project-Id",))
    headers = upstream.request_headers({"Authorization": "Bearer sk-client", "X-Project-Id": "acme",
                                        "Connection": "close", "Content-Type": "application/json"})
    assert headers == {"api-key": HELD, "Content-Type": "application/json", "Accept-Encoding": "identity"}
    assert upstream.name == "azure-east" and upstream.base_url == "https://res.openai.azure.com"
