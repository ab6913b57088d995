"""Reference data: the contract map (root → Databento parent symbol and CME contract specification)."""

from __future__ import annotations

import dagster as dg

from orchestration.resources import PineConfigResource
from pine.config.loader import contract_map_mismatches, format_number
from pine.contracts import ContractMap, ContractMapError, load_contract_map


@dg.asset(group_name="reference", kinds={"yaml"})
def contract_map(pine_config: PineConfigResource) -> dg.Output[ContractMap]:
    """The validated contract map named by the Pine config (``contract_map_path``).

    Every root's parent symbol, exchange, multiplier, tick size and contract months; the hub
    maps raw symbols to roots with it and workers size P&L and slippage with it.
    """
    # The config's own instruments are compared by the asset check, so that a disagreement
    # shows up as a failed check on a materialised map rather than a missing map.
    cfg = pine_config.load(verify_contract_map=False)
    try:
        cmap = load_contract_map(cfg.contract_map_path)
    except ContractMapError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    return dg.Output(
        cmap,
        metadata={
            "roots": dg.MetadataValue.int(len(cmap.contracts)),
            "preview": dg.MetadataValue.md(_preview(cmap)),
            "source": dg.MetadataValue.path(str(cfg.contract_map_path)),
        },
    )


@dg.asset_check(asset=contract_map, blocking=True)
def instruments_match_contract_map(contract_map: ContractMap, pine_config: PineConfigResource) -> dg.AssetCheckResult:
    """Every instrument of the Pine config is in the map with the same multiplier, tick size, parent and exchange."""
    cfg = pine_config.load(verify_contract_map=False)
    mismatches = contract_map_mismatches(cfg, contract_map)
    return dg.AssetCheckResult(
        passed=not mismatches,
        description=f"{len(mismatches)} disagreement(s) with the contract map" if mismatches else None,
        metadata={
            "instruments checked": len(cfg.instruments),
            "mismatches": dg.MetadataValue.md("\n".join(f"- `{m}`" for m in mismatches) or "none"),
        },
    )


def _preview(cmap: ContractMap) -> str:
    rows = ["| root | parent | exchange | multiplier | tick size | months |", "|---|---|---|---:|---:|---|"]
    rows += [
        f"| {root} | {s.parent} | {s.exchange} | {format_number(s.multiplier)} | {format_number(s.tick_size)} "
        f"| {s.months} |"
        for root, s in sorted(cmap.contracts.items())
    ]
    return "\n".join(rows)
