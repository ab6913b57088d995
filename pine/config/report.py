"""``pine config check``: the resolved configuration as YAML, secrets redacted, plus a summary."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, SecretStr

from pine.config.loader import display_path
from pine.config.schema import PineConfig, RedisConfig

REDACTED = "***"
NOT_SET = "(not set)"
# Shorter secret values are not scrubbed from free-form fields: they would blot out ordinary words.
_MIN_SCRUB_LEN = 8


def config_report(cfg: PineConfig) -> str:
    """The resolved config as readable YAML with every secret shown as ``***`` / ``(not set)``, and a summary."""
    source = display_path(cfg.source) if cfg.source else "(built in code)"
    body = yaml.dump(_plain(cfg), Dumper=_ReportDumper, sort_keys=False, allow_unicode=True, width=120)
    # Secrets copied into free-form fields (strategy params) are not typed as secrets: scrub them by value.
    for secret in _secret_values(cfg):
        body = body.replace(secret, REDACTED)
    lines = [
        f"# Resolved configuration from {source}",
        f"# secrets: '{REDACTED}' = set, '{NOT_SET}' = empty; environment variables and .env are applied",
        body.rstrip(),
        "",
        "Summary",
        *_summary(cfg, source),
    ]
    return "\n".join(lines) + "\n"


def _summary(cfg: PineConfig, source: str) -> list[str]:
    enabled = cfg.enabled_strategies()
    sessions = (
        f"daily bars close {cfg.sessions.fixed_utc_close_hour:02d}:00 UTC (fixed, legacy parity)"
        if cfg.sessions.fixed_utc_close_hour is not None
        else f"daily bars close {cfg.sessions.close:%H:%M} {cfg.sessions.timezone}"
    )
    rows = [
        ("config file", source),
        (".env files", ", ".join(display_path(p) for p in cfg.env_files) or "none found"),
        ("market data", _market_data(cfg)),
        ("redis", _redis(cfg.redis)),
        ("runtime dir", str(cfg.runtime_dir)),
        ("contract map", display_path(cfg.contract_map_path)),
        ("sessions", sessions),
        ("instruments", f"{len(cfg.instruments)} roots: {' '.join(cfg.instruments)}"),
        ("strategies", f"{len(enabled)} of {len(cfg.strategies)} enabled"),
    ]
    lines = [f"  {label:<13} {value}" for label, value in rows]
    width = max((len(n) for n in cfg.strategies), default=0)
    for name, strat in cfg.strategies.items():
        broker = "webhook (TradersPost)" if strat.broker_account else "paper broker"
        discord = "discord on" if cfg.discord_webhook(name) else "discord off"
        state = "enabled" if strat.enabled else "disabled"
        lines.append(f"    {name:<{width}}  {state:<8}  {strat.strategy_type:<10}  {broker:<21}  {discord:<11}  "
                     f"{' '.join(strat.instruments)}")
    return lines


def _market_data(cfg: PineConfig) -> str:
    db = cfg.databento
    if db.api_key is not None:
        return f"live Databento {db.dataset} {db.schema_} (API key set)"
    return "synthetic market / DBN replay (no Databento API key)"


def _redis(redis: RedisConfig) -> str:
    if redis.url is not None:
        # Only scheme, host, port and db: the URL's user info and query may hold a password.
        try:
            parts = urlsplit(redis.url.get_secret_value())
            port = f":{parts.port}" if parts.port else ""
            return f"configured: {parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
        except ValueError:
            return "configured (URL not shown)"
    if redis.host:
        return f"configured: redis://{redis.host}:{redis.port}/{redis.db}"
    return "private embedded server, started by Pine (set REDIS_URL or redis.url to use your own)"


class _Flow(dict[str, Any]):
    """A mapping printed on one line (instrument specs, per-strategy settings)."""


def _plain(obj: Any, *, in_dict: bool = False) -> Any:
    """YAML-ready plain data; secret fields become ``***`` or ``(not set)``.

    Sections stay in block style; entries of a mapping whose values are all scalars
    (an instrument's spec, a strategy's params) print on one line.
    """
    if isinstance(obj, BaseModel):
        out: dict[str, Any] = {}
        for name, field in type(obj).model_fields.items():
            if field.exclude:
                continue
            value = getattr(obj, name)
            if _is_secret(field.annotation):
                out[field.alias or name] = NOT_SET if value is None else REDACTED
            else:
                out[field.alias or name] = _plain(value)
        return _Flow(out) if in_dict and _all_scalars(out) else out
    if isinstance(obj, dict):
        out = {str(k): _plain(v, in_dict=True) for k, v in obj.items()}
        return _Flow(out) if out and _all_scalars(out) else out
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, SecretStr):
        return REDACTED
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, time):
        return obj.strftime("%H:%M" if obj.second == 0 else "%H:%M:%S")
    return obj


def _all_scalars(d: dict[str, Any]) -> bool:
    return all(not isinstance(v, (dict, list)) for v in d.values())


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_is_secret(a) for a in get_args(annotation))


def _secret_values(cfg: PineConfig) -> list[str]:
    values = cfg.secrets()
    # Longest first, so that a secret containing another is replaced whole.
    return sorted((v for v in values if len(v) >= _MIN_SCRUB_LEN), key=len, reverse=True)


class _ReportDumper(yaml.SafeDumper):
    """Block style for sections, one line for small leaf mappings, plain decimals for tiny floats."""


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.MappingNode:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


def _represent_float(dumper: yaml.SafeDumper, data: float) -> yaml.ScalarNode:
    if data.is_integer() and abs(data) < 1e15:
        return dumper.represent_int(int(data))
    text = repr(data)
    if "e" in text and abs(data) < 1:
        # A tick size of 0.0000005 reads better than 5e-07.
        text = f"{data:.12f}".rstrip("0")
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.SequenceNode:
    scalars = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=scalars)


_ReportDumper.add_representer(_Flow, _represent_flow)
_ReportDumper.add_representer(float, _represent_float)
_ReportDumper.add_representer(list, _represent_list)
