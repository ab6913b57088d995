"""One racer of the coordinator race test: ``python -m tests.coordinator_race URL OWNER ROUNDS LEDGER GO MODE``.

Each round tries to reserve a slot; while it holds one it records itself in an independent
ledger (a file updated under ``flock``, nothing to do with Redis) and notes how many holders
the ledger shows, then releases. ``MODE`` ``atomic`` uses the coordinator; ``naive`` a
read-then-write reservation (the race the coordinator exists to prevent), so that the test
can show its ledger catches over-allocation.
"""

from __future__ import annotations

import fcntl
import json
import random
import sys
import time
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import redis

from pine import redis_names
from workers.coordinator import PortfolioCoordinator

MAX_POSITIONS = 2
DAY = date(2024, 3, 5)


def ledger_update(path: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply ``change`` to the ledger under an exclusive lock; returns the new ledger."""
    with path.open("r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            doc = json.loads(f.read() or "{}")
            change(doc)
            f.seek(0)
            f.truncate()
            f.write(json.dumps(doc))
            f.flush()
            return doc
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def enter(key: str, doc: dict[str, Any]) -> None:
    """Ledger: ``key`` holds a slot; remember the most holders ever seen at once."""
    doc["holders"] = [*doc.get("holders", []), key]
    doc["max"] = max(int(doc.get("max", 0)), len(doc["holders"]))
    doc["acquired"] = int(doc.get("acquired", 0)) + 1


def leave(key: str, doc: dict[str, Any]) -> None:
    """Ledger: ``key`` no longer holds its slot."""
    doc["holders"] = [h for h in doc.get("holders", []) if h != key]


def naive_reserve(client: redis.Redis, key: str) -> bool:
    """Read the count, then write: two racers can both see one free slot."""
    if client.hlen(redis_names.PORTFOLIO_SLOTS) >= MAX_POSITIONS:
        return False
    time.sleep(0.0005)
    client.hset(redis_names.PORTFOLIO_SLOTS, key, json.dumps({"owner": "naive", "cid": key, "state": "reserved"}))
    return True


def main(url: str, owner: str, rounds: int, ledger: Path, go: Path, mode: str) -> int:
    """Race ``rounds`` times; prints ``granted=N`` at the end."""
    client = redis.Redis.from_url(url)
    coordinator = PortfolioCoordinator(client, owner, max_positions=MAX_POSITIONS, daily_stop_loss=1e9,
                                       lease_ttl_s=60)
    rng = random.Random(owner)
    while not go.exists():
        time.sleep(0.001)
    granted = 0
    for i in range(rounds):
        symbol = f"S{i}"
        key = coordinator.slot_key(symbol)
        ok = (coordinator.reserve(symbol, f"{owner}-{i}", DAY).granted if mode == "atomic"
              else naive_reserve(client, key))
        if not ok:
            continue
        granted += 1
        ledger_update(ledger, partial(enter, key))
        time.sleep(rng.random() * 0.002)  # hold the position a little
        ledger_update(ledger, partial(leave, key))
        if mode == "atomic":
            coordinator.release(symbol)
        else:
            client.hdel(redis_names.PORTFOLIO_SLOTS, key)
    print(f"granted={granted}")
    return 0


if __name__ == "__main__":
    url_, owner_, rounds_, ledger_, go_, mode_ = sys.argv[1:7]
    sys.exit(main(url_, owner_, int(rounds_), Path(ledger_), Path(go_), mode_))
