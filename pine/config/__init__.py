"""Configuration: schema, loading, interpolation."""

from pine.config.loader import ConfigError, default_config_path, load_config
from pine.config.schema import PineConfig, StrategyConfig

__all__ = ["ConfigError", "PineConfig", "StrategyConfig", "default_config_path", "load_config"]
