"""The hub's control channel ``datahub:control``: JSON commands in, JSON replies out.

A command is a JSON object published on ``datahub:control``::

    {"command": "status", "reply_to": "datahub:control:reply:ops-1", "id": 7, "token": "..."}

``command`` is one of the handlers the hub registers:

* ``status`` — the heartbeat document, fresh;
* ``flush`` — publish what is due now: buffered boundaries (without waiting for the Redis
  retry delay), minutes the wall clock has closed, the recording file. Open bars are not
  published: a bar published before its end would take its stream id from the complete bar;
  they are flushed, marked partial, on ``shutdown`` only;
* ``resubscribe`` — end the feed session and reconnect at once, replaying from the last trade;
* ``shutdown`` — stop gracefully, as on SIGTERM.

``reply_to`` is optional and must be ``datahub:control:reply`` or start with
``datahub:control:reply:`` — replies never land on market channels; ``id`` is echoed back. When
``hub.control_token`` is set, a command without that exact ``token`` is refused. Every command
gets one reply on its reply channel: ``{"ok": true, "command", "id", "result"}`` or
``{"ok": false, "command", "id", "error"}``; a command that is not valid JSON (and so names no
reply channel) is answered on ``datahub:control:reply``. Every command is logged; tokens never are.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import redis

from pine.redis_names import CONTROL_CHANNEL, CONTROL_REPLY_CHANNEL

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_COMMANDS_PER_POLL: Final = 100
LOG_EVERY_S: Final = 10.0


class CommandError(ValueError):
    """A command the hub refuses; the message is the reply's ``error``."""


class ControlChannel:
    """Subscribes to ``datahub:control`` and answers commands with ``handlers`` (polled, never blocking)."""

    def __init__(self, client: redis.Redis, handlers: Mapping[str, Handler], token: str | None = None) -> None:
        self.client = client
        self.handlers = dict(handlers)
        self._token = token
        self._pubsub: Any = None
        self._last_error_log = -LOG_EVERY_S
        self.commands = 0
        self.refused = 0

    def poll(self) -> int:
        """Answer the commands waiting; returns how many were handled. Redis errors are logged, not raised."""
        handled = 0
        try:
            if self._pubsub is None:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CONTROL_CHANNEL)
                self._pubsub = pubsub
            while handled < MAX_COMMANDS_PER_POLL:
                message = self._pubsub.get_message(timeout=0)
                if message is None:
                    break
                if message.get("type") == "message":
                    self.handle(message["data"])
                    handled += 1
        except redis.RedisError as exc:
            self._lost(exc)
        return handled

    def handle(self, raw: bytes | str) -> dict[str, Any]:
        """Run one raw command and publish its reply; returns the reply."""
        reply_to = CONTROL_REPLY_CHANNEL
        name: Any = None
        request_id: Any = None
        try:
            command = _decode(raw)
            name, request_id = command.get("command"), command.get("id")
            reply_to = _reply_channel(command.get("reply_to"))
            self._authorize(command, name)
            handler = self.handlers.get(name) if isinstance(name, str) else None
            if handler is None:
                raise CommandError(f"unknown command {name!r}; known: {', '.join(sorted(self.handlers))}")
            log.info("control command %r (id %r)", name, request_id)
            reply = {"ok": True, "command": name, "id": request_id, "result": handler(command)}
            self.commands += 1
        except CommandError as exc:
            log.warning("control command refused: %s", exc)
            reply = {"ok": False, "command": name, "id": request_id, "error": str(exc)}
            self.refused += 1
        except Exception as exc:  # a failing handler must not take the hub down
            log.exception("control command %r failed", name)
            reply = {"ok": False, "command": name, "id": request_id, "error": f"internal error: {exc}"}
        self.client.publish(reply_to, json.dumps(reply, default=str))
        return reply

    def close(self) -> None:
        """Unsubscribe and release the connection."""
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self._pubsub.close()
            self._pubsub = None

    def _authorize(self, command: dict[str, Any], name: Any) -> None:
        if self._token is None:
            return
        given = command.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self._token.encode()):
            raise CommandError(f"command {name!r} refused: {'wrong' if given is not None else 'missing'} token")

    def _lost(self, exc: redis.RedisError) -> None:
        # A fresh subscription is made on the next poll, once Redis answers again.
        self.close()
        now = time.monotonic()
        if now - self._last_error_log >= LOG_EVERY_S:
            self._last_error_log = now
            log.warning("control channel: Redis unavailable (%s); will resubscribe", exc)


def _decode(raw: bytes | str) -> dict[str, Any]:
    try:
        command = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"malformed command, not JSON: {exc}") from None
    if not isinstance(command, dict):
        raise CommandError(f"malformed command: expected a JSON object, got {type(command).__name__}")
    return command


def _reply_channel(value: Any) -> str:
    if value is None:
        return CONTROL_REPLY_CHANNEL
    if isinstance(value, str) and (value == CONTROL_REPLY_CHANNEL or value.startswith(CONTROL_REPLY_CHANNEL + ":")):
        return value
    raise CommandError(f"reply_to must be {CONTROL_REPLY_CHANNEL!r} or start with '{CONTROL_REPLY_CHANNEL}:', "
                       f"got {value!r}")
