"""``pine ml train | promote | rollback | status``: the veto models' lifecycle from the command line.

mlflow is imported only once a command needs the registry, and ``train`` checks the bar
caches before that, so a missing cache is reported in a moment.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from pine.config.schema import PineConfig
from pine.runtime import RuntimePaths

if TYPE_CHECKING:
    from ml.metrics import VetoMetrics
    from ml.registry import ModelStatus

# Strategy types whose signals the feature library describes.
ML_STRATEGY_TYPES = ("ibs",)


class _UsageError(ValueError):
    pass


def _targets(cfg: PineConfig, strategy: str | None, symbols: list[str] | None) -> list[tuple[str, list[str]]]:
    """(strategy, symbols) pairs: the named strategy or every enabled ML-capable one; its ML-enabled symbols."""
    if strategy is not None:
        try:
            scfg = cfg.strategy(strategy)
        except KeyError as exc:
            raise _UsageError(str(exc.args[0])) from None
        if scfg.strategy_type not in ML_STRATEGY_TYPES:
            raise _UsageError(f"strategy {strategy} is of type {scfg.strategy_type!r}; ML veto features exist for "
                              f"{', '.join(ML_STRATEGY_TYPES)} only")
        names = [strategy]
    else:
        names = [n for n, s in cfg.enabled_strategies().items() if s.strategy_type in ML_STRATEGY_TYPES]
    out = []
    for name in names:
        instruments = cfg.strategy(name).instruments
        if symbols:
            chosen = [s for s in symbols if s in instruments]
        else:
            chosen = [s for s, inst in instruments.items() if inst.ml_enabled]
        if chosen:
            out.append((name, chosen))
    unmatched = sorted(set(symbols or ()) - {s for _, chosen in out for s in chosen})
    if unmatched:
        raise _UsageError(f"not traded by {strategy or 'any enabled ibs strategy'}: {', '.join(unmatched)}")
    if not out:
        raise _UsageError("nothing to do: no ML-enabled instrument (ml_enabled: true) of an enabled ibs strategy"
                          + (f" among {', '.join(symbols)}" if symbols else ""))
    return out


def _summary(m: VetoMetrics) -> str:
    return (f"kept {m.kept}/{m.trades} trades, P&L {m.pnl_kept:.2f} kept vs {m.pnl_all:.2f} unvetoed, "
            f"precision {m.precision:.2f} vs {m.base_rate:.2f}")


def _train(cfg: PineConfig, args: argparse.Namespace) -> int:
    from ml.history import BarHistory, MissingHistoryError
    from ml.training import TrainingSkipped, required_caches, train_symbol

    targets = _targets(cfg, args.strategy, args.symbols)
    history = BarHistory(RuntimePaths(cfg.runtime_dir).warmup_dir)
    try:
        for _, symbols in targets:
            for symbol in symbols:
                history.require(required_caches(history, symbol))
    except MissingHistoryError as exc:
        print(f"pine ml train: {exc}", file=sys.stderr)
        return 1
    from ml.registry import Registry

    registry = Registry(cfg.runtime_dir)
    failed = 0
    for strategy, symbols in targets:
        for symbol in symbols:
            try:
                result = train_symbol(cfg, strategy, symbol, history)
            except TrainingSkipped as exc:
                print(f"{strategy}_{symbol}: skipped: {exc}")
                continue
            except Exception as exc:  # one symbol's bad data must not stop the others
                failed += 1
                print(f"{strategy}_{symbol}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            reg = registry.register(result)
            print(f"{reg.name}: registered version {reg.version} (threshold {result.threshold:.4f})\n"
                  f"  validation: {_summary(result.validation)}\n"
                  f"  held-out:   {_summary(result.heldout_metrics)}")
    print(f"registry: {registry.uri}")
    return 1 if failed else 0


def _promote(cfg: PineConfig, args: argparse.Namespace) -> int:
    from ml.registry import Registry

    registry = Registry(cfg.runtime_dir)
    for strategy, symbols in _targets(cfg, args.strategy, args.symbols):
        for symbol in symbols:
            p = registry.promote(strategy, symbol, cfg.ml.promotion_metric, cfg.ml.promotion_margin)
            print(f"{p.name}: {'promoted version ' + str(p.candidate) if p.promoted else 'not promoted'}: {p.reason}")
    return 0


def _rollback(cfg: PineConfig, args: argparse.Namespace) -> int:
    from ml.registry import Registry, RegistryError

    _targets(cfg, args.strategy, [args.symbol])
    try:
        p = Registry(cfg.runtime_dir).rollback(args.strategy, args.symbol)
    except RegistryError as exc:
        print(f"pine ml rollback: {exc}", file=sys.stderr)
        return 1
    print(f"{p.name}: {p.reason}")
    return 0


def _status_line(name: str, st: ModelStatus | None) -> str:
    if st is None:
        return f"{name}: no registered model (trades without veto)"
    if st.champion:
        t = st.champion_tags
        champion = (
            f"champion v{st.champion} (threshold {t.get('threshold')}, trained {t.get('train_window')}, "
            f"held-out kept {t.get('heldout_kept')} trades: P&L {t.get('heldout_pnl_kept')} vs "
            f"{t.get('heldout_pnl_all')} unvetoed, sklearn {t.get('sklearn_version')})"
        )
    else:
        champion = "no champion (trades without veto)"
    previous = f", previous v{st.previous}" if st.previous else ""
    return f"{name}: {st.versions} version(s), latest v{st.latest}; {champion}{previous}"


def _status(cfg: PineConfig, args: argparse.Namespace) -> int:
    from ml.registry import Registry, model_name

    registry = Registry(cfg.runtime_dir)
    print(f"registry: {registry.uri}")
    for strategy, symbols in _targets(cfg, args.strategy, args.symbols):
        for symbol in symbols:
            print(_status_line(model_name(strategy, symbol), registry.status(strategy, symbol)))
    return 0


def ml_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """Run ``pine ml <subcommand>``; returns the exit code."""
    # A progress bar per artifact download is noise in a command's output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    handlers = {"train": _train, "promote": _promote, "rollback": _rollback, "status": _status}
    try:
        return handlers[args.ml_command](cfg, args)
    except _UsageError as exc:
        print(f"pine ml {args.ml_command}: {exc}", file=sys.stderr)
        return 2
