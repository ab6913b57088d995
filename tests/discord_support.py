"""A local HTTP server standing in for Discord's webhooks (``tests.webhook_server`` with Discord's replies)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pine.config import PineConfig, load_config
from tests.scenario import write_config
from tests.webhook_server import Received, Reply, WebhookServer

DISCORD_PATH = "/api/webhooks/1234567890/CANARY-discord-webhook-token-5f1e"
MESSAGE = '{"id": "1", "type": 0, "channel_id": "42", "content": ""}'


def delivered(n: int, body: dict[str, Any]) -> Reply:
    """Discord's answer to ``?wait=true``: 200 with the message."""
    return Reply(200, MESSAGE)


def rate_limited(retry_after: float, *, in_body: bool = True) -> Reply:
    """429 as Discord sends it: ``retry_after`` (seconds) in the JSON body, or only the ``Retry-After`` header."""
    body = {"message": "You are being rate limited.", "global": False}
    if in_body:
        body["retry_after"] = retry_after
    return Reply(429, json.dumps(body), headers={} if in_body else {"Retry-After": str(int(retry_after))})


def discord_server(script: Any = delivered) -> WebhookServer:
    """A server on 127.0.0.1 answering at :data:`DISCORD_PATH`."""
    return WebhookServer(script, path=DISCORD_PATH)


def event_ids(requests: list[Received]) -> list[str]:
    """The event id (embed footer) of each request, in arrival order."""
    return [r.body["embeds"][0]["footer"]["text"] for r in requests]


def delivered_ids(server: WebhookServer, accepted: set[int]) -> list[str]:
    """Event ids of the requests numbered (1-based) in ``accepted``: the ones the script answered 2xx."""
    return [e for n, e in enumerate(event_ids(server.requests), 1) if n in accepted]


FAST_RETRY = {"backoff_s": 0.05, "backoff_max_s": 0.2, "connect_timeout_s": 1, "read_timeout_s": 10}


def notify_config(tmp_path: Path, url: str | None, *, strategies: dict[str, dict[str, Any]] | None = None,
                  **notifications: Any) -> PineConfig:
    """A scenario config (``tests.scenario``) with ``url`` as the global Discord channel, runtime in tmp_path."""
    settings = {**FAST_RETRY, **notifications}
    if url is not None:
        settings["discord_webhook_url"] = url
    path = write_config(tmp_path / "notify.yml", strategies or {"s1": {"symbols": ["CL"]}},
                        notifications=settings, runtime_dir=str(tmp_path / "runtime"))
    os.environ.pop("PINE_RUNTIME_DIR", None)  # the file's runtime_dir, not the test sandbox's
    return load_config(path)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll until ``condition`` holds (a guard against hanging, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)
