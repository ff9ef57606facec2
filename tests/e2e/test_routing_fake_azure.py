"""The fake upstream's Azure OpenAI paths, with the OpenAI SDK's own Azure client: the same
answers as its OpenAI paths, after Azure's checks of the API version and the key."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import AzureOpenAI, OpenAI

from proxy.fake_upstream import RECEIVED, create_fake_app
from tests.harness import LoopThread

MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def fake():
    threads = LoopThread()
    app = create_fake_app()
    try:
        yield threads.serve(app), app
    finally:
        threads.close()


def azure(url: str, **options) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=url, api_key="az-key", api_version="2024-10-21", max_retries=0, **options)


def test_chat_completions_and_embeddings_as_the_azure_client_sends_them(fake):
    url, app = fake
    plain = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    via_azure = azure(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    direct = plain.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert via_azure.choices[0].message.content == direct.choices[0].message.content
    assert via_azure.usage.prompt_tokens == direct.usage.prompt_tokens
    streamed = "".join(c.choices[0].delta.content or "" for c in azure(url).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True) if c.choices)
    assert streamed == direct.choices[0].message.content
    vectors = azure(url).embeddings.create(model="emb", input=["a", "b"])
    assert len(vectors.data) == 2 and vectors.usage.prompt_tokens == 2
    text = azure(url).completions.create(model="gpt-35-instruct", prompt="Hello", max_tokens=5)
    assert text.choices[0].text and text.usage.completion_tokens <= 5
    first, _, stream, embeddings, completions = app[RECEIVED]
    assert (first["path"], first["query"]) == ("/openai/deployments/gpt-4o/chat/completions", "api-version=2024-10-21")
    assert first["headers"]["api-key"] == "az-key"
    assert stream["body"]["stream"] is True
    assert embeddings["path"] == "/openai/deployments/emb/embeddings"
    assert completions["path"] == "/openai/deployments/gpt-35-instruct/completions"


def test_a_body_without_a_model_is_answered_for_the_deployment(fake):
    url, _ = fake
    response = httpx.post(f"{url}/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
                          headers={"api-key": "k"}, json={"messages": MESSAGES})
    assert response.status_code == 200 and response.json()["model"] == "my-gpt"


def test_without_an_api_version_azure_answers_404(fake):
    url, app = fake
    response = httpx.post(f"{url}/openai/deployments/gpt-4o/chat/completions", headers={"api-key": "k"},
                          json={"model": "gpt-4o", "messages": MESSAGES})
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}


def test_without_an_api_key_azure_answers_401(fake):
    url, _ = fake
    with pytest.raises(openai.AuthenticationError) as caught:
        OpenAI(base_url=f"{url}/openai/deployments/gpt-4o", api_key="bearer-only", max_retries=0,
               default_query={"api-version": "2024-10-21"}).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "401" and "Access denied" in caught.value.body["message"]
