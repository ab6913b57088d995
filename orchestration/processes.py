"""Starting Pine processes (hub, workers) as children with their own log files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def pine_command(*args: str) -> list[str]:
    """argv that runs ``pine ARGS`` with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "pine.cli", *args]


def spawn_pine(
    args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, *, detached: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``pine ARGS`` with stdout+stderr appended to ``log_path``.

    ``detached`` gives the child its own session so it outlives its parent (Dagster restarts
    must not kill trading); otherwise it shares the parent's process group and a Ctrl-C in the
    terminal reaches it too.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            pine_command(*args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=detached,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def log_tail(path: Path, lines: int = 15) -> str:
    """Last lines of a log file, for error messages that say where to look."""
    if not path.exists():
        return "(no log written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
