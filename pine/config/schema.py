"""Typed configuration: the shape of ``config.multi_alpha.yml`` (seeds' multi-alpha schema).

Models are strict (unknown keys are errors) so that a typo names its key path instead of
being silently ignored.
"""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator

from pine.sessions import SessionCalendar

# Reference data shipped with Pine; a config copied elsewhere still finds it.
SHIPPED_CONTRACT_MAP = Path(__file__).resolve().parents[2] / "data" / "contract_map.yml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _empty_is_none(v: Any) -> Any:
    return None if v in ("", None) else v


# An empty value (``${VAR:-}`` with VAR unset) means "not set".
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_is_none)]
OptionalStr = Annotated[str | None, BeforeValidator(_empty_is_none)]


class DatabentoConfig(_Strict):
    """Market data: a key switches from the synthetic market to Databento Live."""

    api_key: OptionalSecret = None
    dataset: str = "GLBX.MDP3"
    schema_: str = Field(default="trades", alias="schema")


class RedisConfig(_Strict):
    """``url`` wins; empty url and no host means: start a private Redis server."""

    url: OptionalSecret = None
    host: OptionalStr = None
    port: int = Field(default=6379, ge=1, le=65535)
    db: int = Field(default=0, ge=0)

    def resolved_url(self) -> str | None:
        """The Redis URL to connect to, or None when Pine should start its own server."""
        if self.url is not None:
            return self.url.get_secret_value()
        if self.host:
            return f"redis://{self.host}:{self.port}/{self.db}"
        return None


class SessionsConfig(_Strict):
    """When the daily bar closes."""

    close: time = time(17, 0)
    timezone: str = "America/Chicago"
    # Legacy parity only: the fixed 23:00 UTC close is wrong during US daylight time.
    fixed_utc_close_hour: int | None = Field(default=None, ge=0, le=23)

    @field_validator("close", mode="before")
    @classmethod
    def _quoted_time(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted 17:00 as the base-60 number 1020, which pydantic would
        # silently turn into 00:17 UTC.
        if isinstance(v, int) and not isinstance(v, bool):
            raise ValueError('write the time in quotes, e.g. "17:00" (YAML reads unquoted 17:00 as a number)')
        return v

    @field_validator("close")
    @classmethod
    def _on_the_hour(cls, v: time) -> time:
        # Hourly bars are UTC hours; a close inside an hour would make one hourly bar span
        # two sessions (and possibly two contracts).
        if v.minute or v.second or v.microsecond:
            raise ValueError(f"the session close must be on the hour, got {v.isoformat()}")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as America/Chicago)") from None
        return v

    def calendar(self) -> SessionCalendar:
        """The session calendar these settings describe."""
        if self.fixed_utc_close_hour is not None:
            return SessionCalendar.fixed_utc(self.fixed_utc_close_hour)
        return SessionCalendar(close=self.close, timezone=self.timezone)


class HeartbeatConfig(_Strict):
    """Heartbeat files and Redis keys of every Pine process."""

    interval: float = Field(default=30.0, gt=0)
    write_interval: float = Field(default=30.0, gt=0)
    # ``{component}`` becomes ``hub`` or ``worker_{strategy}``; relative paths live in the runtime dir.
    file_path: str = "heartbeat/{component}.json"
    ttl: float = Field(default=90.0, gt=0)


class PortfolioConfig(_Strict):
    """Portfolio-wide risk limits shared by all workers."""

    starting_cash: float = Field(default=250_000, gt=0)
    max_positions: int = Field(default=2, ge=1)
    daily_stop_loss: float = Field(default=2_500, gt=0)


class InstrumentSpec(_Strict):
    """Contract specification of a root symbol (CME); must agree with the contract map."""

    multiplier: float = Field(gt=0)
    tick_size: float = Field(gt=0)
    databento_product_id: str
    exchange: str = "CME"
    margin: float = Field(default=0.0, ge=0)
    commission: float = Field(default=0.0, ge=0)

    @field_validator("databento_product_id")
    @classmethod
    def _parent(cls, v: str) -> str:
        if not v.endswith(".FUT"):
            raise ValueError(f"must be a Databento parent symbol such as 'ES.FUT', got {v!r}")
        return v


class StrategyInstrument(_Strict):
    """Per-strategy trading settings of one instrument."""

    size: int = Field(default=1, ge=1)
    commission: float | None = Field(default=None, ge=0)
    ml_enabled: bool = False
    slippage_ticks: float | None = Field(default=None, ge=0)


class StrategyConfig(_Strict):
    """One strategy worker: its type, broker, alerts, instruments and parameters."""

    enabled: bool = True
    strategy_type: str
    starting_cash: float | None = Field(default=None, gt=0)
    # TradersPost webhook; empty → paper broker.
    broker_account: OptionalSecret = None
    discord_webhook_url: OptionalSecret = None
    slippage_ticks: float = Field(default=1.0, ge=0)
    instruments: dict[str, StrategyInstrument]
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("instruments", mode="before")
    @classmethod
    def _list_form(cls, v: Any) -> Any:
        # The seeds use both a list of symbols and a mapping symbol -> settings.
        if isinstance(v, list):
            symbols = [str(s) for s in v]
            repeated = sorted({s for s in symbols if symbols.count(s) > 1})
            if repeated:
                raise ValueError(f"listed more than once: {', '.join(repeated)}")
            return {s: {} for s in symbols}
        if isinstance(v, dict):
            return {str(k): ({} if s is None else s) for k, s in v.items()}
        return v

    @field_validator("instruments")
    @classmethod
    def _non_empty(cls, v: dict[str, StrategyInstrument]) -> dict[str, StrategyInstrument]:
        if not v:
            raise ValueError("a strategy needs at least one instrument")
        return v


class PineConfig(_Strict):
    """The whole configuration file, after ``${VAR}`` interpolation."""

    databento: DatabentoConfig = DatabentoConfig()
    redis: RedisConfig = RedisConfig()
    runtime_dir: Path = Path("runtime")
    contract_map_path: Path = SHIPPED_CONTRACT_MAP
    models_path: Path = Path("models")
    sessions: SessionsConfig = SessionsConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    portfolio: PortfolioConfig = PortfolioConfig()
    strategies: dict[str, StrategyConfig]
    instruments: dict[str, InstrumentSpec]
    # Where this config and its .env files were read from (set by the loader, for messages and reports).
    source: Path | None = Field(default=None, exclude=True)
    env_files: tuple[Path, ...] = Field(default=(), exclude=True)

    @field_validator("instruments")
    @classmethod
    def _some_instruments(cls, v: dict[str, InstrumentSpec]) -> dict[str, InstrumentSpec]:
        if not v:
            raise ValueError("at least one instrument (root symbol with its contract specification) is needed")
        return v

    @model_validator(mode="after")
    def _instruments_known(self) -> PineConfig:
        # One line per unknown reference, each a key path; the loader reports them separately.
        problems = [
            f"strategies.{name}.instruments.{sym}: no such instrument in 'instruments' "
            f"(known: {', '.join(sorted(self.instruments))})"
            for name, strat in self.strategies.items()
            for sym in strat.instruments
            if sym not in self.instruments
        ]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def enabled_strategies(self) -> dict[str, StrategyConfig]:
        """Strategies with ``enabled: true``, in file order."""
        return {n: s for n, s in self.strategies.items() if s.enabled}

    def strategy(self, name: str) -> StrategyConfig:
        """The named strategy; KeyError with the known names otherwise."""
        try:
            return self.strategies[name]
        except KeyError:
            raise KeyError(
                f"unknown strategy {name!r}; configured: {', '.join(sorted(self.strategies)) or 'none'}"
            ) from None
