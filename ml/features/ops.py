"""Feature operators: each has a vectorised evaluator (pandas) and an incremental one (O(1) per bar).

An operator reads one bar series (high, low, close of one root and timeframe). ``series``
evaluates it over a whole history at once for training; ``stream`` returns a state that is
fed one bar at a time in the worker. Both apply the same scalar formulas, so they agree to
floating-point rounding (rolling moments are re-summed exactly once per window length, so
the incremental ones cannot drift). A value is NaN (vectorised) or None (incremental) until
the operator has seen ``warmup`` bars.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

# A window whose standard deviation is below this fraction of its mean level is flat: its
# z-score is 0, not a ratio of two rounding errors.
_FLAT = 1e-12


def ibs_value(high: float, low: float, close: float) -> float:
    """Internal bar strength (close − low) / (high − low); 0.5 for a bar with no range."""
    return 0.5 if high == low else (close - low) / (high - low)


def _zscore(x: float, mean: float, std: float) -> float:
    return 0.0 if std <= _FLAT * max(1.0, abs(mean)) else (x - mean) / std


class OpState(ABC):
    """Incremental evaluator of one operator over one bar series."""

    seen: int = 0

    @abstractmethod
    def update(self, high: float, low: float, close: float) -> None:
        """Take the next bar of the series."""

    @abstractmethod
    def value(self) -> float | None:
        """The operator's value after the bars seen so far; None until it has enough of them."""


@dataclass(frozen=True)
class Op(ABC):
    """A feature operator over one bar series."""

    def __post_init__(self) -> None:
        n = getattr(self, "n", None)
        # A sample standard deviation needs two values; a return needs one bar back.
        smallest = 2 if isinstance(self, (RealisedVol, ZScore)) else 1
        if n is not None and n < smallest:
            raise ValueError(f"{type(self).__name__} needs n >= {smallest}, got {n}")

    @property
    @abstractmethod
    def warmup(self) -> int:
        """Bars of the series needed before the first value."""

    @abstractmethod
    def series(self, high: pd.Series, low: pd.Series, close: pd.Series) -> pd.Series:
        """Vectorised values over a whole series (NaN until ready)."""

    @abstractmethod
    def stream(self) -> OpState:
        """A fresh incremental evaluator."""

    @abstractmethod
    def describe(self) -> str:
        """One line saying what the operator computes (logged with each model)."""


class _RollingMoments:
    """Mean and sample variance of the last ``n`` values, O(1) per value.

    Each replacement updates the moments in place (Welford); every ``n`` values they are
    re-summed from the window, so rounding errors never accumulate beyond one window.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.window: deque[float] = deque(maxlen=n)
        self.mean = 0.0
        self.m2 = 0.0
        self._since_exact = 0

    def push(self, x: float) -> None:
        if len(self.window) < self.n:
            self.window.append(x)
            delta = x - self.mean
            self.mean += delta / len(self.window)
            self.m2 += delta * (x - self.mean)
        else:
            old = self.window[0]
            self.window.append(x)
            new_mean = self.mean + (x - old) / self.n
            self.m2 += (x - old) * (x - new_mean + old - self.mean)
            self.mean = new_mean
        self._since_exact += 1
        if self._since_exact >= self.n:
            self._since_exact = 0
            self.mean = math.fsum(self.window) / len(self.window)
            self.m2 = math.fsum((v - self.mean) ** 2 for v in self.window)

    @property
    def full(self) -> bool:
        return len(self.window) == self.n

    def std(self) -> float:
        return math.sqrt(max(self.m2, 0.0) / (self.n - 1))


@dataclass(frozen=True)
class Ibs(Op):
    """Internal bar strength of the latest bar."""

    @property
    def warmup(self) -> int:
        return 1

    def series(self, high: pd.Series, low: pd.Series, close: pd.Series) -> pd.Series:
        rng = high - low
        return ((close - low) / rng.where(rng != 0)).where(rng != 0, 0.5)

    def stream(self) -> OpState:
        return _IbsState()

    def describe(self) -> str:
        return "(close - low) / (high - low) of the latest bar, 0.5 when high == low"


class _IbsState(OpState):
    def __init__(self) -> None:
        self._v: float | None = None

    def update(self, high: float, low: float, close: float) -> None:
        self.seen += 1
        self._v = ibs_value(high, low, close)

    def value(self) -> float | None:
        return self._v


@dataclass(frozen=True)
class Return(Op):
    """Simple return over ``n`` bars: close / close ``n`` bars ago − 1."""

    n: int

    @property
    def warmup(self) -> int:
        return self.n + 1

    def series(self, high: pd.Series, low: pd.Series, close: pd.Series) -> pd.Series:
        return close / close.shift(self.n) - 1.0

    def stream(self) -> OpState:
        return _ReturnState(self.n)

    def describe(self) -> str:
        return f"close / close {self.n} bar(s) earlier - 1"


class _ReturnState(OpState):
    def __init__(self, n: int) -> None:
        self._closes: deque[float] = deque(maxlen=n + 1)

    def update(self, high: float, low: float, close: float) -> None:
        self.seen += 1
        self._closes.append(close)

    def value(self) -> float | None:
        if len(self._closes) < self._closes.maxlen:  # type: ignore[operator]
            return None
        return self._closes[-1] / self._closes[0] - 1.0


@dataclass(frozen=True)
class Range(Op):
    """Range of the latest bar relative to its close: (high − low) / close."""

    @property
    def warmup(self) -> int:
        return 1

    def series(self, high: pd.Series, low: pd.Series, close: pd.Series) -> pd.Series:
        return (high - low) / close

    def stream(self) -> OpState:
        return _RangeState()

    def describe(self) -> str:
        return "(high - low) / close of the latest bar"


class _RangeState(OpState):
    def __init__(self) -> None:
        self._v: float | None = None

    def update(self, high: float, low: float, close: float) -> None:
        self.seen += 1
        self._v = (high - low) / close

    def value(self) -> float | None:
        return self._v


@dataclass(frozen=True)
class RangeRatio(Op):
    """Latest relative range over its mean across the last ``n`` bars (1.0 when all are flat)."""

    n: int

    @property
    def warmup(self) -> int:
        return self.n

    def series(self, high: pd.Series, low: pd.Series, close: pd.Series) -> pd.Series:
        rel = (high - low) / close
        mean = rel.rolling(self.n).mean()
        return (rel / mean.where(mean != 0)).where(mean != 0, 1.0)

    def stream(self) -> OpState:
        return _RangeRatioState(self.n)

    def describe(self) -> str:
        return f"((high - low) / close) over its mean of the last {self.n} bars"


class _RangeRatioState(OpState):
    def __init__(self, n: int) -> None:
        self._m = _RollingMoments(n)

    def update(self, high: float, low: float, close: float) -> None:
        self.seen += 1
        self._m.push((high - low) / close)

    def value(self) -> float | None:
        if not self._m.full:
            return None
        return 1.0 if self._m.mean == 0 else self._m.window[-1] / self._m.mean


@dataclass(frozen=True)
class RealisedVol(Op):
    """Sample standard deviation of the last ``n`` log returns (per bar, not annualised)."""

    n: int

    @property
    def warmup(self) -> int:
        return self.n + 1

    def series(self, high: pd.Series, low: pd.Series, close: pd.Series) -> pd.Series:
        logret = pd.Series(np.log(close / close.shift(1)), index=close.index)
        return logret.rolling(self.n).std()

    def stream(self) -> OpState:
        return _RealisedVolState(self.n)

    def describe(self) -> str:
        return f"sample std of the last {self.n} log returns"


class _RealisedVolState(OpState):
    def __init__(self, n: int) -> None:
        self._prev: float | None = None
        self._m = _RollingMoments(n)

    def update(self, high: float, low: float, close: float) -> None:
        self.seen += 1
        if self._prev is not None:
            self._m.push(math.log(close / self._prev))
        self._prev = close

    def value(self) -> float | None:
        return self._m.std() if self._m.full else None


@dataclass(frozen=True)
class ZScore(Op):
    """(close − mean) / std of the last ``n`` closes (sample std; 0 for a flat window)."""

    n: int

    @property
    def warmup(self) -> int:
        return self.n

    def series(self, high: pd.Series, low: pd.Series, close: pd.Series) -> pd.Series:
        roll = close.rolling(self.n)
        mean, std = roll.mean(), roll.std()
        flat = std <= _FLAT * np.maximum(1.0, mean.abs())
        return ((close - mean) / std.where(~flat)).where(~flat, 0.0).where(mean.notna())

    def stream(self) -> OpState:
        return _ZScoreState(self.n)

    def describe(self) -> str:
        return f"(close - mean) / std of the last {self.n} closes"


class _ZScoreState(OpState):
    def __init__(self, n: int) -> None:
        self._m = _RollingMoments(n)

    def update(self, high: float, low: float, close: float) -> None:
        self.seen += 1
        self._m.push(close)

    def value(self) -> float | None:
        if not self._m.full:
            return None
        return _zscore(self._m.window[-1], self._m.mean, self._m.std())
