"""Process supervision, the logic behind the sensor: classify each process, decide what to request.

Each tick every supervised component is observed as

- ``healthy``: a fresh heartbeat from a running process (or a process we just started that has
  not written its first one yet);
- ``stale``: it ran but is down or hung: its last heartbeat is older than ``heartbeat.ttl``, says
  it exited, or names a PID from our PID file that is gone; or our process runs but never beats;
- ``missing``: no heartbeat anywhere and no process of ours;
- ``stopped``: stopped on purpose (the ``stop_process`` job's marker; with systemd, a clean stop).

An **outage** starts when a component is seen down after having been up (or at the first tick),
or when its last heartbeat changed since the outage began while no run of ours was at work on it
(it came back and died again between two ticks). It is numbered in the sensor cursor, and its run key is
``{component}/outage-{n}/attempt-{a}``: repeated ticks of one outage request the same key, which
Dagster runs once. A new attempt (new key) is made only when the outage's run has finished and the
process is still down. Every new key counts as a restart; more than ``supervision.max_restarts``
within ``supervision.restart_window_minutes`` is a crash loop: reported once, no run requested
until the window has moved on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final, Literal

import redis

from orchestration.alerts import Alert
from orchestration.components import ProcessFiles
from orchestration.heartbeats import read_heartbeat
from orchestration.process_control import is_component_process, pid_alive, read_pid
from pine.config import PineConfig

START_JOB: Final = "start_process"
RESTART_JOB: Final = "restart_process"
STOP_JOB: Final = "stop_process"

RunState = Literal["absent", "active", "done"]


class State(StrEnum):
    """How a component looks this tick."""

    HEALTHY = "healthy"
    STALE = "stale"
    MISSING = "missing"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Observation:
    """One component at one tick."""

    component: str
    state: State
    reason: str
    # Time of its last heartbeat (epoch s): identifies an outage.
    beat_time: float | None = None


def observe(cfg: PineConfig, component: str, client: redis.Redis | None, now: float) -> Observation:
    """Classify ``component`` from its stop marker, heartbeat (Redis, then file) and PID file."""
    files = ProcessFiles.of(cfg.runtime_dir, component)
    if files.stop_marker.exists():
        return Observation(component, State.STOPPED, f"stopped by an operator ({files.stop_marker})")
    beat = read_heartbeat(cfg, component, client)
    our_pid = read_pid(files.pid)
    if beat is None:
        if our_pid is not None and is_component_process(our_pid, component):
            return _silent(cfg, component, our_pid, files.pid, now)
        return Observation(component, State.MISSING, "no heartbeat in Redis or in its file")
    age = now - beat.time
    if beat.status == "stopped" and cfg.supervision.mode == "systemd":
        return Observation(component, State.STOPPED, "stopped cleanly (systemd)", beat.time)
    if beat.exited:
        return Observation(component, State.STALE, f"exited: its last heartbeat says {beat.status!r}", beat.time)
    if age > cfg.heartbeat.ttl:
        return Observation(
            component, State.STALE, f"last heartbeat {age:.0f}s ago, ttl {cfg.heartbeat.ttl:.0f}s", beat.time
        )
    if beat.pid is not None and beat.pid == our_pid and not pid_alive(our_pid):
        return Observation(component, State.STALE, f"process {our_pid} is gone (heartbeat {age:.0f}s old)", beat.time)
    return Observation(component, State.HEALTHY, f"{beat.status}, heartbeat {age:.0f}s old", beat.time)


def _silent(cfg: PineConfig, component: str, pid: int, pid_file: Path, now: float) -> Observation:
    # Our process runs but has written no heartbeat: starting up, or hung before its first beat.
    try:
        started = pid_file.stat().st_mtime
    except FileNotFoundError:
        started = now  # a run is replacing the PID file right now
    if now - started <= cfg.supervision.start_timeout_s:
        return Observation(component, State.HEALTHY, f"starting (pid {pid}, no heartbeat yet)")
    return Observation(component, State.STALE, f"process {pid} has written no heartbeat in {now - started:.0f}s")


@dataclass(frozen=True)
class Policy:
    """The ``supervision`` settings the planner needs."""

    mode: Literal["dagster", "systemd"]
    max_restarts: int
    window_s: float

    @classmethod
    def of(cls, cfg: PineConfig) -> Policy:
        """The policy of ``cfg.supervision``."""
        s = cfg.supervision
        return cls(mode=s.mode, max_restarts=s.max_restarts, window_s=s.restart_window_minutes * 60)


@dataclass
class ComponentRecord:
    """What the sensor cursor remembers of one component."""

    outages: int = 0  # outages seen so far: numbers the run keys
    down: bool = False  # an outage is in progress
    beat_time: float | None = None  # last heartbeat when the outage began
    attempt: int = 0  # runs requested for the current outage
    restarts: list[float] = field(default_factory=list)  # when runs were requested, within the window
    crash_loop: bool = False  # reported; cleared when a restart is allowed again or it is healthy

    def run_key(self, component: str) -> str:
        """Run key of the current outage's current attempt."""
        return f"{component}/outage-{self.outages}/attempt-{self.attempt}"


@dataclass(frozen=True)
class Request:
    """A run the sensor asks for."""

    component: str
    job_name: str
    run_key: str
    reason: str


@dataclass
class Plan:
    """The outcome of one tick: runs to request, alerts to emit, a line per component, the new cursor."""

    requests: list[Request] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cursor: str = ""


def plan_tick(
    observations: list[Observation],
    cursor: str | None,
    now: float,
    policy: Policy,
    run_state: Callable[[str], RunState],
) -> Plan:
    """Decide this tick's requests and alerts; ``run_state(run_key)`` says whether that run exists and finished."""
    records = {k: ComponentRecord(**v) for k, v in (json.loads(cursor) if cursor else {}).items()}
    plan = Plan()
    for obs in observations:
        rec = records.setdefault(obs.component, ComponentRecord())
        rec.restarts = [t for t in rec.restarts if now - t < policy.window_s]
        if obs.state in (State.HEALTHY, State.STOPPED):
            rec.down = rec.crash_loop = False
            plan.notes.append(f"{obs.component}: {obs.state} ({obs.reason})")
            continue
        run = run_state(rec.run_key(obs.component)) if rec.down and rec.attempt else "absent"
        # A heartbeat that changed while our run is at work is that run's doing (a SIGTERMed process
        # writes a last one): the same outage. Otherwise the process came back and died again.
        if not rec.down or (obs.beat_time != rec.beat_time and run != "active"):
            rec.outages += 1
            rec.down, rec.beat_time, rec.attempt = True, obs.beat_time, 0
            plan.alerts.append(_down_alert(obs, policy))
        if policy.mode == "systemd":
            plan.notes.append(f"{obs.component}: {obs.state} ({obs.reason}); systemd restarts it")
            continue
        if rec.attempt == 0 or run == "done":
            if len(rec.restarts) >= policy.max_restarts:
                plan.notes.append(_loop_note(obs, rec, policy, now))
                if not rec.crash_loop:
                    rec.crash_loop = True
                    plan.alerts.append(_loop_alert(obs, rec, policy))
                continue
            rec.attempt += 1
            rec.restarts.append(now)
            rec.crash_loop = False
        job = START_JOB if obs.state == State.MISSING else RESTART_JOB
        key = rec.run_key(obs.component)
        plan.requests.append(Request(obs.component, job, key, f"{obs.state}: {obs.reason}"))
        plan.notes.append(f"{obs.component}: {obs.state} ({obs.reason}); {job} requested ({key})")
    observed = {o.component for o in observations}
    plan.cursor = json.dumps({k: asdict(v) for k, v in records.items() if k in observed}, sort_keys=True)
    return plan


def _down_alert(obs: Observation, policy: Policy) -> Alert:
    then = "systemd should restart it" if policy.mode == "systemd" else "Dagster is restarting it"
    return Alert(
        kind="process_down",
        severity="warning",
        component=obs.component,
        message=f"{obs.component} is down ({obs.state}: {obs.reason}); {then}",
        details={"state": str(obs.state), "reason": obs.reason, "last_heartbeat": obs.beat_time},
    )


def _loop_note(obs: Observation, rec: ComponentRecord, policy: Policy, now: float) -> str:
    resume = min(rec.restarts) + policy.window_s - now
    return (
        f"{obs.component}: crash loop: {len(rec.restarts)} restarts in {policy.window_s / 60:g} min; "
        f"not restarted for another {resume:.0f}s ({obs.state}: {obs.reason})"
    )


def _loop_alert(obs: Observation, rec: ComponentRecord, policy: Policy) -> Alert:
    return Alert(
        kind="crash_loop",
        severity="critical",
        component=obs.component,
        message=(
            f"{obs.component} is crash-looping: {len(rec.restarts)} restarts in {policy.window_s / 60:g} min; "
            f"Dagster stops restarting it until the window has passed. Last state: {obs.state} ({obs.reason})"
        ),
        details={"restarts": rec.restarts, "window_s": policy.window_s, "state": str(obs.state)},
    )

