"""The settings that bound Redis memory: their defaults, and bad values refused with the
setting's name (farebox does not start on them)."""

from __future__ import annotations

import pytest

from proxy.ledger.idempotency import DEFAULT_WINDOW_S
from proxy.ledger.ledger import DEFAULT_RANKING_SIZE, DEFAULT_STREAM_MAXLEN, Ledger, Ttls
from proxy.ledger.settle import DEFAULT_SESSION_TTL_S
from proxy.settings import SettingsError, load_settings


def test_defaults_match_the_ledgers():
    settings = load_settings(env={})
    assert settings.ttl_session_s == DEFAULT_SESSION_TTL_S == Ttls().session == 20 * 86400
    assert settings.idempotency_window_s == DEFAULT_WINDOW_S == 900
    assert settings.session_ranking_size == DEFAULT_RANKING_SIZE == 100
    assert settings.stream_maxlen == DEFAULT_STREAM_MAXLEN == 50_000


@pytest.mark.parametrize(("var", "value", "message"), [
    ("FAREBOX_IDEMPOTENCY_WINDOW_S", "59", "invalid setting idempotency_window_s: Input should be greater than or equal to 60"),
    ("FAREBOX_TTL_SESSION_S", "-1", "invalid setting ttl_session_s: Input should be greater than or equal to 0"),
    ("FAREBOX_SESSION_RANKING_SIZE", "many", "invalid setting session_ranking_size: Input should be a valid integer"),
])
def test_bad_values_are_refused_naming_the_setting(var: str, value: str, message: str):
    with pytest.raises(SettingsError) as caught:
        load_settings(env={var: value})
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"idempotency_window_s": 0}, "idempotency_window_s must be a positive int, not 0"),
    ({"ranking_size": -1}, "ranking_size must be an int >= 0 (0 = unbounded), not -1"),
    ({"ttls": Ttls(session=0)}, "TTL for sessions must be a positive number of seconds or None, not 0"),
])
def test_the_ledger_refuses_bad_bounds(redis_client, kwargs, message):
    with pytest.raises(ValueError) as caught:
        Ledger(redis_client, **kwargs)
    assert str(caught.value) == message
