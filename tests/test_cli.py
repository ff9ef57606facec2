"""The farebox command: settings errors, embedded Redis that persists, budget and usage commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.harness import LoopThread
from tests.processes import free_port
from proxy.fake_upstream import create_fake_app

FAREBOX = [sys.executable, "-m", "proxy"]


def run(args, env=None, timeout=60):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FAREBOX_") and k != "REDIS_URL"}
    full_env.update(env or {})
    return subprocess.run(FAREBOX + args, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args,env,fragment", [
    (["serve"], {"FAREBOX_PORT": "99999"}, "invalid setting port"),
    (["serve"], {"FAREBOX_PORT": "eighty"}, "invalid setting port"),
    (["serve", "--upstream", "ftp://example"], {}, "invalid setting upstream: must be an http:// or https:// URL"),
    (["serve", "--redis-url", "localhost:6379"], {}, "invalid setting redis_url: must start with redis://"),
    (["serve", "--redis-cluster"], {}, "invalid setting redis_cluster: needs redis_url set to a node of the cluster"),
    (["serve"], {"FAREBOX_FAIL_MODE": "sideways"}, "invalid setting fail_mode"),
    (["serve", "--default-project", "a/b"], {}, "invalid setting default_project"),
    (["serve"], {"FAREBOX_MODEL_ALIASES": "{not json"}, "invalid setting FAREBOX_MODEL_ALIASES: not valid JSON"),
])
def test_bad_settings_print_one_line_and_exit_2(args, env, fragment):
    result = run(args, env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("farebox: ") and fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_config_file_keys_and_syntax(tmp_path):
    unknown = tmp_path / "farebox.toml"
    unknown.write_text('port = 8081\ncolour = "red"\n')
    result = run(["serve", "--config", str(unknown)])
    assert result.returncode == 2 and result.stderr.strip() == "farebox: invalid setting colour: unknown setting"
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1\n")
    result = run(["serve", "--config", str(broken)])
    assert result.returncode == 2 and "is not valid TOML" in result.stderr
    missing = run(["serve", "--config", str(tmp_path / "nope.toml")])
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_config_file_is_read_and_flags_win(tmp_path):
    from proxy.settings import load_settings
    config = tmp_path / "farebox.toml"
    config.write_text('[farebox]\nport = 8181\nupstream = "http://127.0.0.1:9/v1"\nmin_output_tokens = 64\n')
    settings = load_settings({"port": 8282}, env={"FAREBOX_MIN_OUTPUT_TOKENS": "32"}, config_file=config)
    assert settings.port == 8282 and settings.upstream == "http://127.0.0.1:9/v1" and settings.min_output_tokens == 32


@pytest.fixture
def fake_upstream():
    threads = LoopThread()
    url = threads.serve(create_fake_app())
    yield f"{url}/v1"
    threads.close()


def _serve(data_dir, upstream, port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAREBOX_") and k != "REDIS_URL"}
    proc = subprocess.Popen(FAREBOX + ["serve", "--port", str(port), "--upstream", upstream, "--data-dir", str(data_dir)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("farebox serve did not become ready")


def _stop(proc) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.stderr.read()


def test_embedded_redis_data_survives_a_restart_and_the_cli_finds_it(tmp_path, fake_upstream):
    data_dir = tmp_path / "fb"
    port = free_port()
    proc = _serve(data_dir, fake_upstream, port)
    try:
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"X-Project-Id": "acme"},
                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200
        # While serve runs, the CLI talks to the same embedded Redis.
        live = run(["usage", "project", "acme", "--data-dir", str(data_dir), "--json"])
        assert live.returncode == 0, live.stderr
        assert json.loads(live.stdout)["requests"] == 1
    finally:
        log = _stop(proc)
    assert "using redis: embedded" in log
    assert proc.returncode == 0
    # Stopped: the CLI starts the embedded Redis on the same data and finds the request.
    after = run(["usage", "project", "acme", "--data-dir", str(data_dir), "--json"])
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["requests"] == 1
    # And serve again finds it too.
    proc = _serve(data_dir, fake_upstream, port)
    try:
        listed = run(["usage", "project", "acme", "--data-dir", str(data_dir)])
        assert "requests 1" in listed.stdout
    finally:
        _stop(proc)


def test_budget_commands(tmp_path, redis_url, key_prefix):
    env = {"REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": key_prefix}
    created = run(["budget", "set", "project", "acme", "50", "--period", "month", "--json"], env)
    assert created.returncode == 0, created.stderr
    status = json.loads(created.stdout)
    assert status["limit_usd"] == "50.00" and status["period"] == "month" and status["mode"] == "hard"
    shown = run(["budget", "show", "project", "acme"], env)
    assert shown.returncode == 0 and "project acme: hard month limit $50.00" in shown.stdout
    run(["budget", "set", "agent", "acme/planner", "2.5", "--period", "day", "--mode", "soft",
         "--emails", "ops@example.com, lead@example.com"], env)
    listed = json.loads(run(["budget", "list", "--json"], env).stdout)["budgets"]  # the admin API's JSON
    assert {(b["scope"], b["id"]) for b in listed} == {("project", "acme"), ("agent", "acme/planner")}
    assert {b["id"]: b["alert_emails"] for b in listed} == {"acme": [],
                                                            "acme/planner": ["ops@example.com", "lead@example.com"]}
    shown = run(["budget", "show", "agent", "acme/planner"], env).stdout
    assert shown.rstrip().endswith("; alerts e-mailed to ops@example.com, lead@example.com")
    deleted = run(["budget", "delete", "project", "acme"], env)
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    gone = run(["budget", "show", "project", "acme"], env)
    assert gone.returncode == 1 and "no budget for project 'acme'" in gone.stderr


@pytest.mark.parametrize("args,fragment", [
    (["budget", "set", "project", "acme", "-5"], "limit"),
    (["budget", "set", "project", "acme", "five"], "Invalid limit_usd"),
    (["budget", "set", "galaxy", "acme", "5"], "scope"),
    (["budget", "set", "project", "acme", "5", "--period", "year"], "period"),
    (["usage", "project", "acme", "--at", "someday"], "Invalid at"),
    (["budget", "set", "project", "acme", "5", "--emails", "ops"], "Invalid alert_emails: 'ops' is not an e-mail"),
])
def test_cli_bad_input_exits_2_with_a_message(redis_url, key_prefix, args, fragment):
    result = run(args, {"REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": key_prefix})
    assert result.returncode == 2, result.stdout + result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr
