"""A process with a Notifier, for restart tests: ``python -m tests.notify_proc CONFIG N``.

Enqueues messages ``m00``..``m{N-1}`` (N may be 0), prints ``queued`` and keeps its sender running
until the outbox has nothing open, then exits 0 (or is killed by the test before that).
"""

from __future__ import annotations

import sys
import time

from pine.config import load_config
from pine.logs import setup_logging
from pine.notify.messages import emergency_message
from pine.notify.notifier import Notifier


def main(config: str, count: int) -> int:
    """Enqueue ``count`` messages, deliver until the outbox is empty."""
    setup_logging("notify-proc")
    notifier = Notifier(load_config(config), "notify-proc", client=None).start()
    for i in range(count):
        notifier.publish(emergency_message(f"m{i:02d}", f"message {i}"))
    print("queued", flush=True)
    assert notifier.outbox is not None
    while notifier.outbox.open_count():
        time.sleep(0.05)
    notifier.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
