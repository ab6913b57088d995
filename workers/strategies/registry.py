"""Strategy registry: a new strategy is a class registered here plus a config entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from workers.strategies.base import BaseStrategy

_S = TypeVar("_S", bound=type[BaseStrategy])
_REGISTRY: dict[str, type[BaseStrategy]] = {}


class UnknownStrategyTypeError(KeyError):
    """A config names a ``strategy_type`` no class is registered for."""

    def __str__(self) -> str:
        return str(self.args[0])


def register(strategy_type: str) -> Callable[[_S], _S]:
    """Class decorator: make ``strategy_type`` in the config select this class."""

    def deco(cls: _S) -> _S:
        if strategy_type in _REGISTRY and _REGISTRY[strategy_type] is not cls:
            raise ValueError(f"strategy type {strategy_type!r} is already registered by {_REGISTRY[strategy_type]}")
        _REGISTRY[strategy_type] = cls
        return cls

    return deco


def strategy_types() -> list[str]:
    """Registered strategy types, sorted."""
    return sorted(_REGISTRY)


def strategy_class(strategy_type: str) -> type[BaseStrategy]:
    """The class of ``strategy_type``; UnknownStrategyTypeError names the known ones."""
    try:
        return _REGISTRY[strategy_type]
    except KeyError:
        raise UnknownStrategyTypeError(
            f"unknown strategy_type {strategy_type!r}; known: {', '.join(strategy_types()) or 'none'}"
        ) from None
