"""Dagster resources: Pine's external systems, configured once in the Definitions."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import redis

from pine.config import ConfigError, PineConfig, load_config
from pine.redis_server import RedisUnavailableError, redact_url


class PineConfigResource(dg.ConfigurableResource):
    """The Pine configuration file, read on each use so that an edited file counts on the next run.

    ``config_path`` unset means Pine's default: ``$PINE_CONFIG``, else ``./config.multi_alpha.yml``,
    else the shipped example.
    """

    config_path: str | None = None

    def load(self, *, verify_contract_map: bool = True) -> PineConfig:
        """``load_config(config_path)``; a broken config fails the step listing every error (never a secret)."""
        try:
            return load_config(self.config_path, verify_contract_map=verify_contract_map)
        except ConfigError as exc:
            raise dg.Failure(
                description=str(exc),
                metadata={"config": str(exc.source), "errors": dg.MetadataValue.md(_bullets(exc.errors))},
                allow_retries=False,
            ) from None


class RedisResource(dg.ConfigurableResource):
    """The Redis server the hub and the workers share.

    ``url`` unset means the same server as the Pine processes: the config's ``redis`` section
    (``REDIS_URL`` wins), else the runtime dir's private server if one is running. Dagster never
    starts a Redis server itself: that is the processes' job.
    """

    url: str | None = None

    def resolved_url(self, cfg: PineConfig) -> str | None:
        """The URL to connect to, or None when no Redis is configured and no private server was started."""
        if self.url:
            return self.url
        configured = cfg.redis.resolved_url()
        if configured:
            return configured
        # Written by pine.redis_server.ensure_runtime_redis when a process started the private server.
        record = Path(cfg.runtime_dir) / "redis" / "url"
        return record.read_text().strip() if record.is_file() else None

    def client(self, cfg: PineConfig, *, timeout: float = 2.0) -> redis.Redis:
        """A connected client (``decode_responses``); RedisUnavailableError when nobody answers."""
        url = self.resolved_url(cfg)
        if url is None:
            raise RedisUnavailableError("no Redis configured (REDIS_URL / redis.url) and no private server running")
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        try:
            client.ping()
        except redis.RedisError as exc:
            client.close()
            raise RedisUnavailableError(f"cannot reach Redis at {redact_url(url)}: {exc}") from exc
        return client


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"- `{line}`" for line in lines)
