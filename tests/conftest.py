"""Shared fixtures: one real redis-server per test session, on a free port (never 6379)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pine.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's keys, Redis, runtime dir or .env; .env loads are undone."""
    saved = dict(os.environ)
    for var in ("REDIS_URL", "DATABENTO_API_KEY", "PINE_CONFIG", "DISCORD_WEBHOOK_URL", "POLICY_KILLSWITCH"):
        monkeypatch.delenv(var, raising=False)
    for var in list(os.environ):
        if var.startswith("TRADERSPOST_"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PINE_RUNTIME_DIR", str(tmp_path / "runtime"))
    # load_config() reads ./.env: run in an empty directory, not the developer's checkout.
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the session's Redis, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url
