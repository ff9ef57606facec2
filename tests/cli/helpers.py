"""Running the ``farebox`` command as an operator does: a separate process, in a chosen folder,
with no farebox settings in its environment but those a test gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import processes

FAREBOX = [sys.executable, "-m", "proxy"]
REPO = Path(__file__).resolve().parents[2]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = processes.clean_env()
    env["PYTHONPATH"] = str(REPO)  # `python -m proxy` from any folder runs this checkout
    env.update(extra or {})
    return env


def farebox(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
            stdout: int | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``farebox ARGS``; output captured as text unless ``stdout`` (a file descriptor) is given."""
    if stdout is None:
        return subprocess.run(FAREBOX + args, cwd=cwd, env=clean_env(env), capture_output=True, text=True,
                              timeout=timeout)
    return subprocess.run(FAREBOX + args, cwd=cwd, env=clean_env(env), stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)
