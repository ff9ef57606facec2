"""A reader that goes away (``farebox usage ... | head -2``) ends any printing command quietly:
exit status 141, as for a command ended by SIGPIPE, and nothing on standard error."""

from __future__ import annotations

import os
import time

import pytest

from proxy.domain import Attribution
from tests.cli.helpers import farebox
from tests.test_cli_reports import record

COMMANDS = [
    ["usage", "project", "acme"],
    ["usage", "project", "acme", "--json"],
    ["usage", "project", "acme", "--series"],
    ["forecast", "project", "acme"],
    ["budget", "list"],
    ["budget", "show", "project", "acme", "--json"],
    ["events", "export"],
    ["events", "export", "--format", "csv"],
]


@pytest.fixture
def env(tmp_path, redis_url, key_prefix):
    env = {"REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": key_prefix}
    record(redis_url, key_prefix, [("r1", Attribution("acme", "planner", "run-1"), time.time(), 430_000_000)])
    made = farebox(["budget", "set", "project", "acme", "5"], cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    return env


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_a_closed_standard_output_ends_the_command_quietly(tmp_path, env, args):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes anything
    try:
        result = farebox(args, cwd=tmp_path, env=env, stdout=write_end)
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141
