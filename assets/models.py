"""ML veto models: ``ml_models`` trains and registers one model per ML-enabled (strategy, symbol);
``champion_models`` runs the promotion gate (``ml.promotion_metric`` / ``ml.promotion_margin``).

Both use the MLflow store of the runtime dir (``ml.registry``); the metadata links each model's
MLflow run id and version. Training reads the warmup caches (``warmup_cache``).
"""

# No `from __future__ import annotations`: Dagster reads resource annotations as live types.

import dagster as dg

from ml.history import BarHistory, MissingHistoryError
from ml.registry import Registry
from ml.training import TrainingSkipped, ml_symbols, required_caches, train_symbol
from orchestration.resources import PineConfigResource
from pine.config.schema import PineConfig
from pine.runtime import RuntimePaths

TRAINED = "every_model_trained"
CHAMPIONS = "every_model_has_a_champion"


def ml_targets(cfg: PineConfig) -> list[tuple[str, str]]:
    """(strategy, symbol) of every ML-enabled instrument of the enabled strategies."""
    return [(name, symbol) for name in cfg.enabled_strategies() for symbol in ml_symbols(cfg, name)]


@dg.asset(
    group_name="ml",
    kinds={"mlflow", "sklearn"},
    deps=["warmup_cache"],
    check_specs=[dg.AssetCheckSpec(TRAINED, asset="ml_models", description="no model failed to train")],
)
def ml_models(context: dg.AssetExecutionContext, pine_config: PineConfigResource) -> dg.MaterializeResult:
    """A new registered version of every ML veto model, trained on the warmup caches (skips are listed)."""
    cfg = pine_config.load(verify_contract_map=False)
    targets = ml_targets(cfg)
    history = BarHistory(RuntimePaths(cfg.runtime_dir).warmup_dir)
    try:
        for _, symbol in targets:
            history.require(required_caches(history, symbol))
    except MissingHistoryError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    registry = Registry(cfg.runtime_dir)
    rows = ["| model | version | MLflow run | threshold | held-out P&L kept / all |", "|---|---:|---|---:|---|"]
    registered: dict[str, dict[str, str]] = {}
    skipped: list[str] = []
    failed: list[str] = []
    for strategy, symbol in targets:
        try:
            result = train_symbol(cfg, strategy, symbol, history)
        except TrainingSkipped as exc:
            skipped.append(str(exc))
            continue
        except Exception as exc:  # one symbol's bad data must not stop the others (as in `pine ml train`)
            failed.append(f"{strategy}_{symbol}: {type(exc).__name__}: {exc}")
            continue
        reg = registry.register(result)
        registered[reg.name] = {"version": reg.version, "run_id": reg.run_id}
        held = result.heldout_metrics
        rows.append(f"| {reg.name} | {reg.version} | `{reg.run_id}` | {result.threshold:.4f} "
                    f"| {held.pnl_kept:,.2f} / {held.pnl_all:,.2f} |")
    context.log.info(f"{len(registered)} registered, {len(skipped)} skipped, {len(failed)} failed")
    return dg.MaterializeResult(
        metadata={
            "models": dg.MetadataValue.md("\n".join(rows)),
            "registered": dg.MetadataValue.json(registered),
            "skipped": dg.MetadataValue.md("\n".join(f"- {s}" for s in skipped) or "none"),
            "targets": len(targets),
            "mlflow_uri": registry.uri,
        },
        check_results=[dg.AssetCheckResult(
            check_name=TRAINED, passed=not failed,
            description=f"{len(failed)} model(s) failed to train" if failed else None,
            metadata={"failed": dg.MetadataValue.md("\n".join(f"- `{f}`" for f in failed) or "none")},
        )],
    )


@dg.asset(
    group_name="ml",
    kinds={"mlflow"},
    deps=[ml_models],
    check_specs=[dg.AssetCheckSpec(CHAMPIONS, asset="champion_models",
                                   description="every ML-enabled symbol has a champion serving the veto")],
)
def champion_models(context: dg.AssetExecutionContext, pine_config: PineConfigResource) -> dg.MaterializeResult:
    """The promotion gate: the latest version becomes champion when it beats the champion on its held-out window."""
    cfg = pine_config.load(verify_contract_map=False)
    registry = Registry(cfg.runtime_dir)
    rows = ["| model | promoted | reason | champion | MLflow run |", "|---|---|---|---:|---|"]
    champions: dict[str, dict[str, str]] = {}
    without: list[str] = []
    for strategy, symbol in ml_targets(cfg):
        decision = registry.promote(strategy, symbol, cfg.ml.promotion_metric, cfg.ml.promotion_margin)
        status = registry.status(strategy, symbol)
        if status is None or status.champion is None:
            without.append(decision.name)
            rows.append(f"| {decision.name} | no | {decision.reason} | - | - |")
            continue
        run_id = registry.client.get_model_version(status.name, status.champion).run_id
        champions[status.name] = {"version": status.champion, "run_id": run_id}
        rows.append(f"| {decision.name} | {'yes' if decision.promoted else 'no'} | {decision.reason} "
                    f"| {status.champion} | `{run_id}` |")
    context.log.info(f"{len(champions)} champion(s), {len(without)} model(s) without one")
    return dg.MaterializeResult(
        metadata={
            "decisions": dg.MetadataValue.md("\n".join(rows)),
            "champions": dg.MetadataValue.json(champions),
            "metric": cfg.ml.promotion_metric,
            "margin": cfg.ml.promotion_margin,
            "mlflow_uri": registry.uri,
        },
        check_results=[dg.AssetCheckResult(
            # A warning: a symbol with too few trades to train has no model yet, which is expected at first.
            check_name=CHAMPIONS, passed=not without, severity=dg.AssetCheckSeverity.WARN,
            description=f"no champion: {', '.join(without)}" if without else None,
            metadata={"without_champion": len(without)},
        )],
    )
