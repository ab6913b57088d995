"""``pine worker`` refuses clearly: unknown strategy, unknown strategy type or parameter, no Redis."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pine.redis_server import free_port
from tests.worker_support import REPO, STRATEGY, worker_cmd, worker_env, write_config


def _run(config: Path, strategy: str, redis_url: str | None, runtime: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        worker_cmd(config, strategy, "--stop-at-end"), env=worker_env(redis_url, runtime), cwd=REPO,
        capture_output=True, text=True, timeout=60,
    )


def _assert_refused(proc: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for phrase in phrases:
        assert phrase in proc.stderr


def test_unknown_strategy_name_names_the_configured_ones(redis_url: str, tmp_path: Path) -> None:
    proc = _run(write_config(tmp_path / "c.yml"), "ibs_zz", redis_url, tmp_path / "rt")
    _assert_refused(proc, "unknown strategy 'ibs_zz'", STRATEGY)


@pytest.mark.parametrize(
    ("strategy", "phrases"),
    [
        ({"strategy_type": "zigzag"}, ("unknown strategy_type 'zigzag'", "known: breakout, ibs")),
        ({"params": {"entry_lo": 0.1}}, ("unknown parameter(s) entry_lo", "entry_low", "max_bars_held")),
    ],
    ids=["strategy_type", "param"],
)
def test_strategy_the_registry_cannot_build_is_refused(
    redis_url: str, tmp_path: Path, strategy: dict[str, object], phrases: tuple[str, ...]
) -> None:
    params = strategy.pop("params", None)
    config = write_config(tmp_path / "c.yml", strategy_params=params, **strategy)  # type: ignore[arg-type]
    _assert_refused(_run(config, STRATEGY, redis_url, tmp_path / "rt"), f"strategies.{STRATEGY}", *phrases)


def test_unreachable_redis_is_a_clear_message(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    proc = _run(write_config(tmp_path / "c.yml"), STRATEGY, dead, tmp_path / "rt")
    _assert_refused(proc, "cannot reach Redis at redis://127.0.0.1:")
