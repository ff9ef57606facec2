"""Which credential is a farebox key, and that none crosses to an upstream whatever its header's
letter case or form; the keys' Redis names, each under one hash tag."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.keyauth import farebox_secret
from proxy.ledger.apikeys import KeyStore
from proxy.upstream.kinds import AnthropicKind, OpenAIKind
from proxy.upstream.relay import Upstream

SECRET = "fbk_0123456789abcdef" + "A" * 43


@pytest.mark.parametrize("headers,found", [
    ({"Authorization": f"Bearer {SECRET}"}, SECRET),
    ({"authorization": f"bearer   {SECRET}"}, SECRET),
    ({"Authorization": SECRET}, SECRET),
    ({"X-Api-Key": f" {SECRET} "}, SECRET),
    ({"Authorization": "Bearer sk-client", "x-api-key": SECRET}, SECRET),
    ({"Authorization": "Bearer sk-client"}, None),
    ({"Authorization": "Basic fbk_abc"}, None),
    ({}, None),
])
def test_the_farebox_key_a_request_presents(headers, found):
    assert farebox_secret(CIMultiDictProxy(CIMultiDict(headers))) == found


@pytest.mark.parametrize("as_mapping", [dict, lambda h: CIMultiDictProxy(CIMultiDict(h))])
@pytest.mark.parametrize("name,value", [("Authorization", f"Bearer {SECRET}"), ("authorization", SECRET),
                                        ("X-API-KEY", SECRET), ("api-key", SECRET),
                                        ("AUTHORIZATION", f"BEARER {SECRET}")])
def test_no_farebox_key_crosses_to_an_upstream(as_mapping, name, value):
    for kind in (OpenAIKind("http://127.0.0.1:9/v1"), AnthropicKind("http://127.0.0.1:9")):
        sent = Upstream(kind.base_url, kind=kind).request_headers(as_mapping({name: value, "Accept": "x"}))
        assert "fbk_" not in repr(sent) and sent["Accept"] == "x"


def test_other_credentials_pass_as_before():
    sent = Upstream("http://127.0.0.1:9/v1").request_headers(
        CIMultiDictProxy(CIMultiDict({"Authorization": "Bearer sk-client-fbk_", "x-api-key": "sk-ant"})))
    assert sent["Authorization"] == "Bearer sk-client-fbk_" and sent["x-api-key"] == "sk-ant"


def test_each_key_name_has_one_hash_tag_that_no_project_takes():
    store = KeyStore(None, "fb")
    assert store.record_key("key_0123456789abcdef") == "fb:{key:key_0123456789abcdef}:record"
    assert store.index_key("acme") == "fb:{acme}:keys"
    assert store.version_key() == "fb:{key:*}:version"
