"""Killswitch: tiers, the POLICY_KILLSWITCH floor, persistence in Redis and the mirror file, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from pine import redis_names
from pine.killswitch import Killswitch, KillswitchState, allows, env_floor, parse_state
from tests.scenario import pine, write_config

K = KillswitchState


@pytest.mark.parametrize(("text", "state"), [
    ("true", K.HALT), ("TRUE", K.HALT), ("1", K.HALT), ("false", K.OFF), ("", K.OFF), ("off", K.OFF),
    ("halt", K.HALT), ("reduce-only", K.REDUCE_ONLY), ("REDUCE_ONLY", K.REDUCE_ONLY), ("flatten", K.FLATTEN),
])
def test_states_parse_including_the_legacy_boolean(text: str, state: KillswitchState) -> None:
    assert parse_state(text) is state


def test_an_unreadable_policy_killswitch_fails_closed() -> None:
    with pytest.raises(ValueError, match="unknown killswitch state 'maybe'"):
        parse_state("maybe")
    assert env_floor({"POLICY_KILLSWITCH": "maybe"}) is K.HALT
    assert env_floor({"POLICY_KILLSWITCH": "true"}) is K.HALT
    assert env_floor({}) is K.OFF


def test_what_each_tier_lets_through() -> None:
    assert [(s.value, allows(s, exit=False), allows(s, exit=True)) for s in K] == [
        ("off", True, True), ("reduce_only", False, True), ("halt", False, False), ("flatten", False, True)]


def test_state_persists_in_redis_and_the_environment_is_a_floor(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    cli = Killswitch(client, mirror_dir=tmp_path, environ={})
    assert cli.effective() is K.OFF
    cli.set(K.REDUCE_ONLY, reason="broker maintenance", source="test")
    # Another process (a restarted worker) reads the same state.
    worker = Killswitch(redis.Redis.from_url(redis_url), environ={})
    assert worker.stored().state is K.REDUCE_ONLY and worker.stored().reason == "broker maintenance"
    legacy = Killswitch(client, environ={"POLICY_KILLSWITCH": "true"})
    assert legacy.effective() is K.HALT  # stricter than Redis
    cli.set(K.FLATTEN)
    assert legacy.effective() is K.FLATTEN  # Redis stricter than the floor


def test_the_mirror_restores_a_lost_key_instead_of_trading_again(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    Killswitch(client, mirror_dir=tmp_path, environ={}).set(K.HALT, reason="incident", source="test")
    client.delete(redis_names.KILLSWITCH)  # e.g. a Redis without persistence restarted
    restarted = Killswitch(client, mirror_dir=tmp_path, environ={})
    status = restarted.stored()
    assert (status.state, status.reason) == (K.HALT, "incident")
    assert client.hget(redis_names.KILLSWITCH, "state") == b"halt"


def test_flatten_to_halt_is_a_compare_and_set(redis_url: str, tmp_path: Path) -> None:
    ks = Killswitch(redis.Redis.from_url(redis_url), mirror_dir=tmp_path, environ={})
    ks.set(K.FLATTEN)
    assert ks.compare_and_set(K.FLATTEN, K.HALT, reason="flat", source="worker:a")
    ks.set(K.OFF)  # an operator's later change is not undone by a late worker
    assert not ks.compare_and_set(K.FLATTEN, K.HALT, reason="flat", source="worker:b")
    assert ks.stored().state is K.OFF


def test_cli_sets_and_shows_the_killswitch(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yml", {"ks": {"symbols": ["CL"]}})
    runtime = tmp_path / "runtime"
    done = pine("killswitch", "halt", "--reason", "checking fills", "--config", str(config), redis_url=redis_url,
                runtime=runtime)
    assert done.returncode == 0, done.stderr
    assert "off -> halt" in done.stdout
    status = pine("killswitch", "status", "--config", str(config), redis_url=redis_url, runtime=runtime,
                  env={"POLICY_KILLSWITCH": "false"})
    assert status.returncode == 0, status.stderr
    assert "killswitch: halt (nothing is sent" in status.stdout
    assert "checking fills" in status.stdout and "set by cli:" in status.stdout
    assert "killswitch_changed: state=halt previous=off" in status.stdout
    assert "portfolio: 0 of max 10 slot(s) in use" in status.stdout
    assert (runtime / "killswitch.json").exists()
    assert pine("killswitch", "reduce-only", "--config", str(config), redis_url=redis_url,
                runtime=runtime).returncode == 0
    assert redis.Redis.from_url(redis_url).hget(redis_names.KILLSWITCH, "state") == b"reduce_only"
    bad = pine("killswitch", "pause", "--config", str(config), redis_url=redis_url, runtime=runtime)
    assert bad.returncode == 2 and "invalid choice: 'pause'" in bad.stderr
