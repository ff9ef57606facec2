"""The settings of farebox keys: ``auth`` and ``admin_read_token``, from the environment."""

from __future__ import annotations

import pytest

from proxy.settings import SettingsError, load_settings


def test_auth_defaults_to_passthrough_and_reads_the_environment():
    assert load_settings(env={}).auth == "passthrough"
    settings = load_settings(env={"FAREBOX_AUTH": "keys", "FAREBOX_ADMIN_READ_TOKEN": "read-secret"})
    assert settings.auth == "keys"
    assert settings.admin_read_token is not None and settings.admin_read_token.get_secret_value() == "read-secret"
    assert "read-secret" not in repr(settings)


def test_an_unknown_auth_mode_is_refused():
    with pytest.raises(SettingsError) as refused:
        load_settings(env={"FAREBOX_AUTH": "tokens"})
    assert str(refused.value) == "invalid setting auth: Input should be 'passthrough' or 'keys'"
