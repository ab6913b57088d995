"""Dagster resources: Pine's external systems, configured once in the Definitions."""

from __future__ import annotations

import dagster as dg

from pine.config import ConfigError, PineConfig, load_config


class PineConfigResource(dg.ConfigurableResource):
    """The Pine configuration file, read on each use so that an edited file counts on the next run.

    ``config_path`` unset means Pine's default: ``$PINE_CONFIG``, else ``./config.multi_alpha.yml``,
    else the shipped example.
    """

    config_path: str | None = None

    def load(self, *, verify_contract_map: bool = True) -> PineConfig:
        """``load_config(config_path)``; a broken config fails the step listing every error (never a secret)."""
        try:
            return load_config(self.config_path, verify_contract_map=verify_contract_map)
        except ConfigError as exc:
            raise dg.Failure(
                description=str(exc),
                metadata={"config": str(exc.source), "errors": dg.MetadataValue.md(_bullets(exc.errors))},
                allow_retries=False,
            ) from None


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"- `{line}`" for line in lines)
