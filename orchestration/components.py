"""The Pine processes Dagster manages: their names, command lines and files in the runtime dir.

A component is ``hub`` or ``worker:{strategy}``, the names heartbeats use. Runs are tagged
``pine/process: hub`` or ``pine/process: worker.{strategy}``: Dagster's strict tag values (those of
job and asset definitions) allow only letters, digits, ``_``, ``-`` and ``.``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Final

from pine.config import PineConfig

HUB: Final = "hub"
WORKER_PREFIX: Final = "worker:"
# Run tag limited to one run per value by dagster.yaml's run queue.
PROCESS_TAG: Final = "pine/process"


def worker(strategy: str) -> str:
    """Component name of a strategy's worker."""
    return f"{WORKER_PREFIX}{strategy}"


def supervised_components(cfg: PineConfig) -> list[str]:
    """What the supervision sensor watches: the hub (unless ``supervision.hub`` is off) and every enabled worker."""
    hub = [HUB] if cfg.supervision.hub else []
    return hub + [worker(name) for name in cfg.enabled_strategies()]


def check_component(cfg: PineConfig, component: str) -> str:
    """``component`` if it names the hub or a configured strategy's worker; ValueError listing the valid names."""
    strategy = component.removeprefix(WORKER_PREFIX)
    if component == HUB or (component.startswith(WORKER_PREFIX) and strategy in cfg.strategies):
        return component
    known = ", ".join([HUB, *(worker(s) for s in sorted(cfg.strategies))])
    raise ValueError(f"unknown Pine process {component!r}; known: {known}")


def tag_value(component: str) -> str:
    """``pine/process`` tag value of ``component`` (``worker:ibs_a`` → ``worker.ibs_a``)."""
    return component.replace(":", ".")


def file_stem(component: str) -> str:
    """Base name of the component's files, as for heartbeat files (``worker:ibs_a`` → ``worker_ibs_a``)."""
    return component.replace(":", "_")


def command_args(cfg: PineConfig, component: str) -> list[str]:
    """``pine`` arguments that run ``component`` for good: the live hub, or a worker without ``--stop-at-end``."""
    args = [HUB] if component == HUB else ["worker", "--strategy", component.removeprefix(WORKER_PREFIX)]
    # The same config file as Dagster's, wherever the process's working directory is.
    return [*args, "--config", str(cfg.source.resolve())] if cfg.source else args


def matches_command(argv: list[str], component: str) -> bool:
    """Whether a process command line (``/proc/PID/cmdline``) is ``pine`` running ``component``."""
    if not any("pine" in part for part in argv):
        return False
    if component == HUB:
        return HUB in argv
    strategy = component.removeprefix(WORKER_PREFIX)
    pairs = set(pairwise(argv))
    return "worker" in argv and (("--strategy", strategy) in pairs or f"--strategy={strategy}" in argv)


@dataclass(frozen=True)
class ProcessFiles:
    """A component's PID file, log, stop marker and lock file, under ``<runtime>/pids`` and ``<runtime>/logs``."""

    pid: Path
    log: Path
    stop_marker: Path
    lock: Path

    @classmethod
    def of(cls, runtime_dir: Path, component: str) -> ProcessFiles:
        """The files of ``component`` in ``runtime_dir``."""
        root = Path(runtime_dir).resolve()
        stem = file_stem(component)
        pids = root / "pids"
        return cls(
            pid=pids / f"{stem}.pid",
            log=root / "logs" / f"{stem}.log",
            stop_marker=pids / f"{stem}.stopped",
            lock=pids / f"{stem}.lock",
        )
