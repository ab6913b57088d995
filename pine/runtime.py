"""Runtime directory layout (``PINE_RUNTIME_DIR``, default ``./runtime``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RuntimePaths:
    """Every file Pine writes at run time lives under one root."""

    root: Path

    @classmethod
    def from_env(cls, default: Path | str = "runtime") -> RuntimePaths:
        return cls(Path(os.environ.get("PINE_RUNTIME_DIR") or default).resolve())

    def ensure(self) -> RuntimePaths:
        for d in (self.root, self.heartbeat_dir, self.logs_dir, self.market_dir, self.warmup_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def trades_db(self) -> Path:
        return self.root / "trades.db"

    @property
    def heartbeat_dir(self) -> Path:
        return self.root / "heartbeat"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def market_dir(self) -> Path:
        """DBN archive: what ``pine synth`` and ``pine hub --record`` write."""
        return self.root / "market"

    @property
    def warmup_dir(self) -> Path:
        return self.root / "warmup"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"
