"""Starting, stopping and restarting Pine processes detached from Dagster.

A started process gets its own session (``spawn_pine(detached=True)``), a PID file and an
appending log in the runtime dir, so a Dagster restart (or a run worker exiting) never takes
trading down with it. A per-component file lock keeps two runs from managing the same process
at once even when a run lacks the ``pine/process`` tag the run queue limits on.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import redis

from orchestration.components import ProcessFiles, command_args, matches_command
from orchestration.heartbeats import read_heartbeat
from orchestration.processes import log_tail, spawn_pine
from pine.config import PineConfig

POLL_S: Final = 0.2
# After SIGKILL the kernel needs a moment; longer means the process is stuck in the kernel.
KILL_WAIT_S: Final = 10.0


# Processes started from this one. They are meant to outlive it, but while it lives it is their
# parent: polling them reaps those that exited (no zombies in a long-lived Dagster process), and
# holding them keeps Popen from warning that a dropped child is still running.
_children: list[subprocess.Popen[bytes]] = []


class ProcessControlError(RuntimeError):
    """A process could not be started or stopped; the message says why and where its log is."""


@dataclass(frozen=True)
class Outcome:
    """What a start, stop or restart did (shown as run metadata)."""

    component: str
    action: str  # started, already running, stopped, killed, not running
    pid: int | None
    log: Path
    detail: str = ""


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, exited but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        # /proc/PID/stat: "pid (comm) state ..."; comm may contain spaces and parentheses.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) is all we know
    return state not in ("Z", "X")


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_component_process(pid: int, component: str) -> bool:
    """``pid`` is alive and (where /proc tells) really runs ``component``, not a recycled PID."""
    if not pid_alive(pid):
        return False
    argv = _cmdline(pid)
    return argv is None or matches_command(argv, component)


def read_pid(path: Path) -> int | None:
    """The PID in a PID file, None if there is no (readable) file."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def find_running(cfg: PineConfig, component: str, client: redis.Redis | None) -> int | None:
    """PID of the running ``component`` on this host: from our PID file, else from its heartbeat.

    The heartbeat covers a process started by hand or by an earlier Dagster deployment: starting a
    second worker for the same strategy would trade twice.
    """
    files = ProcessFiles.of(cfg.runtime_dir, component)
    beat = read_heartbeat(cfg, component, client)
    for pid in (read_pid(files.pid), beat.pid if beat is not None and not beat.exited else None):
        if pid is not None and pid != os.getpid() and is_component_process(pid, component):
            return pid
    return None


@contextmanager
def component_lock(files: ProcessFiles, timeout: float) -> Iterator[None]:
    """Hold ``files.lock`` (flock); ProcessControlError if another run holds it for ``timeout`` seconds."""
    files.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(files.lock, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ProcessControlError(f"another run is managing this process (lock {files.lock})") from None
                time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def terminate(pid: int, timeout: float) -> str:
    """SIGTERM ``pid``, SIGKILL it after ``timeout`` seconds; returns ``stopped`` or ``killed``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "stopped"
    if _wait_gone(pid, timeout):
        return "stopped"
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    if not _wait_gone(pid, KILL_WAIT_S):
        raise ProcessControlError(f"process {pid} survived SIGKILL for {KILL_WAIT_S:.0f}s")
    return "killed"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def start(cfg: PineConfig, component: str, client: redis.Redis | None, *, redis_url: str | None = None) -> Outcome:
    """Start ``component`` detached unless it runs already; clears its stop marker.

    ``redis_url`` (the one Dagster reads heartbeats from) becomes the process's ``REDIS_URL``, so
    that both always talk to the same server.

    Returns once the new process has written a heartbeat. ProcessControlError (with the end of its
    log) if it exits first or writes none within ``supervision.start_timeout_s``; a process that
    stays silent is stopped again, so that a failed start leaves nothing behind.
    """
    files = ProcessFiles.of(cfg.runtime_dir, component)
    with component_lock(files, _lock_timeout(cfg)):
        files.stop_marker.unlink(missing_ok=True)
        return _start_locked(cfg, component, client, files, redis_url)


def stop(cfg: PineConfig, component: str, client: redis.Redis | None, *, reason: str) -> Outcome:
    """Stop ``component`` for good: write the stop marker (the sensor leaves it alone), then SIGTERM/SIGKILL."""
    files = ProcessFiles.of(cfg.runtime_dir, component)
    with component_lock(files, _lock_timeout(cfg)):
        files.stop_marker.parent.mkdir(parents=True, exist_ok=True)
        stamp = {"time": datetime.now(UTC).isoformat(), "reason": reason}
        files.stop_marker.write_text(json.dumps(stamp) + "\n")
        return _stop_locked(cfg, component, client, files)


def restart(
    cfg: PineConfig, component: str, client: redis.Redis | None, *, redis_url: str | None = None
) -> tuple[Outcome, Outcome]:
    """Stop ``component`` if it runs (SIGTERM, then SIGKILL), then :func:`start` it; clears its stop marker."""
    files = ProcessFiles.of(cfg.runtime_dir, component)
    with component_lock(files, _lock_timeout(cfg)):
        files.stop_marker.unlink(missing_ok=True)
        stopped = _stop_locked(cfg, component, client, files)
        return stopped, _start_locked(cfg, component, client, files, redis_url)


def _lock_timeout(cfg: PineConfig) -> float:
    # Long enough for a run that is restarting the same process to finish.
    return cfg.supervision.stop_timeout_s + KILL_WAIT_S + cfg.supervision.start_timeout_s


def _stop_locked(cfg: PineConfig, component: str, client: redis.Redis | None, files: ProcessFiles) -> Outcome:
    pid = find_running(cfg, component, client)
    if pid is None:
        files.pid.unlink(missing_ok=True)
        return Outcome(component, "not running", None, files.log)
    action = terminate(pid, cfg.supervision.stop_timeout_s)
    files.pid.unlink(missing_ok=True)
    return Outcome(component, action, pid, files.log)


def _start_locked(
    cfg: PineConfig, component: str, client: redis.Redis | None, files: ProcessFiles, redis_url: str | None
) -> Outcome:
    running = find_running(cfg, component, client)
    if running is not None:
        return Outcome(component, "already running", running, files.log)
    runtime = Path(cfg.runtime_dir).resolve()
    started = time.time()
    env = {"PINE_RUNTIME_DIR": str(runtime), **({"REDIS_URL": redis_url} if redis_url else {})}
    proc = spawn_pine(command_args(cfg, component), files.log, env, detached=True)
    _children[:] = [p for p in _children if p.poll() is None] + [proc]
    files.pid.parent.mkdir(parents=True, exist_ok=True)
    files.pid.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + cfg.supervision.start_timeout_s
    while True:
        beat = read_heartbeat(cfg, component, client)
        if beat is not None and beat.pid == proc.pid and beat.time >= started:
            if beat.exited:
                proc.wait()  # it is on its way out; reap it rather than leave a zombie
                break
            return Outcome(component, "started", proc.pid, files.log, f"first heartbeat: {beat.status}")
        if proc.poll() is not None:
            break
        if time.monotonic() > deadline:
            terminate(proc.pid, cfg.supervision.stop_timeout_s)
            proc.wait()
            files.pid.unlink(missing_ok=True)
            raise ProcessControlError(
                f"{component} wrote no heartbeat within {cfg.supervision.start_timeout_s:.0f}s and was stopped; "
                f"last lines of {files.log}:\n{log_tail(files.log)}"
            )
        time.sleep(POLL_S)
    files.pid.unlink(missing_ok=True)
    raise ProcessControlError(
        f"{component} exited at start (exit code {proc.returncode}); last lines of {files.log}:\n{log_tail(files.log)}"
    )
