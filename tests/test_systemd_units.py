"""The shipped systemd units: valid for systemd, the restart/stop policy Pine relies on, commands the CLI accepts."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pine.cli import build_parser
from pine.config.schema import SupervisionConfig
from tests.conftest import REPO

UNITS = REPO / "deploy" / "systemd"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser


@pytest.mark.parametrize("name, argv", [
    ("pine-hub.service", ["hub"]),
    ("pine-worker@.service", ["worker", "--strategy", "ibs_a"]),
])
def test_units_restart_on_failure_and_stop_gracefully(name: str, argv: list[str]) -> None:
    unit = _unit(name)
    service = unit["Service"]
    assert service["Restart"] == "on-failure" and int(service["RestartSec"]) > 0
    assert service["KillSignal"] == "SIGTERM"
    # The processes' own graceful stop budget, as with Dagster supervision.
    assert float(service["TimeoutStopSec"]) == SupervisionConfig().stop_timeout_s
    assert service["EnvironmentFile"].endswith("/.env") and service["WorkingDirectory"]
    for key in ("After", "Wants"):
        assert {"redis-server.service", "network-online.target"} <= set(unit["Unit"][key].split())
    command = shlex.split(service["ExecStart"].replace("%i", "ibs_a"))
    assert Path(command[0]).name == "pine" and command[1:] == argv
    build_parser().parse_args(command[1:])  # a command the CLI accepts (SystemExit otherwise)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    pine = Path(sys.executable).parent / "pine"
    for unit in UNITS.glob("*.service"):
        # Point ExecStart at this checkout's venv (systemd checks that the binary exists).
        text = unit.read_text().replace("/opt/pine/.venv/bin/pine", str(pine))
        target = tmp_path / unit.name.replace("@.", "@ibs_a.")
        target.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", *map(str, sorted(tmp_path.glob("*.service")))],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
