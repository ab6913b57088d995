"""A process killed with undelivered notifications: after a restart every message is delivered once, in order.

The outbox is SQLite in the runtime dir; the killed process is a real one (SIGKILL), and so is the
one that finishes the job. A message whose request was in flight when its sender died cannot be
known delivered (Discord webhooks have no idempotency key): it is sent again, marked as a possible repeat.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from pine.config import PineConfig
from pine.notify.notifier import outbox_path
from pine.notify.outbox import Outbox
from tests.conftest import REPO
from tests.discord_support import MESSAGE, discord_server, event_ids, notify_config, wait_until
from tests.webhook_server import Reply

N = 12


def _proc(cfg: PineConfig, count: int) -> subprocess.Popen[str]:
    assert cfg.source is not None
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PINE_RUNTIME_DIR", None)
    return subprocess.Popen([sys.executable, "-m", "tests.notify_proc", str(cfg.source), str(count)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _statuses(cfg: PineConfig) -> dict[str, int]:
    box = Outbox(outbox_path(cfg))
    try:
        return box.counts()
    finally:
        box.close()


def test_killed_with_a_backlog_then_restarted_delivers_every_message_once_in_order(tmp_path: Path) -> None:
    up = threading.Event()

    def script(k: int, body: dict[str, Any]) -> Reply:
        if not up.is_set():
            return Reply(503, '{"message": "Service Unavailable"}')
        body["_accepted"] = True
        return Reply(200, MESSAGE)

    with discord_server(script) as server:
        cfg = notify_config(tmp_path, server.url)
        first = _proc(cfg, N)
        wait_until(lambda: sum(_statuses(cfg).values()) == N and len(server.requests) >= 2, "the backlog")
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert first.returncode == -9
        failed_attempts = len(server.requests)
        assert set(event_ids(server.requests)) == {"m00"}  # head of line: nothing overtook the first message
        up.set()  # Discord is back
        second = _proc(cfg, 0)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
    delivered = [r for r in server.requests if r.body.get("_accepted")]
    assert event_ids(delivered) == [f"m{i:02d}" for i in range(N)]  # each once, in order
    assert len(server.requests) == failed_attempts + N
    assert _statuses(cfg) == {"delivered": N}


def test_a_message_in_flight_when_the_sender_died_is_resent_marked_as_a_possible_repeat(tmp_path: Path) -> None:
    received = threading.Event()

    def script(k: int, body: dict[str, Any]) -> Reply:
        if k == 1:
            received.set()
            return Reply(200, MESSAGE, delay_s=3.0)  # Discord got it; the answer never reaches the sender
        return Reply(200, MESSAGE)

    with discord_server(script) as server:
        cfg = notify_config(tmp_path, server.url)
        first = _proc(cfg, 3)
        assert received.wait(60)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = _proc(cfg, 0)
        assert second.wait(120) == 0
    assert event_ids(server.requests) == ["m00", "m00", "m01", "m02"]
    resent = server.requests[1].body["embeds"][0]["description"]
    assert resent.startswith("↻ Possibly a repeat: the sender stopped while delivering it")
    assert "Possibly a repeat" not in server.requests[2].body["embeds"][0].get("description", "")
