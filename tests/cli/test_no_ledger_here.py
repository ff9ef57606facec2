"""Without ``--url`` or a Redis URL, the budget and reading commands use the embedded Redis's
data directory only when it already holds farebox's data: from any other folder they refuse,
name the directory they looked in, and create nothing."""

from __future__ import annotations

import pytest

from tests.cli.helpers import farebox

COMMANDS = [
    ["budget", "set", "project", "foo", "0", "--period", "total"],
    ["budget", "show", "project", "foo"],
    ["budget", "list"],
    ["budget", "delete", "project", "foo"],
    ["usage", "project", "foo"],
    ["usage", "project", "foo", "--series"],
    ["forecast", "project", "foo"],
    ["events", "export"],
]


def expected_refusal(data_dir, found: str) -> str:
    return (f"farebox: {data_dir} {found}, so this is not the ledger a running farebox uses; point the command "
            "at it: --data-dir DIR (the directory `farebox serve` runs with), REDIS_URL / --redis-url, or --url URL "
            "with --admin-token (the running proxy)\n")


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_from_an_empty_folder_the_command_refuses_and_creates_nothing(tmp_path, args):
    result = farebox(args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == expected_refusal(tmp_path.resolve() / ".farebox", "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_a_data_dir_without_farebox_data_is_refused_and_left_as_it_was(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    (empty / "notes.txt").write_text("not redis\n")
    result = farebox(["budget", "set", "project", "foo", "0", "--data-dir", "data"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == expected_refusal(empty.resolve(), "holds no farebox data")
    assert [p.name for p in empty.iterdir()] == ["notes.txt"]


def test_a_named_data_dir_that_does_not_exist_is_refused_by_its_absolute_path(tmp_path):
    result = farebox(["usage", "project", "foo"], cwd=tmp_path, env={"FAREBOX_DATA_DIR": "missing/dir"})
    assert result.returncode == 2
    assert result.stderr == expected_refusal(tmp_path.resolve() / "missing" / "dir", "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_with_a_redis_url_the_command_needs_no_data_dir(tmp_path, redis_url, key_prefix):
    result = farebox(["budget", "set", "project", "foo", "0", "--period", "total"], cwd=tmp_path,
                     env={"REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": key_prefix})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("project foo: hard total limit $0.00")
    assert list(tmp_path.iterdir()) == []
