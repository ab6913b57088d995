"""Typed configuration: the shape of ``config.multi_alpha.yml`` (seeds' multi-alpha schema).

Models are strict (unknown keys are errors) so that a typo names its key path instead of
being silently ignored.
"""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
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
# Who sends the daily summary (``notifications.daily_summary_sender``; ``pine.notify.summary``).
SummarySender = Literal["auto", "workers", "dagster"]


class DatabentoConfig(_Strict):
    """Market data: a key switches from the synthetic market to Databento Live."""

    api_key: OptionalSecret = None
    dataset: str = "GLBX.MDP3"
    schema_: str = Field(default="trades", alias="schema")
    # Historical API server for warmup history (``host:port`` or ``https://…``); empty: Databento's own.
    historical_gateway: OptionalStr = None


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

    # Seconds between refreshes of the Redis key (``heartbeat:{component}``).
    interval: float = Field(default=30.0, gt=0)
    # Seconds between rewrites of the file.
    write_interval: float = Field(default=30.0, gt=0)
    # ``{component}`` becomes ``hub`` or ``worker_{strategy}``, ``{strategy}`` (or the seeds' ``{strategy_name}``)
    # the strategy (``hub`` for the hub); relative paths live in the runtime dir.
    file_path: str = "heartbeat/{component}.json"
    ttl: float = Field(default=90.0, gt=0)


class ReconnectConfig(_Strict):
    """Backoff between attempts to reach the live gateway: exponential, capped, with jitter."""

    initial_s: float = Field(default=0.5, gt=0)
    max_s: float = Field(default=30.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1)
    # Each delay is drawn from [delay × (1 − jitter), delay] so that many hubs do not retry in step.
    jitter: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be at least initial_s ({self.initial_s})")
        return self


class HubConfig(_Strict):
    """The live data hub: bar closing, the control channel, Redis and feed fault handling."""

    # Commands on datahub:control must carry this token when it is set.
    control_token: OptionalSecret = None
    # A live bar closes this long after its end on the wall clock (trades still in flight get in).
    close_grace_ms: int = Field(default=250, ge=0, le=60_000)
    # Bars held in memory while Redis is unreachable; beyond this the oldest are dropped (loudly).
    redis_buffer_max_bars: int = Field(default=100_000, ge=1)
    # Databento sends a heartbeat after this many idle seconds; a silent connection is then dead.
    feed_heartbeat_s: int = Field(default=5, ge=5, le=1800)
    # On reconnect, intraday replay starts this long before the last ts_recv seen (the gateway
    # filters replay on ts_event, which precedes ts_recv); duplicates are dropped.
    replay_overlap_s: float = Field(default=2.0, ge=0, le=3600)
    # How long closed bars stay correctable by late trades (data time).
    correction_window_minutes: int = Field(default=60, ge=1, le=24 * 60)
    reconnect: ReconnectConfig = ReconnectConfig()
    # Live gateway override (a local or test gateway); empty: Databento's gateway for the dataset.
    gateway: OptionalStr = None
    port: int = Field(default=13000, ge=1, le=65535)


class PortfolioConfig(_Strict):
    """Portfolio-wide risk limits shared by all workers."""

    starting_cash: float = Field(default=250_000, gt=0)
    max_positions: int = Field(default=2, ge=1)
    daily_stop_loss: float = Field(default=2_500, gt=0)


class TradersPostConfig(_Strict):
    """How workers deliver orders to TradersPost webhooks (the URL itself is per strategy)."""

    connect_timeout_s: float = Field(default=3.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0)
    # Attempts per order, the first included; 5xx, 408, 429 and network errors are retried, other 4xx never.
    max_attempts: int = Field(default=4, ge=1, le=10)
    # Delay before retry n is backoff_s × 2^(n-1), at most backoff_max_s.
    backoff_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)


class PreflightConfig(_Strict):
    """Checks run by ``pine worker --check`` and at every worker start."""

    # A failed check (or a position mismatch after a restart) stops the worker instead of a warning.
    fail_fast: bool = True


class MlConfig(_Strict):
    """ML veto models (``pine ml``): training windows, walk-forward validation and champion promotion."""

    # Walk-forward validation: expanding-window folds over the training trades.
    folds: int = Field(default=4, ge=2, le=20)
    # Gap between the end of a training trade and the first decision of the window it is tested on.
    embargo_days: float = Field(default=2.0, ge=0)
    # Most recent share of the trades kept out of training: the window promotion is judged on.
    heldout_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    # A symbol with fewer labelled trades (with every feature ready) is not trained.
    min_trades: int = Field(default=40, ge=10)
    # The threshold chosen on validation must keep at least this share of the trades.
    min_kept_fraction: float = Field(default=0.25, gt=0, le=1)
    # Inverse L2 strength of the logistic regression (smaller: stronger shrinkage).
    regularization_c: float = Field(default=0.1, gt=0)
    # A candidate becomes champion when its held-out metric beats the champion's by more than the margin
    # (in the metric's units: currency for pnl, a ratio for profit_factor and precision).
    promotion_metric: Literal["pnl", "profit_factor", "precision"] = "pnl"
    promotion_margin: float = Field(default=0.0, ge=0)


class SupervisionConfig(_Strict):
    """Who restarts the hub and the workers: Dagster's supervision sensor, or systemd (the sensor then only alerts)."""

    mode: Literal["dagster", "systemd"] = "dagster"
    # Supervise the hub too; off where the hub runs elsewhere (or is replayed by hand).
    hub: bool = True
    # More than max_restarts restarts of one process within restart_window_minutes is a crash loop:
    # reported, and no further restart until the window has moved on.
    max_restarts: int = Field(default=3, ge=1)
    restart_window_minutes: float = Field(default=15.0, gt=0)
    # SIGTERM, then SIGKILL after this long (systemd's TimeoutStopSec in deploy/systemd).
    stop_timeout_s: float = Field(default=30.0, gt=0)
    # A started process must write its first heartbeat within this long.
    start_timeout_s: float = Field(default=120.0, gt=0)


def _yaml_switch(v: Any) -> Any:
    # YAML 1.1 reads unquoted on/off (and yes/no) as booleans.
    if isinstance(v, bool):
        return "on" if v else "off"
    return v


# What a message type does: sent with a phone notification, sent silently (no push), or not sent.
NotifyLevel = Annotated[Literal["on", "silent", "off"], BeforeValidator(_yaml_switch)]


class NotificationTypesConfig(_Strict):
    """Per message type: ``on``, ``silent`` (posted without a push notification) or ``off``."""

    system: NotifyLevel = "silent"  # hub / worker started and stopped
    entry: NotifyLevel = "on"
    exit: NotifyLevel = "on"
    daily_summary: NotifyLevel = "on"
    emergency: NotifyLevel = "on"  # daily stop, killswitch, process died, data gap, order failed
    status: NotifyLevel = "on"  # `pine notify status`


class NotificationsConfig(_Strict):
    """Discord notifications (``pine.notify``): the global webhook, message types and delivery."""

    # Global channel; ``strategies.*.discord_webhook_url`` overrides it for that strategy's messages.
    discord_webhook_url: OptionalSecret = None
    types: NotificationTypesConfig = NotificationTypesConfig()
    username: str = Field(default="Pine", min_length=1, max_length=80)
    # A message delivered this long after its event says how late it is.
    late_after_s: float = Field(default=60.0, ge=0)
    connect_timeout_s: float = Field(default=3.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0)
    # 5xx and network errors: retry n waits backoff_s × 2^(n-1), at most backoff_max_s (429: Discord's retry_after).
    backoff_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=300.0, ge=0)
    # Undelivered this long after its event: dropped (logged) so one dead channel cannot hold messages for ever.
    give_up_after_h: float = Field(default=48.0, gt=0)
    # The daily summary waits for every enabled worker to pass the session close, at most this long
    # after the first one did (a dead worker must not hold it back).
    summary_wait_minutes: float = Field(default=15.0, ge=0)
    # Who sends the daily summary. ``auto``: Dagster when it runs (its ``dagster_presence`` sensor keeps
    # ``ops:dagster:alive`` in Redis), with the reconciliation result; the workers then hold back until
    # ``summary_wait_minutes`` after the close and send it only if Dagster has not. ``dagster``: the same,
    # whether or not Dagster is seen. ``workers``: the workers as soon as all passed the close; Dagster never.
    daily_summary_sender: SummarySender = "auto"


class DashboardConfig(_Strict):
    """``pine dashboard``: where it listens and the token that guards it."""

    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=1, le=65535)
    # Required for any write action (killswitch buttons); when set, also for viewing.
    token: OptionalSecret = None
    refresh_s: float = Field(default=5.0, ge=1, le=3600)


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


class LoggingConfig(_Strict):
    """Log lines of every Pine process (``pine.logs``): console format and the rotated JSON-lines files."""

    # Console lines: ``text`` (time level component strategy= symbol= logger: message) or ``json`` objects.
    format: Literal["text", "json"] = "text"
    # Where each long-running process writes ``{component}.jsonl``; relative paths live in the runtime dir.
    dir: Path = Path("logs")
    max_bytes: int = Field(default=10_000_000, ge=10_000)
    backup_count: int = Field(default=5, ge=1, le=100)


class WarmupConfig(_Strict):
    """Where worker warmup and ``pine warmup build`` find history (lookbacks are per strategy)."""

    # Parquet bar caches (``pine.bar_cache``); relative paths live in the runtime dir.
    cache_dir: Path = Path("warmup")
    # DBN archive: what ``pine synth`` and ``pine hub --record`` write; relative paths live in the runtime dir.
    archive_dir: Path = Path("market")
    # A Databento Historical request estimated (``metadata.get_cost``) above this is refused.
    databento_max_cost_usd: float = Field(default=5.0, ge=0)
    # A worker whose caches are missing builds them from Databento (key set) or the archive before trading.
    build_missing: bool = True


class StrategyWarmupConfig(_Strict):
    """How much history a strategy's indicators are warmed up with before it trades."""

    daily_bars: int = Field(default=250, ge=0)
    # Calendar days of hourly bars before the hand-over to the live streams (seeds: 15 days).
    hourly_days: float = Field(default=15.0, ge=0)
    # Calendar days of minute bars, used only with ``historical_warmup_compression: 1min``.
    minute_days: float = Field(default=1.0, ge=0)


class ReferenceFeedsConfig(_Strict):
    """Roots a strategy reads besides its own (``{ROOT}_day``/``{ROOT}_hour`` feeds; ZB daily is ``TLT_day``).

    A required root that is not configured or has no data stops the worker with an error naming its
    feed; an optional one is reported missing and its features take neutral defaults.
    """

    required: list[str] = Field(default_factory=list)
    optional: list[str] = Field(default_factory=list)


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
    # TradersPost ``ticker``: the traded contract (e.g. CLK2024) or the root (CL, TradersPost maps it).
    broker_ticker: Literal["contract", "root"] = "contract"
    instruments: dict[str, StrategyInstrument]
    params: dict[str, Any] = Field(default_factory=dict)
    # Finest timeframe of the warmup history (seeds: 1h): 1d = daily bars only, 1h = + hourly, 1min = + minute.
    historical_warmup_compression: Literal["1min", "1h", "1d"] = "1h"
    warmup: StrategyWarmupConfig = StrategyWarmupConfig()
    # None: the strategy type's default (ibs with ML-enabled instruments: the seeds' reference roots).
    reference_feeds: ReferenceFeedsConfig | None = None
    # ML veto in shadow mode: decisions of the ml_enabled instruments are logged and audited, never veto.
    ml_shadow: bool = False

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
    hub: HubConfig = HubConfig()
    portfolio: PortfolioConfig = PortfolioConfig()
    traderspost: TradersPostConfig = TradersPostConfig()
    preflight: PreflightConfig = PreflightConfig()
    # The trades DB (orders, fills, trades, positions); a relative path lives in the runtime dir.
    trades_db: Path = Path("trades.db")
    ml: MlConfig = MlConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    warmup: WarmupConfig = WarmupConfig()
    logging: LoggingConfig = LoggingConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    dashboard: DashboardConfig = DashboardConfig()
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

    @property
    def trades_db_path(self) -> Path:
        """Where the trades DB is: ``trades_db``, relative to the runtime dir unless absolute."""
        return self.trades_db if self.trades_db.is_absolute() else self.runtime_dir / self.trades_db

    def discord_webhook(self, strategy: str | None = None) -> str | None:
        """The Discord webhook URL for ``strategy``'s messages (its own, else the global one); None: no Discord."""
        own = self.strategies[strategy].discord_webhook_url if strategy in self.strategies else None
        chosen = own or self.notifications.discord_webhook_url
        return chosen.get_secret_value() if chosen is not None else None

    def secrets(self) -> list[str]:
        """Every secret value set in this config (API keys, webhook URLs, tokens, the Redis URL)."""
        candidates = [self.databento.api_key, self.redis.url, self.hub.control_token,
                      self.notifications.discord_webhook_url, self.dashboard.token]
        for strat in self.strategies.values():
            candidates += [strat.broker_account, strat.discord_webhook_url]
        return sorted({s.get_secret_value() for s in candidates if s is not None})

    def runtime_path(self, p: Path) -> Path:
        """``p`` relative to the runtime dir unless absolute (caches, archive, logs)."""
        return p if p.is_absolute() else self.runtime_dir / p

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
