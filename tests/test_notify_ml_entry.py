"""The ML score in the entry notification, end to end: a worker with a champion model for CL and none for GC
trades the live sessions, and the Discord stand-in receives every entry with the score of the veto decision on
its signal (CL) or the words "no model: no veto" (GC), through the real outbox and sender.

Market, caches and model as in ``tests.test_worker_ml`` (real parquet caches, real MLflow sqlite store).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ml.history import BarHistory
from ml.registry import Registry
from ml.training import TrainResult, train_symbol
from pine.bars import Bar
from pine.config import PineConfig, load_config
from pine.notify.notifier import Notifier
from pine.redis_server import connect
from tests.bar_factory import publish
from tests.discord_support import FAST_RETRY, discord_server, wait_until
from tests.ml_support import STRATEGY, live_ml_config, ml_market, write_caches, write_ml_config
from workers.engine import resolve_strategy
from workers.main import Worker
from workers.order_journal import client_order_id
from workers.trades_db import TradesDB

LIVE_SESSIONS = 16
TAKE_ALL = 0.0  # every probability reaches it


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Bar], TrainResult]:
    """Warmup caches up to a session close, the later bars the hub publishes, and CL's model trained on the caches."""
    bars = ml_market(420, beta=3.0)
    cut = sorted({b.end for b in bars if b.timeframe == "daily" and b.symbol == "ES"})[-LIVE_SESSIONS - 1]
    caches = write_caches(tmp_path_factory.mktemp("ml_entry") / "warmup", [b for b in bars if b.end <= cut])
    live = [b for b in bars if b.end > cut and (b.timeframe != "1min" or b.symbol in ("CL", "GC"))]
    cfg = load_config(write_ml_config(tmp_path_factory.mktemp("cfg") / "config.yml"))
    return caches, live, train_symbol(cfg, STRATEGY, "CL", BarHistory(caches))


def _config(tmp_path: Path, caches: Path, url: str) -> PineConfig:
    """``tests.ml_support``'s ML strategy (CL and GC ML-enabled), its history and ``url`` as its Discord channel."""
    return live_ml_config(tmp_path, caches, notifications={**FAST_RETRY, "discord_webhook_url": url},
                          warmup={"daily_bars": 40, "hourly_days": 5})


def _fields(embed: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


def test_entries_carry_the_veto_score_or_say_there_is_no_model(
    tmp_path: Path, redis_url: str, history: tuple[Path, list[Bar], TrainResult]
) -> None:
    caches, live, trained = history
    with discord_server() as server:
        cfg = _config(tmp_path, caches, server.url)
        registry = Registry(cfg.runtime_dir)  # CL's champion takes every signal; GC has none
        version = str(registry.register(replace(trained, threshold=TAKE_ALL)).version)
        assert registry.promote(STRATEGY, "CL", margin=-1e18).promoted
        client = connect(redis_url)
        publish(client, live, finish=True)
        worker = Worker(cfg, resolve_strategy(cfg, STRATEGY), client, stop_at_end=True)
        assert worker.run() == 0, worker.statuses
        rest = Notifier(cfg, "test", client=None).start()  # what the worker did not deliver while it drained
        wait_until(lambda: rest.outbox is not None and rest.outbox.open_count() == 0, "the outbox to drain")
        rest.close()
    embeds = {r.body["embeds"][0]["footer"]["text"]: r.body["embeds"][0] for r in server.requests}
    entries = {k.removeprefix("entry:"): _fields(e) for k, e in embeds.items() if k.startswith("entry:")}
    db = TradesDB(cfg.trades_db_path)
    decisions = db.decisions(STRATEGY)
    fills = [f for f in db.fills(STRATEGY) if f.role == "entry"]
    db.close()

    # Every entry that filled was notified, once.
    assert sorted(entries) == sorted(f.client_order_id for f in fills)
    cl = {cid: f for cid, f in entries.items() if f["Symbol"] == "CL"}
    gc = {cid: f for cid, f in entries.items() if f["Symbol"] == "GC"}
    assert cl and gc
    # CL: the score of the model's decision on the entry's signal bar (the order id names the bar).
    by_order = {client_order_id(STRATEGY, d.symbol, d.signal_time, "buy"): d for d in decisions}
    for cid, fields in cl.items():
        decision = by_order[cid]
        assert (decision.outcome, decision.version, decision.score is not None) == ("taken", version, True)
        assert fields["ML score"] == f"{decision.score:.3f}"
    # GC is ML-enabled without a champion: it trades without veto, and the message says so.
    assert {f["ML score"] for f in gc.values()} == {"no model: no veto"}
    assert not [d for d in decisions if d.symbol == "GC"]
    # The worker's own started/stopped messages came through the same channel.
    titles = {e["title"] for e in embeds.values()}
    assert {f"🟢 worker:{STRATEGY} started", f"⚪ worker:{STRATEGY} stopped"} <= titles
