"""postgres_url from a flag, the environment or the config file; the stream length appends use."""

from __future__ import annotations

import pytest

from proxy.record.serving import append_maxlen, postgres_url, sink_options
from proxy.settings import SettingsError, load_settings


def test_postgres_url_is_read_from_the_environment_and_the_config_file(tmp_path):
    env = {"FAREBOX_POSTGRES_URL": "postgresql://u:pw@db/farebox"}
    assert postgres_url(load_settings(env=env)) == "postgresql://u:pw@db/farebox"
    assert "pw" not in repr(load_settings(env=env))
    config = tmp_path / "farebox.toml"
    config.write_text('postgres_url = "postgres://db/x"\nsink_batch = 50\n')
    settings = load_settings(env={}, config_file=config)
    assert postgres_url(settings) == "postgres://db/x" and sink_options(settings).batch == 50
    assert postgres_url(load_settings({"postgres_url": "postgresql://flag/x"}, env=env)) == "postgresql://flag/x"
    assert load_settings(env={}).postgres_url is None


def test_a_postgres_url_of_another_scheme_is_refused():
    with pytest.raises(SettingsError, match="^invalid setting postgres_url: must start with postgresql:// or postgres://$"):
        load_settings(env={"FAREBOX_POSTGRES_URL": "mysql://db/x"})


def test_appends_keep_the_length_unless_the_sink_trims():
    assert append_maxlen(load_settings(env={})) == 50_000
    on = load_settings({"postgres_url": "postgresql://db/x"}, env={})
    assert append_maxlen(on) == 5_000_000 and sink_options(on).stream_maxlen == 50_000
    assert append_maxlen(load_settings({"postgres_url": "postgresql://db/x", "stream_maxlen": 0}, env={})) == 0
