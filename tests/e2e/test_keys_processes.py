"""A key revoked or rotated through one farebox process stops working on another within a
second, though that one had the key in memory; and the CLI manages keys on the same ledger."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from tests.processes import clean_env, free_port, wait_ready

ADMIN = {"Authorization": "Bearer admin-secret"}
CHAT = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def start_farebox(upstream_url: str, redis_url: str, prefix: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**clean_env(), "REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": prefix, "FAREBOX_DATA_DIR": data_dir,
           "FAREBOX_ADMIN_TOKEN": "admin-secret", "FAREBOX_UPSTREAM_API_KEY": "sk-farebox-own"}
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port), "--upstream",
                             f"{upstream_url}/v1", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_ready(port, proc)
    return proc, f"http://127.0.0.1:{port}"


def chat(url: str, secret: str) -> int:
    return httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {secret}"},
                      timeout=30).status_code


def test_revocation_and_rotation_reach_a_second_process_within_a_second(make_stack, redis_url, key_prefix, tmp_path):
    stack = make_stack()
    procs = [start_farebox(stack.upstream_url, redis_url, key_prefix, str(tmp_path / f"d{i}")) for i in range(2)]
    (_, one), (_, two) = procs
    try:
        made = httpx.post(f"{one}/admin/keys", headers=ADMIN, json={"project": "acme"}).json()
        kept = httpx.post(f"{one}/admin/keys", headers=ADMIN, json={"project": "acme"}).json()
        for _ in range(3):   # the second process now holds both keys in memory
            assert chat(two, made["key"]) == 200 and chat(two, kept["key"]) == 200
        httpx.delete(f"{one}/admin/keys/{made['id']}", headers=ADMIN).raise_for_status()
        rotated = httpx.post(f"{one}/admin/keys/{kept['id']}/rotate", headers=ADMIN).json()
        time.sleep(1.0)   # the promise: within a second
        assert chat(two, made["key"]) == 401
        assert chat(two, kept["key"]) == 401
        assert chat(two, rotated["key"]) == 200
        assert chat(one, made["key"]) == 401   # the process that changed them forgot them at once
    finally:
        for proc, _ in procs:
            proc.terminate()
            proc.wait(15)
    forwarded = [r for r in stack.received if r["path"] == "/v1/chat/completions"]
    assert len(forwarded) == 7
    assert all(r["headers"]["authorization"] == "Bearer sk-farebox-own" for r in forwarded)


def run_cli(*args: str, redis_url: str, prefix: str) -> subprocess.CompletedProcess:
    env = {**clean_env(), "REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "proxy", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_the_cli_manages_keys_on_the_ledger(redis_url, key_prefix):
    made = run_cli("key", "create", "acme", "--agent", "planner", "--name", "ci", "--models", "gpt-4o*,claude-*",
                   "--rpm", "60", "--expires-in", "12h", redis_url=redis_url, prefix=key_prefix)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("fbk_") and len(secret) == 63
    assert "shown only this once" in made.stderr and secret not in made.stderr
    key_id = made.stderr.split()[1]
    listed = run_cli("key", "list", "acme", redis_url=redis_url, prefix=key_prefix)
    assert listed.returncode == 0 and key_id in listed.stdout and secret not in listed.stdout
    assert "models gpt-4o*,claude-* rpm 60" in listed.stdout and listed.stdout.rstrip().endswith("active")
    shown = run_cli("key", "show", key_id, "--json", redis_url=redis_url, prefix=key_prefix)
    assert shown.returncode == 0 and '"agent": "planner"' in shown.stdout and secret[20:] not in shown.stdout
    rotated = run_cli("key", "rotate", key_id, redis_url=redis_url, prefix=key_prefix)
    assert rotated.returncode == 0 and rotated.stdout.strip() != secret and rotated.stdout.startswith("fbk_")
    revoked = run_cli("key", "revoke", key_id, redis_url=redis_url, prefix=key_prefix)
    assert revoked.returncode == 0 and revoked.stdout.startswith("revoked ") and "revoked" in revoked.stdout.split()[-1]
    missing = run_cli("key", "show", "key_0000000000000000", redis_url=redis_url, prefix=key_prefix)
    assert (missing.returncode, missing.stderr) == (1, "farebox: No key 'key_0000000000000000'.\n")
    bad = run_cli("key", "create", "acme", "--expires-in", "soon", redis_url=redis_url, prefix=key_prefix)
    assert bad.returncode == 2
    assert bad.stderr == ("farebox: Invalid expires_in 'soon': use a duration such as 90s, 15m, 12h or 30d "
                          "(at most ten years).\n")


def test_the_cli_manages_keys_through_the_admin_api(make_stack):
    stack = make_stack(admin_token="admin-secret", admin_read_token="read-secret")
    env = {**clean_env(), "FAREBOX_URL": stack.url, "FAREBOX_ADMIN_TOKEN": "admin-secret"}

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "proxy", *args], env={**env, **extra}, capture_output=True,
                              text=True, timeout=60)

    made = cli("key", "create", "acme", "--json")
    assert made.returncode == 0, made.stderr
    issued = httpx.Response(200, content=made.stdout).json()
    assert issued["key"].startswith("fbk_") and issued["project"] == "acme"
    listed = cli("key", "list", "acme", "--json", FAREBOX_ADMIN_TOKEN="read-secret")
    assert listed.returncode == 0 and issued["id"] in listed.stdout and issued["key"] not in listed.stdout
    refused = cli("key", "revoke", issued["id"], FAREBOX_ADMIN_TOKEN="read-secret")
    assert refused.returncode == 2 and "(403)" in refused.stderr
    assert cli("key", "revoke", issued["id"]).returncode == 0
    assert httpx.get(f"{stack.url}/admin/keys/{issued['id']}",
                     headers=ADMIN).json()["state"] == "revoked"
    missing = cli("key", "rotate", "key_0000000000000000")
    assert (missing.returncode, missing.stderr) == (1, "farebox: No key 'key_0000000000000000'.\n")
