"""The ML veto in a running worker: real parquet caches, real MLflow sqlite store, real Redis streams.

The market (``tests.ml_support``) is split at a session close: history before it is the worker's
warmup cache (and the training data), the sessions after it are published to Redis. Veto outcomes
are made deterministic by registering the trained model with a threshold no score reaches (veto all)
or every score reaches (take all).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from ml.history import BarHistory
from ml.registry import Registry
from ml.training import TrainResult, train_symbol
from pine import redis_names
from pine.bars import Bar
from pine.config import PineConfig, load_config
from pine.redis_server import connect
from tests.bar_factory import publish
from tests.conftest import REPO
from tests.ml_support import STRATEGY, live_ml_config, ml_market, write_caches, write_ml_config
from tests.worker_support import write_config
from workers.engine import resolve_strategy
from workers.feeds import feed_name
from workers.main import Worker
from workers.trades_db import TradesDB

LIVE_SESSIONS = 16
VETO_ALL = 1.01  # a probability never reaches it
TAKE_ALL = 0.0


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Bar]]:
    """History caches (all timeframes) up to a session close, and the later bars the hub publishes."""
    bars = ml_market(420, beta=3.0)
    closes = sorted({b.end for b in bars if b.timeframe == "daily" and b.symbol == "ES"})
    cut = closes[-LIVE_SESSIONS - 1]
    caches = write_caches(tmp_path_factory.mktemp("ml_worker") / "warmup", [b for b in bars if b.end <= cut])
    # Reference roots are read as daily/hourly feeds only: their minute bars would just be skipped.
    live = [b for b in bars if b.end > cut and (b.timeframe != "1min" or b.symbol in ("CL", "GC"))]
    return caches, live


@pytest.fixture(scope="module")
def trained(market: tuple[Path, list[Bar]], tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    cfg = load_config(write_ml_config(tmp_path_factory.mktemp("cfg") / "config.yml"))
    return train_symbol(cfg, STRATEGY, "CL", BarHistory(market[0]))


def _config(tmp_path: Path, caches: Path, *, shadow: bool = False, daily_bars: int = 40) -> PineConfig:
    """The live ML config (heartbeats every second, limits that never bind) with the history in its runtime dir."""
    return live_ml_config(tmp_path, caches, warmup={"daily_bars": daily_bars, "hourly_days": 5}, ml_shadow=shadow)


def _champion(cfg: PineConfig, trained: TrainResult, threshold: float) -> str:
    """Register ``trained`` with ``threshold`` and make it CL's champion whatever the held-out comparison says."""
    registry = Registry(cfg.runtime_dir)
    reg = registry.register(replace(trained, threshold=threshold))
    assert registry.promote(STRATEGY, "CL", margin=-1e18).promoted
    return str(reg.version)


def _run(cfg: PineConfig, redis_url: str, live: list[Bar]) -> Worker:
    client = connect(redis_url)
    publish(client, live, finish=True)
    worker = Worker(cfg, resolve_strategy(cfg, STRATEGY), client, stop_at_end=True)
    assert worker.run() == 0, worker.statuses
    return worker


def _beat(cfg: PineConfig) -> dict[str, Any]:
    return json.loads((cfg.runtime_dir / "heartbeat" / f"worker_{STRATEGY}.json").read_text())


def _db(cfg: PineConfig) -> TradesDB:
    return TradesDB(cfg.trades_db_path)


def test_vetoed_signals_leave_no_trade_but_an_audit_row(
    tmp_path: Path, redis_url: str, market: tuple[Path, list[Bar]], trained: TrainResult
) -> None:
    cfg = _config(tmp_path, market[0])
    version = _champion(cfg, trained, VETO_ALL)
    _run(cfg, redis_url, market[1])
    ml = _beat(cfg)["ml"]
    assert ml["models"] == {"CL": version, "GC": None}  # GC has no champion: trades without veto
    assert ml["readiness"]["CL"]["ready"] and ml["shadow"] is False and ml["sklearn_mismatch"] == {}
    db = _db(cfg)
    decisions = db.decisions(STRATEGY)
    assert decisions and {d.symbol for d in decisions} == {"CL"}
    assert {(d.outcome, d.take, d.version, d.threshold) for d in decisions} == {("vetoed", False, version, VETO_ALL)}
    assert all(0 <= d.score < 1 and set(json.loads(d.features)) == set(trained.features) for d in decisions)
    trades = db.trades(STRATEGY)
    assert not [t for t in trades if t.symbol == "CL"]
    assert [t for t in trades if t.symbol == "GC"] and all(t.ml_score is None for t in trades)


def test_shadow_mode_takes_the_trade_and_records_the_decision(
    tmp_path: Path, redis_url: str, market: tuple[Path, list[Bar]], trained: TrainResult
) -> None:
    cfg = _config(tmp_path, market[0], shadow=True)
    version = _champion(cfg, trained, VETO_ALL)
    _run(cfg, redis_url, market[1])
    db = _db(cfg)
    decisions = {d.signal_time: d for d in db.decisions(STRATEGY)}
    assert decisions and {(d.outcome, d.take, d.shadow) for d in decisions.values()} == {("taken", False, True)}
    cl = [t for t in db.trades(STRATEGY) if t.symbol == "CL"]
    assert cl and all(t.ml_model_version == version for t in cl)
    # Each trade carries the score of the decision on its signal (the daily bar before its entry fill).
    by_score = {d.score for d in decisions.values()}
    assert all(t.ml_score in by_score for t in cl)
    assert _beat(cfg)["ml"]["shadow"] is True


def test_features_not_ready_skip_the_signal_and_are_audited(
    tmp_path: Path, redis_url: str, market: tuple[Path, list[Bar]], trained: TrainResult
) -> None:
    # Ten daily bars of history: the 20-session features become ready only during the live sessions.
    cfg = _config(tmp_path, market[0], daily_bars=10)
    version = _champion(cfg, trained, TAKE_ALL)
    _run(cfg, redis_url, market[1])
    db = _db(cfg)
    decisions = db.decisions(STRATEGY)
    not_ready = [d for d in decisions if d.outcome == "not_ready"]
    assert not_ready and all(d.score is None and d.take is None and d.version == version for d in not_ready)
    assert any(v is None for d in not_ready for v in json.loads(d.features).values())
    cl = [t for t in db.trades(STRATEGY) if t.symbol == "CL"]
    # No trade entered on a not-ready signal: every CL entry follows its last not-ready signal.
    assert all(t.entry_time > max(d.signal_time for d in not_ready) for t in cl)
    taken = [d for d in decisions if d.outcome == "taken"]
    assert all(d.signal_time > max(n.signal_time for n in not_ready) for d in taken)


def _wait(predicate: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_reload_models_switches_the_running_worker_to_the_new_champion(
    tmp_path: Path, redis_url: str, market: tuple[Path, list[Bar]], trained: TrainResult
) -> None:
    cfg = _config(tmp_path, market[0])
    first = _champion(cfg, trained, VETO_ALL)
    live = market[1]
    middle = sorted({b.end for b in live if b.timeframe == "daily"})[LIVE_SESSIONS // 2]
    client = connect(redis_url)
    publish(client, [b for b in live if b.end <= middle], finish=False)
    worker = Worker(cfg, resolve_strategy(cfg, STRATEGY), client, stop_at_end=True)
    daily = feed_name("CL", "daily")
    seen: list[str] = []
    failures: list[BaseException] = []

    def traded_through_middle() -> bool:
        end = worker.journal.stats.last_bar_end.get(daily)
        return worker.status == "ready" and end is not None and end >= middle

    def operate() -> None:
        """What an operator does while the worker trades: promote, ask for a reload, then the hub goes on."""
        try:
            # The first half is traded (CL's daily bar at ``middle`` decided on) before the new champion exists.
            _wait(traded_through_middle, "the first half to be traded")
            seen.append(_beat(cfg)["ml"]["models"]["CL"])
            seen.append(_champion(cfg, trained, TAKE_ALL))
            client.publish(redis_names.worker_control(STRATEGY), json.dumps({"command": "reload_models"}))
            _wait(lambda: _beat(cfg)["ml"]["models"]["CL"] == seen[1], "the new champion in the heartbeat")
        except BaseException as exc:  # re-raised by the test once the worker has ended
            failures.append(exc)
        finally:
            publish(client, [b for b in live if b.end > middle], finish=True)

    # The worker installs signal handlers, so it runs on the main thread and the operator on another.
    operator = threading.Thread(target=operate)
    operator.start()
    code = worker.run()
    operator.join(timeout=300)
    if failures:
        raise failures[0]
    assert code == 0 and seen[0] == first
    second = seen[1]
    db = _db(cfg)
    decisions = db.decisions(STRATEGY)
    before = [d for d in decisions if d.signal_time <= middle]
    after = [d for d in decisions if d.signal_time > middle]
    assert before and all((d.version, d.outcome) == (first, "vetoed") for d in before)
    assert after and all((d.version, d.outcome) == (second, "taken") for d in after)
    cl = [t for t in db.trades(STRATEGY) if t.symbol == "CL"]
    assert cl and all(t.ml_model_version == second for t in cl)
    assert _beat(cfg)["ml"]["reload_error"] is None


def test_corrupt_champion_refuses_the_start_naming_model_and_version(
    tmp_path: Path, redis_url: str, market: tuple[Path, list[Bar]], trained: TrainResult,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = _config(tmp_path, market[0])
    version = _champion(cfg, trained, TAKE_ALL)
    (model_dir,) = (cfg.runtime_dir / "mlflow" / "artifacts" / "models").glob("*/artifacts")
    (model_dir / "model.skops").write_bytes(b"PK\x03\x04 not a model")
    client = connect(redis_url)
    publish(client, [], finish=True)
    worker = Worker(cfg, resolve_strategy(cfg, STRATEGY), client, stop_at_end=True)
    assert worker.run() == 1 and worker.status == "refused"
    assert f"model {STRATEGY}_CL version {version}: model.skops is not a loadable skops model" in caplog.text
    assert json.loads(redis.Redis.from_url(redis_url).get(f"heartbeat:worker:{STRATEGY}"))["status"] == "refused"


def test_worker_without_ml_never_imports_mlflow(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path / "config.yml")
    code = (
        "import sys\n"
        "from pine.config import load_config\n"
        "from pine.redis_server import connect\n"
        "from tests.bar_factory import publish\n"
        "from workers.engine import resolve_strategy\n"
        "from workers.main import Worker\n"
        f"cfg = load_config({str(config)!r})\n"
        f"client = connect({redis_url!r})\n"
        "publish(client, [], finish=True)\n"
        "code = Worker(cfg, resolve_strategy(cfg, 'ibs_t'), client, stop_at_end=True).run()\n"
        "print(code, 'mlflow' in sys.modules, 'ml.serving' in sys.modules, 'ml.readiness' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={"PINE_RUNTIME_DIR": str(tmp_path / "runtime"), "PYTHONPATH": str(REPO),
                              "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-4:] == ["0", "False", "False", "False"]


def test_decisions_are_keyed_by_signal(tmp_path: Path) -> None:
    from workers.trades_db import DecisionRecord

    db = TradesDB(tmp_path / "trades.db")
    when = datetime.fromisoformat("2024-03-05T23:00:00+00:00")
    record = DecisionRecord(STRATEGY, "CL", when, f"{STRATEGY}_CL", "3", 0.4, 0.5, False, False, "vetoed", "{}")
    db.record_step(STRATEGY, [], [], decisions=[record])
    db.record_step(STRATEGY, [], [], decisions=[replace(record, version="4", score=0.9)])  # a replay
    assert db.decisions(STRATEGY) == [record]


def test_a_failed_reload_keeps_the_loaded_models_and_reports_it(
    tmp_path: Path, market: tuple[Path, list[Bar]], trained: TrainResult
) -> None:
    from workers.engine import ml_veto

    cfg = _config(tmp_path, market[0])
    first = _champion(cfg, trained, VETO_ALL)
    setup = resolve_strategy(cfg, STRATEGY)
    veto = ml_veto(setup, setup.layout(cfg.instruments), cfg.runtime_dir)
    assert veto is not None
    veto.load_models()
    second = _champion(cfg, trained, TAKE_ALL)
    for path in (cfg.runtime_dir / "mlflow" / "artifacts" / "models").glob("*/artifacts/model.skops"):
        path.write_bytes(b"garbage")
    assert not veto.reload()
    status = veto.status()
    assert status["models"] == {"CL": first, "GC": None}
    assert f"model {STRATEGY}_CL version {second}: model.skops is not a loadable skops model" in status["reload_error"]


def _tamper_sklearn_version(cfg: PineConfig, version: str) -> None:
    """Rewrite the scikit-learn version recorded in the champion's MLmodel, as if trained elsewhere."""
    (mlmodel,) = (cfg.runtime_dir / "mlflow" / "artifacts" / "models").glob("*/artifacts/MLmodel")
    doc = yaml.safe_load(mlmodel.read_text())
    doc["flavors"]["sklearn"]["sklearn_version"] = version
    mlmodel.write_text(yaml.safe_dump(doc))


def test_a_replayed_signal_keeps_the_decision_recorded_on_it(
    tmp_path: Path, market: tuple[Path, list[Bar]], trained: TrainResult
) -> None:
    from ml.history import frame_bars
    from workers.engine import ml_veto

    cfg = _config(tmp_path, market[0])
    first = _champion(cfg, trained, VETO_ALL)
    setup = resolve_strategy(cfg, STRATEGY)
    layout = setup.layout(cfg.instruments)
    db = _db(cfg)
    veto = ml_veto(setup, layout, cfg.runtime_dir, audit=db)
    assert veto is not None
    veto.load_models()
    history = BarHistory(cfg.runtime_path(cfg.warmup.cache_dir))
    bars = [b for r in layout.roots for tf in ("hourly", "daily") for b in frame_bars(history.frame(r, tf))[-300:]]
    for bar in sorted(bars, key=lambda b: (b.end, b.symbol, b.timeframe)):
        veto.tracker.update_bar(bar)
    assert veto.tracker.ready("CL")
    signal = max(b.end for b in bars if b.symbol == "CL" and b.timeframe == "daily")

    decided = veto.decide("CL", signal)
    assert not decided.take and decided.record is not None and decided.record.outcome == "vetoed"
    db.record_step(STRATEGY, [], [], decisions=[decided.record])
    # A new champion that takes everything, then the worker restarts and replays the same signal.
    second = _champion(cfg, trained, TAKE_ALL)
    restarted = ml_veto(setup, layout, cfg.runtime_dir, audit=_db(cfg))
    assert restarted is not None
    restarted.load_models()
    for bar in sorted(bars, key=lambda b: (b.end, b.symbol, b.timeframe)):
        restarted.tracker.update_bar(bar)
    assert restarted.status()["models"]["CL"] == second
    replayed = restarted.decide("CL", signal)
    assert (replayed.take, replayed.record, replayed.score, replayed.version) == (False, None, decided.score, first)
    # A signal nobody decided on yet gets the new champion's decision.
    later = restarted.decide("CL", signal + timedelta(days=1))
    assert later.take and later.record is not None and (later.record.version, later.record.outcome) == (second, "taken")
    assert db.decisions(STRATEGY) == [decided.record]


def test_preflight_checks_each_symbols_champion(
    tmp_path: Path, redis_url: str, market: tuple[Path, list[Bar]], trained: TrainResult
) -> None:
    import sklearn

    from workers.preflight import run_preflight

    cfg = _config(tmp_path, market[0])
    setup = resolve_strategy(cfg, STRATEGY)
    client = connect(redis_url)

    def ml_lines() -> list[str]:
        report = run_preflight(cfg, setup, client)
        lines = report.render().splitlines()
        return [line.strip() for line in lines if line.strip().split()[1:2] == ["ml"] or "=>" in line]

    lines = ml_lines()
    assert lines[0].startswith("warn  ml") and "CL GC trade without veto (`pine ml train`" in lines[0], lines
    assert not (cfg.runtime_dir / "mlflow" / "mlflow.db").exists()  # the check never creates the store

    version = _champion(cfg, trained, TAKE_ALL)
    lines = ml_lines()
    assert f"ok    ml           CL: {STRATEGY}_CL version {version} loads, its {len(trained.features)} features are " \
           "the worker's" in lines[0], lines
    assert lines[1] == f"warn  ml           GC: no {STRATEGY}_GC@champion: trades without veto", lines
    assert lines[-1] == "=> ready"

    _tamper_sklearn_version(cfg, "1.0.2")
    lines = ml_lines()
    assert lines[0] == (f"warn  ml           CL: model {STRATEGY}_CL version {version} was trained with scikit-learn "
                        f"1.0.2, this process runs scikit-learn {sklearn.__version__}; retrain it to remove the risk")

    (model_dir,) = (cfg.runtime_dir / "mlflow" / "artifacts" / "models").glob("*/artifacts")
    (model_dir / "model.skops").write_bytes(b"PK\x03\x04 not a model")
    lines = ml_lines()
    assert lines[0].startswith(f"fail  ml           CL: model {STRATEGY}_CL version {version}: model.skops is not a "
                               "loadable skops model"), lines
    assert lines[-1] == "=> FAILED"


def test_sklearn_mismatch_of_the_champion_is_in_the_heartbeat(
    tmp_path: Path, redis_url: str, market: tuple[Path, list[Bar]], trained: TrainResult
) -> None:
    import sklearn

    cfg = _config(tmp_path, market[0])
    version = _champion(cfg, trained, TAKE_ALL)
    _tamper_sklearn_version(cfg, "1.0.2")
    _run(cfg, redis_url, [])
    ml = _beat(cfg)["ml"]
    assert ml["models"] == {"CL": version, "GC": None}
    assert ml["sklearn_mismatch"] == {
        "CL": f"model {STRATEGY}_CL version {version} was trained with scikit-learn 1.0.2, this process runs "
              f"scikit-learn {sklearn.__version__}; retrain it to remove the risk"
    }
