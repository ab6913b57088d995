"""Load ``config.multi_alpha.yml``: .env, ``${VAR}`` interpolation, validation, overrides."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from dotenv import load_dotenv
from pydantic import ValidationError

from pine.config.schema import PineConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO_ROOT / "data" / "config.multi_alpha.example.yml"
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class ConfigError(ValueError):
    """An unusable configuration. ``errors`` holds one line per problem, each naming a key path."""

    def __init__(self, source: Path | None, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        where = f"{source}: " if source else ""
        super().__init__(where + ("; ".join(errors) if len(errors) == 1 else f"{len(errors)} errors:\n  "
                                  + "\n  ".join(errors)))


def default_config_path() -> Path:
    """``$PINE_CONFIG``, else ``./config.multi_alpha.yml``, else the shipped example."""
    env = os.environ.get("PINE_CONFIG")
    if env:
        return Path(env)
    local = Path("config.multi_alpha.yml")
    return local if local.exists() else EXAMPLE_CONFIG


def load_env_files(config_path: Path | None) -> None:
    """Load ``.env`` from the working directory and beside the config; never override."""
    candidates = [Path.cwd() / ".env"]
    if config_path is not None:
        candidates.append(config_path.resolve().parent / ".env")
    for env_file in dict.fromkeys(candidates):
        if env_file.is_file():
            load_dotenv(env_file, override=False)


def interpolate(value: Any, path: str, errors: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; unset without default is an error."""
    if isinstance(value, dict):
        return {k: interpolate(v, f"{path}.{k}" if path else str(k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m["name"], m["default"]
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        errors.append(f"{path}: environment variable {name} is not set (use ${{{name}:-default}} to allow that)")
        return ""

    whole = _VAR.fullmatch(value)
    result = _VAR.sub(sub, value)
    # A value that is exactly one ${VAR} becomes typed YAML ("5" → 5, "" → None).
    if whole is not None and result != "":
        return yaml.safe_load(result) if not result.strip().startswith(("{", "[")) else result
    if whole is not None:
        return None
    return result


def load_config(path: Path | str | None = None) -> PineConfig:
    """Read, interpolate and validate a config file; ConfigError lists every problem."""
    source = Path(path) if path is not None else default_config_path()
    load_env_files(source)
    try:
        raw = yaml.safe_load(source.read_text())
    except FileNotFoundError:
        raise ConfigError(source, ["file not found (pass --config FILE or set PINE_CONFIG)"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, ["top level must be a mapping of sections (databento, redis, strategies, …)"])
    errors: list[str] = []
    data = interpolate(raw, "", errors)
    if errors:
        raise ConfigError(source, errors)
    # Environment overrides named in DESIGN.md win over the file.
    if os.environ.get("REDIS_URL"):
        data.setdefault("redis", {})
        data["redis"] = {**(data["redis"] or {}), "url": os.environ["REDIS_URL"]}
    if os.environ.get("PINE_RUNTIME_DIR"):
        data["runtime_dir"] = os.environ["PINE_RUNTIME_DIR"]
    try:
        cfg = PineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(e) for e in exc.errors()]) from None
    base = source.resolve().parent
    return cfg.model_copy(update={
        "source": source,
        "contract_map_path": _relative_to(base, cfg.contract_map_path),
        "models_path": _relative_to(base, cfg.models_path),
        "runtime_dir": cfg.runtime_dir if cfg.runtime_dir.is_absolute() else Path.cwd() / cfg.runtime_dir,
    })


def _relative_to(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else base / p


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}"
