"""``pine notify status | outbox``: send the system's status to Discord now; show what waits in the outbox."""

from __future__ import annotations

import argparse
import sys
import time

import redis

from pine.config.schema import PineConfig
from pine.notify.notifier import Notifier, outbox_path
from pine.notify.outbox import Outbox
from pine.notify.status import build_status
from pine.redis_server import RedisUnavailableError, connect, resolve_redis_url

DELIVERY_WAIT_S = 30.0


def notify_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """Entry point of ``pine notify``."""
    if args.notify_command == "outbox":
        return _outbox(cfg)
    return _status(cfg)


def _status(cfg: PineConfig) -> int:
    try:
        client = connect(resolve_redis_url(cfg.redis.resolved_url(), cfg.runtime_dir))
        msg = build_status(cfg, client)
    except (RedisUnavailableError, redis.RedisError) as exc:
        print(f"pine notify: {exc}", file=sys.stderr)
        return 1
    print(msg.description)
    for f in msg.fields:
        print(f"{f.name}: {f.value}")
    notifier = Notifier(cfg, "cli:notify", client=client, watch=False).start()
    if not notifier.enabled:
        print("pine notify: Discord notifications are off (no webhook URL configured); status printed only")
        return 0
    notifier.publish(msg)
    assert notifier.outbox is not None
    deadline = time.monotonic() + DELIVERY_WAIT_S
    while not notifier.outbox.has_delivered(msg.event_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    sent = notifier.outbox.has_delivered(msg.event_id)
    notifier.close(drain_s=0)
    print("sent to Discord" if sent else f"queued in {outbox_path(cfg)}: not delivered within {DELIVERY_WAIT_S:.0f}s "
          "(a running hub or worker delivers it)")
    return 0 if sent else 1


def _outbox(cfg: PineConfig) -> int:
    path = outbox_path(cfg)
    if not path.exists():
        print(f"no outbox at {path} (nothing was ever notified)")
        return 0
    outbox = Outbox(path)
    try:
        counts = outbox.counts()
        print(f"{path}: " + (", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "empty"))
        for row in outbox.open_messages():
            print("  " + "  ".join(str(v) for v in row))
    finally:
        outbox.close()
    return 0
