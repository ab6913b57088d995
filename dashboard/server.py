"""``pine dashboard``: serve the dashboard with uvicorn on ``dashboard.host``:``dashboard.port``.

``PINE_DASHBOARD_TOKEN`` in the environment overrides ``dashboard.token`` (as ``REDIS_URL`` overrides
``redis.url``), so a config without the ``${PINE_DASHBOARD_TOKEN}`` line can still be given a token.

Redis: ``REDIS_URL`` / ``redis.url`` if set, else the runtime dir's private server if one is
running (``<runtime>/redis/url``); the dashboard never starts a Redis of its own, and without
one it shows what the trades DB holds.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path

import redis
import uvicorn
from pydantic import SecretStr

from dashboard.app import create_app
from pine.config.schema import PineConfig
from pine.redis_server import redact_url

log = logging.getLogger(__name__)

TOKEN_ENV = "PINE_DASHBOARD_TOKEN"


def find_redis_url(cfg: PineConfig) -> str | None:
    """The configured Redis, else the runtime dir's private one if it answers, else None."""
    configured = cfg.redis.resolved_url()
    if configured:
        return configured
    record = Path(cfg.runtime_dir) / "redis" / "url"
    if not record.exists():
        return None
    url = record.read_text().strip()
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        client.ping()
        client.close()
    except redis.RedisError:
        return None
    return url


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port), so the URL can be printed before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def dashboard_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 1 if the address cannot be bound."""
    if os.environ.get(TOKEN_ENV):
        token = SecretStr(os.environ[TOKEN_ENV])
        cfg = cfg.model_copy(update={"dashboard": cfg.dashboard.model_copy(update={"token": token})})
    host = args.host or cfg.dashboard.host
    port = cfg.dashboard.port if args.port is None else args.port
    if not _loopback(host) and cfg.dashboard.token is None:
        log.warning("dashboard bound to %s without dashboard.token: anyone who can reach it sees the trading "
                    "state (the killswitch buttons stay disabled)", host)
    url = find_redis_url(cfg)
    log.info("dashboard: trades DB %s; Redis %s", cfg.trades_db_path, redact_url(url) if url else "none reachable")
    try:
        sock = bind(host, port)
    except OSError as exc:
        print(f"pine dashboard: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    shown = f"[{host}]" if ":" in host else host
    print(f"pine dashboard: http://{shown}:{sock.getsockname()[1]}/ (health: /health)", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, redis_url=url), log_level="warning", access_log=False))
    server.run(sockets=[sock])
    return 0
