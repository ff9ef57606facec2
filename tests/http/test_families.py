"""What differs between the API families at farebox's edge: the error body (OpenAI's or
Anthropic's), the upstream's credentials, and the settings that name Anthropic's upstream."""

from __future__ import annotations

import json

import pytest

from proxy.errors import BudgetExceeded, NotFound, anthropic_shape, openai_shape, render_error
from proxy.http.edge import Edge, family_of
from proxy.settings import SettingsError, load_settings
from proxy.upstream.kinds import AnthropicKind


@pytest.mark.parametrize("path,family", [
    ("/v1/messages", "anthropic"), ("/v1/messages/count_tokens", "anthropic"), ("/v1/messages/x/y", "anthropic"),
    ("/v1/messagesx", "openai"), ("/v1/chat/completions", "openai"), ("/v1/responses", "openai"), ("", "openai"),
])
def test_the_family_of_a_path(path, family):
    assert family_of(path) == family


def test_anthropics_shape_carries_farebox_details_inside_error():
    exc = BudgetExceeded("Budget exceeded for project 'acme'.", headers={"Retry-After": "60"},
                         extra={"scope": "project", "scope_id": "acme", "limit_usd": "1.00"})
    assert anthropic_shape(exc) == {"type": "error", "error": {
        "type": "billing_error", "message": "Budget exceeded for project 'acme'.", "code": "budget_exceeded",
        "scope": "project", "scope_id": "acme", "limit_usd": "1.00"}}
    status, headers, body = render_error(exc, "r1", anthropic_shape)
    assert (status, headers["Retry-After"], headers["X-Request-Id"]) == (402, "60", "r1")
    assert json.loads(body)["error"]["type"] == "billing_error"


@pytest.mark.parametrize("status,kind", [(400, "invalid_request_error"), (401, "authentication_error"),
                                         (403, "permission_error"), (404, "not_found_error"),
                                         (413, "request_too_large"), (429, "rate_limit_error"),
                                         (500, "api_error"), (502, "api_error"), (503, "api_error"),
                                         (504, "timeout_error")])
def test_anthropic_error_types_follow_the_status(status, kind):
    exc = NotFound("x", param="model")
    exc.status = status
    body = anthropic_shape(exc)
    assert body["error"]["type"] == kind and body["error"]["param"] == "model"


def test_the_edge_renders_by_path():
    edge = Edge()
    exc = NotFound("No such endpoint.", code="unknown_endpoint")
    assert json.loads(edge.render(exc, None, "/v1/messages/batches")[2]) == anthropic_shape(exc)
    assert json.loads(edge.render(exc, None, "/v1/batches")[2]) == openai_shape(exc)


def test_anthropic_credentials_pass_through_unless_farebox_has_a_key():
    headers = {"x-api-key": "sk-ant-client", "anthropic-version": "2023-06-01"}
    AnthropicKind("https://api.anthropic.com").authenticate(headers)
    assert headers == {"x-api-key": "sk-ant-client", "anthropic-version": "2023-06-01"}

    for given in ({"X-Api-Key": "sk-ant-client"}, {"Authorization": "Bearer sk-ant-client"}):
        headers = {**given, "anthropic-beta": "b1"}
        kind = AnthropicKind("https://api.anthropic.com/", api_key="sk-ant-farebox")
        kind.authenticate(headers)
        assert headers == {"anthropic-beta": "b1", "x-api-key": "sk-ant-farebox"}
        assert kind.base_url == "https://api.anthropic.com"
        assert "sk-ant-farebox" not in repr(kind.describe())


def test_anthropic_upstream_settings():
    settings = load_settings(env={"FAREBOX_ANTHROPIC_UPSTREAM": "http://127.0.0.1:9/",
                                  "FAREBOX_CLIENT_SESSION_HEADERS": "x-one, x-two"})
    assert settings.anthropic_upstream == "http://127.0.0.1:9"
    assert settings.client_session_headers == ["x-one", "x-two"]
    assert load_settings(env={}).client_session_headers == ["x-claude-code-session-id", "session-id"]
    assert load_settings(env={}).anthropic_upstream == "https://api.anthropic.com"
    with pytest.raises(SettingsError, match=r"^invalid setting anthropic_upstream: must be an http:// or https:// URL"):
        load_settings(env={"FAREBOX_ANTHROPIC_UPSTREAM": "api.anthropic.com"})
    with pytest.raises(SettingsError, match=r"^invalid setting client_session_headers: 'x y' is not an HTTP header"):
        load_settings(env={"FAREBOX_CLIENT_SESSION_HEADERS": "x y"})
