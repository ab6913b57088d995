"""The Dagster code location of Pine (``workspace.yaml`` loads ``orchestration.definitions:defs``).

Importing this module has no side effects: the config is read when an asset runs.
"""

from __future__ import annotations

import dagster as dg

from assets.contract_map import contract_map, instruments_match_contract_map
from orchestration.resources import PineConfigResource

defs = dg.Definitions(
    assets=[contract_map],
    asset_checks=[instruments_match_contract_map],
    resources={"pine_config": PineConfigResource()},
)
