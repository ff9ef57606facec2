"""Upstreams routed by model, with the real OpenAI SDK against farebox: a config file sends
models to an Azure OpenAI deployment and to a vLLM-like server (both the fake upstream), the
rest to the default; each request reaches its server with the path, query and credential that
server expects, its event names the upstream, and a key farebox holds shows nowhere."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from openai import OpenAI

from proxy.fake_upstream import RECEIVED, create_fake_app
from proxy.http.app import create_app
from proxy.http.appkeys import SERVICES
from proxy.settings import load_settings
from tests.harness import LoopThread
from tests.processes import clean_env, free_port

AZURE_KEY = "az-held-0123456789abcdef"   # farebox's key for the Azure upstream, from its environment
CLIENT_KEY = "sk-test-client"
HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "planner"}
MESSAGES = [{"role": "user", "content": "Say something."}]
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"

CONFIG = """
redis_url = "{redis_url}"
redis_prefix = "{prefix}"
data_dir = "{data_dir}"
upstream = "{default}/v1"
price_files = ["prices.json"]
model_aliases = {{ "dead-gpt" = "gpt-4o-mini" }}

[[upstreams]]
name = "azure-east"
api = "azure"
url = "{azure}"
api_version = "2024-10-21"
deployments = {{ "gpt-4o" = "gpt4o-prod" }}
api_key_env = "FB_TEST_AZURE_KEY"
models = ["gpt-4o", "gpt-4o-2024-*", "text-embedding-3-*"]

[[upstreams]]
name = "azure-client-key"
api = "azure"
url = "{azure}"
api_version = "2025-01-01-preview"
models = ["gpt-4.1*"]

[[upstreams]]
name = "local-vllm"
api = "openai"
url = "{vllm}/v1"
models = ["meta-llama/*"]

[[upstreams]]
name = "azure-dead"
api = "azure"
url = "http://127.0.0.1:{dead_port}"
api_version = "2024-10-21"
api_key_env = "FB_TEST_AZURE_KEY"
models = ["dead-*"]
"""

# A vLLM-served model, priced like any other (community model_prices.json format).
PRICES = {LLAMA: {"input_cost_per_token": 1e-07, "output_cost_per_token": 2e-07, "max_input_tokens": 128000,
                  "max_output_tokens": 8192, "mode": "chat", "litellm_provider": "hosted_vllm"}}


@dataclass
class Routed:
    threads: LoopThread
    fakes: dict[str, Any]     # name -> the fake upstream's application
    url: str
    app: Any
    key_prefix: str

    def client(self, **options) -> OpenAI:
        return OpenAI(base_url=f"{self.url}/v1", api_key=CLIENT_KEY, default_headers=HEADERS, max_retries=0,
                      **options)

    def received(self, name: str) -> list[dict[str, Any]]:
        return list(self.fakes[name][RECEIVED])

    def events(self) -> list[dict[str, str]]:
        services = self.app[SERVICES]
        self.threads.run(services.settled())
        rows = self.threads.run(services.ledger.redis.xrange(f"{self.key_prefix}:{{acme}}:events"))
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]

    def settled_events(self, count: int) -> list[dict[str, str]]:
        deadline = time.monotonic() + 10   # a stream is recorded just after its last byte went out
        while len(events := self.events()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return events


@pytest.fixture
def routed(redis_url, key_prefix, tmp_path, monkeypatch):
    monkeypatch.setenv("FB_TEST_AZURE_KEY", AZURE_KEY)
    threads = LoopThread()
    try:
        fakes = {name: create_fake_app() for name in ("default", "azure", "vllm")}
        urls = {name: threads.serve(app) for name, app in fakes.items()}
        (tmp_path / "prices.json").write_text(json.dumps(PRICES))
        config = tmp_path / "farebox.toml"
        config.write_text(CONFIG.format(redis_url=redis_url, prefix=key_prefix, data_dir=tmp_path / "data",
                                        dead_port=free_port(), **urls))
        settings = load_settings({}, {"FB_TEST_AZURE_KEY": AZURE_KEY}, config)
        app = create_app(settings)
        url = threads.serve(app, front=True)
        yield Routed(threads, fakes, url, app, key_prefix)
    finally:
        threads.close()


def chat(routed: Routed, model: str, *, stream: bool, **options) -> str:
    client = routed.client()
    if not stream:
        return client.chat.completions.create(model=model, messages=MESSAGES, **options).choices[0].message.content
    return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, **options) if c.choices)


@pytest.mark.parametrize("stream", [False, True])
def test_each_model_reaches_its_upstream_with_that_upstreams_path_and_credential(routed, stream):
    texts = {model: chat(routed, model, stream=stream) for model in ("gpt-4o", LLAMA, "gpt-4o-mini")}
    assert all(texts.values())

    (azure,) = routed.received("azure")
    assert azure["path"] == "/openai/deployments/gpt4o-prod/chat/completions"
    assert azure["query"] == "api-version=2024-10-21"
    assert azure["headers"]["api-key"] == AZURE_KEY and "authorization" not in azure["headers"]
    assert azure["body"]["model"] == "gpt-4o"   # the body as the client sent it

    (vllm,) = routed.received("vllm")
    assert (vllm["path"], vllm["query"]) == ("/v1/chat/completions", "")
    assert vllm["headers"]["authorization"] == f"Bearer {CLIENT_KEY}" and "api-key" not in vllm["headers"]
    assert vllm["body"]["model"] == LLAMA

    (default,) = routed.received("default")
    assert default["path"] == "/v1/chat/completions" and default["body"]["model"] == "gpt-4o-mini"
    assert default["headers"]["authorization"] == f"Bearer {CLIENT_KEY}"
    for request in (azure, vllm, default):
        assert "x-project-id" not in request["headers"]
        assert (request["body"].get("stream_options") == {"include_usage": True}) is stream

    events = routed.settled_events(3)
    assert sorted((e["model"], e["upstream"]) for e in events) == [
        ("gpt-4o", "azure-east"), ("gpt-4o-mini", "openai"), (LLAMA, "local-vllm")]
    assert all(e["status"] == "200" and int(e["cost_nano"]) > 0 for e in events)
    llama = next(e for e in events if e["model"] == LLAMA)
    price = routed.app[SERVICES].catalog.resolve(LLAMA)
    assert price is not None and llama["priced_model"] == LLAMA


def test_embeddings_and_completions_are_routed_the_same_way(routed):
    client = routed.client()
    vectors = client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert len(vectors.data) == 2
    text = client.completions.create(model=LLAMA, prompt="Hello", max_tokens=5)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=LLAMA, prompt="Hello", max_tokens=5, stream=True) if c.choices)
    assert text.choices[0].text == streamed
    (azure,) = routed.received("azure")
    assert (azure["path"], azure["query"]) == ("/openai/deployments/text-embedding-3-small/embeddings",
                                               "api-version=2024-10-21")
    assert azure["headers"]["api-key"] == AZURE_KEY
    assert [r["path"] for r in routed.received("vllm")] == ["/v1/completions", "/v1/completions"]
    assert routed.received("default") == []
    events = routed.settled_events(3)
    assert sorted((e["endpoint"], e["upstream"]) for e in events) == [
        ("completions", "local-vllm"), ("completions", "local-vllm"), ("embeddings", "azure-east")]


def test_the_clients_query_string_follows_the_api_version(routed):
    chat(routed, "gpt-4o-2024-08-06", stream=False, extra_query={"beta": "true", "note": "a b"})
    (azure,) = routed.received("azure")
    assert azure["path"] == "/openai/deployments/gpt-4o-2024-08-06/chat/completions"  # no deployment: the model's name
    assert azure["query"] == "api-version=2024-10-21&beta=true&note=a+b"
    assert routed.settled_events(1)[0]["upstream"] == "azure-east"


def test_without_a_held_key_the_clients_bearer_key_is_sent_as_api_key(routed):
    chat(routed, "gpt-4.1-mini", stream=True)
    (azure,) = routed.received("azure")
    assert azure["path"] == "/openai/deployments/gpt-4.1-mini/chat/completions"
    assert azure["query"] == "api-version=2025-01-01-preview"
    assert azure["headers"]["api-key"] == CLIENT_KEY and "authorization" not in azure["headers"]
    assert routed.settled_events(1)[0]["upstream"] == "azure-client-key"


def test_a_request_without_any_key_gets_azures_401_and_is_charged_nothing(routed):
    response = httpx.post(f"{routed.url}/v1/chat/completions", headers=HEADERS,
                          json={"model": "gpt-4.1", "messages": MESSAGES})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "401"
    (azure,) = routed.received("azure")
    assert "api-key" not in azure["headers"]
    assert all(e["cost_nano"] == "0" for e in routed.events())   # an upstream error costs nothing


def test_a_held_key_never_appears_in_logs_or_answers(routed, caplog):
    caplog.set_level(logging.DEBUG)
    client = routed.client()
    answers: list[str] = []
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    answers += [raw.text, json.dumps(dict(raw.headers))]
    for stream in (False, True):   # the upstream refuses: its error passes through
        response = httpx.post(f"{routed.url}/v1/chat/completions", headers={**HEADERS, "X-Fake-Status": "401"},
                              json={"model": "gpt-4o", "messages": MESSAGES, "stream": stream})
        assert response.status_code == 401
        answers += [response.text, json.dumps(dict(response.headers))]
    response = httpx.post(f"{routed.url}/v1/chat/completions", headers=HEADERS,   # an upstream that is down
                          json={"model": "dead-gpt", "messages": MESSAGES})
    assert response.status_code == 502
    answers += [response.text, json.dumps(dict(response.headers))]
    status = httpx.get(f"{routed.url}/healthz")
    answers += [status.text]
    assert [r["headers"]["api-key"] for r in routed.received("azure")] == [AZURE_KEY] * 3
    assert routed.events()
    assert "upstream not reached" in caplog.text   # the log was captured: the 502 is in it
    assert AZURE_KEY not in caplog.text
    for answer in answers:
        assert AZURE_KEY not in answer
    assert AZURE_KEY not in json.dumps(routed.app[SERVICES].upstreams.describe())


def test_farebox_serve_refuses_to_start_when_a_named_key_variable_is_unset(tmp_path):
    config = tmp_path / "farebox.toml"
    config.write_text('[[upstreams]]\nname = "vllm"\napi = "openai"\nurl = "http://127.0.0.1:9/v1"\n'
                      'models = ["meta-llama/*"]\napi_key_env = "FB_TEST_UNSET_KEY"\n')
    env = {k: v for k, v in clean_env().items() if k != "FB_TEST_UNSET_KEY"}
    result = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", "0"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == ("farebox: invalid setting upstreams.0.api_key_env: the environment variable "
                             "FB_TEST_UNSET_KEY is not set (upstream 'vllm')\n")
