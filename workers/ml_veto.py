"""The ML veto of a strategy worker: feature readiness, the champion models and their decisions.

A strategy with ML-enabled instruments keeps one :class:`MlVeto`. Its ``FeatureTracker`` takes
every ended daily and hourly bar of the strategy's feeds (warmup included); at an entry signal of
an ML-enabled symbol, :meth:`MlVeto.decide` asks the symbol's champion model. No decision is taken
while a feature is not ready (the signal is skipped); ``shadow`` takes every signal and only
records what the model would have done. A symbol without a champion trades without veto.

A signal that already has a row in ``ml_decisions`` (its bar replayed after a restart, up to the
ledger cursor) gets the recorded verdict back, not a new decision: the champion may have changed
since, and re-deciding could turn a veto into a second entry or drop a trade that was taken. The
daily reconciliation's backtest (no models) replays a live run's decisions the same way
(:class:`RecordedDecisions`).

``ml`` is imported only here and only for strategies with ML-enabled instruments: a worker
without ML never imports the feature library (pandas) or the model registry (mlflow).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from workers.trades_db import DecisionRecord

if TYPE_CHECKING:
    from ml.readiness import FeatureTracker
    from ml.serving import Decision, VetoModel

log = logging.getLogger(__name__)

TAKEN = "taken"
VETOED = "vetoed"
NOT_READY = "not_ready"


class DecisionAudit(Protocol):
    """Where recorded decisions are looked up (``workers.trades_db.TradesDB``)."""

    def decision(self, strategy: str, symbol: str, signal_time: datetime) -> DecisionRecord | None: ...


class RecordedDecisions:
    """Decisions a live run recorded (``TradesDB.decisions``), held in memory: the audit of a backtest that
    replays them (the daily reconciliation), as a restarted worker replays its own."""

    def __init__(self, records: Iterable[DecisionRecord]) -> None:
        self._by_signal = {(r.strategy, r.symbol, r.signal_time): r for r in records}

    def decision(self, strategy: str, symbol: str, signal_time: datetime) -> DecisionRecord | None:
        """The decision recorded on ``symbol``'s signal at ``signal_time``, if any."""
        return self._by_signal.get((strategy, symbol, signal_time))


class MlSetupError(RuntimeError):
    """The ML veto cannot start (a feed the features need, a model that does not load); the message says which."""


@dataclass(frozen=True)
class Verdict:
    """What the veto says about one entry signal: ``take`` it or not, and the audit row."""

    take: bool
    record: DecisionRecord | None
    score: float | None = None
    version: str | None = None


class MlVeto:
    """Feature tracker, champion models and shadow mode of one strategy's ML-enabled symbols."""

    def __init__(self, strategy: str, symbols: Sequence[str], roots: Collection[str], *, shadow: bool = False,
                 runtime_dir: Path | None = None, audit: DecisionAudit | None = None) -> None:
        """``roots``: roots with feeds in this worker; ``audit``: the decisions recorded so far (None: every
        signal is decided afresh, as in a backtest). Raises MlSetupError naming a feed the features need."""
        from ml.features import MissingFeedError
        from ml.readiness import FeatureTracker

        self.strategy = strategy
        self.symbols = list(symbols)
        self.shadow = shadow
        self.runtime_dir = runtime_dir
        self.audit = audit
        try:
            self.tracker: FeatureTracker = FeatureTracker(self.symbols, roots)
        except MissingFeedError as exc:
            raise MlSetupError(f"strategy {strategy}: the ML features need a feed this worker does not have: "
                               f"{exc}") from None
        self.models: dict[str, VetoModel | None] = dict.fromkeys(self.symbols)
        self.reload_error: str | None = None

    def load_models(self) -> None:
        """Load every symbol's champion (start-up); MlSetupError with the loader's message (model and version)."""
        from ml.serving import ModelLoadError, load_champions

        assert self.runtime_dir is not None
        computed = {s: [f.name for f in self.tracker.features[s].feature_set.features] for s in self.symbols}
        try:
            self.models = load_champions(self.strategy, computed, self.runtime_dir)
        except ModelLoadError as exc:
            raise MlSetupError(str(exc)) from None
        for symbol, model in self.models.items():
            if model is None:
                log.warning("%s: no champion model for %s: trading without ML veto", symbol, self.strategy,
                            extra={"symbol": symbol})
            else:
                log.info("%s: ML veto by %s version %s (threshold %.4f)%s", symbol, model.name, model.version,
                         model.threshold, " in shadow mode" if self.shadow else "", extra={"symbol": symbol})

    def reload(self) -> bool:
        """Reload the champions (``reload_models``); on failure keep the loaded ones and keep the error."""
        old = self.models
        try:
            self.load_models()
        except MlSetupError as exc:
            self.models = old
            self.reload_error = str(exc)
            log.error("reload_models failed, keeping the loaded models: %s", exc)
            return False
        self.reload_error = None
        return True

    def decide(self, symbol: str, signal_time: datetime) -> Verdict:
        """The veto's verdict on an entry signal of ``symbol`` decided on the bar ending at ``signal_time``."""
        from ml.registry import model_name

        if self.audit is not None and (recorded := self.audit.decision(self.strategy, symbol, signal_time)):
            return self._recorded(recorded)
        model = self.models.get(symbol)
        if model is None:
            return Verdict(True, None)
        values = self.tracker.values(symbol)
        if not self.tracker.ready(symbol):
            log.info("%s: ML features not ready, entry signal skipped", symbol, extra={"symbol": symbol})
            return Verdict(False, self._record(symbol, signal_time, model_name(self.strategy, symbol), model.version,
                                               None, NOT_READY, values))
        decision = model.decide(values)
        take = decision.take or self.shadow
        outcome = TAKEN if take else VETOED
        log.info("%s: ML %s v%s score %.4f vs threshold %.4f: %s%s", symbol, decision.model, decision.version,
                 decision.score, decision.threshold, "take" if decision.take else "veto",
                 " (shadow: taken)" if self.shadow and not decision.take else "", extra={"symbol": symbol})
        record = self._record(symbol, signal_time, decision.model, decision.version, decision, outcome,
                              decision.features)
        return Verdict(take, record, decision.score, decision.version)

    def _recorded(self, record: DecisionRecord) -> Verdict:
        """The verdict an earlier run recorded on this signal; no new audit row."""
        take = record.outcome == TAKEN
        log.info("%s: ML decision on the signal of %s already recorded (%s v%s, %s): replayed as %s",
                 record.symbol, record.signal_time.isoformat(), record.model, record.version, record.outcome,
                 "take" if take else "skip", extra={"symbol": record.symbol})
        return Verdict(take, None, record.score, record.version)

    def _record(self, symbol: str, signal_time: datetime, model: str, version: str | None,
                decision: Decision | None, outcome: str, features: dict[str, float | None]) -> DecisionRecord:
        return DecisionRecord(
            strategy=self.strategy, symbol=symbol, signal_time=signal_time, model=model, version=version,
            score=None if decision is None else decision.score,
            threshold=None if decision is None else decision.threshold,
            take=None if decision is None else decision.take, shadow=self.shadow, outcome=outcome,
            features=json.dumps(features, sort_keys=True),
        )

    def status(self) -> dict[str, Any]:
        """Heartbeat content: readiness per symbol, model version (None: no champion), sklearn mismatches,
        shadow mode and the last failed reload."""
        return {
            "shadow": self.shadow,
            "readiness": self.tracker.snapshot(),
            "models": {s: None if m is None else m.version for s, m in self.models.items()},
            "sklearn_mismatch": {s: m.sklearn_mismatch for s, m in self.models.items()
                                 if m is not None and m.sklearn_mismatch},
            "reload_error": self.reload_error,
        }
