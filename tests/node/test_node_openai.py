"""The Node ``openai`` package streams a response through farebox: the events arrive as the
upstream sent them and the request is metered like any other.

The package is installed into ``tests/node`` (``npm install``, its exact version pinned in
``package.json``) the first time; the test is skipped only where ``node`` or ``npm`` is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pricing.cost import Usage, cost_nano
from pricing.money import nano_to_usd
from tests.e2e.test_responses import events_of, usage_of, wait_for
from tests.processes import clean_env

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="node and npm are needed to run the Node openai package")


def _install() -> None:
    if (HERE / "node_modules" / "openai").is_dir():
        return
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=HERE, timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"npm install failed: {done.stderr}"


def test_the_node_package_streams_a_response_through_farebox(make_stack, key_prefix):
    _install()
    stack = make_stack()
    env = {**clean_env(), "FAREBOX_URL": stack.base_url}
    done = subprocess.run(["node", str(HERE / "stream_response.mjs")], cwd=HERE, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["types"][0] == "response.created" and seen["types"][-1] == "response.completed"
    assert seen["text"] == seen["outputText"] and seen["text"]
    usage = seen["usage"]
    assert wait_for(lambda: usage_of(stack)["requests"] == 1)
    [event] = events_of(stack, key_prefix)
    assert (event[b"endpoint"], event[b"agent"], event[b"session"]) == (b"responses", b"node-agent", b"node-run")
    assert (int(event[b"prompt_tokens"]), int(event[b"completion_tokens"])) == (usage["input_tokens"],
                                                                              usage["output_tokens"])
    price = stack.services.catalog.resolve("gpt-4o-mini")
    assert usage_of(stack)["cost_usd"] == nano_to_usd(cost_nano(price, Usage(usage["input_tokens"],
                                                                              usage["output_tokens"])))
