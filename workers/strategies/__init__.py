"""Strategies and their registry. Importing this package registers every built-in strategy."""

from workers.strategies import breakout as _breakout  # noqa: F401  (registers "breakout")
from workers.strategies import ibs as _ibs  # noqa: F401  (registers "ibs")
from workers.strategies.base import BaseStrategy
from workers.strategies.registry import UnknownStrategyTypeError, register, strategy_class, strategy_types

__all__ = ["BaseStrategy", "UnknownStrategyTypeError", "register", "strategy_class", "strategy_types"]
