"""Which feeds a strategy's Cerebro has: its own instruments' and its reference roots'.

A traded symbol has ``{SYM}_minute``, ``{SYM}_hour`` and ``{SYM}_day``. A reference root (a
root the strategy reads but does not trade, e.g. ES for the IBS features of CL) has
``{ROOT}_day`` and ``{ROOT}_hour``, except that ZB's daily feed is ``TLT_day`` (seeds). A
reference root that is also traded uses the traded feeds.

References come from ``strategies.NAME.reference_feeds`` or, when that is not set, from the
strategy class (:meth:`BaseStrategy.default_reference_feeds`). A required root must be a
configured instrument (the hub publishes only those) and have data; an optional root without
either is *missing*: it gets no feed, the features reading it take neutral defaults, and the
heartbeat lists its feeds.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from workers.feeds import FEED_TIMEFRAMES, feed_name, reference_feed_name

REFERENCE_TIMEFRAMES: Final = ("daily", "hourly")


@dataclass(frozen=True)
class FeedSpec:
    """One Backtrader feed: its name and the bar series (root, timeframe) it carries."""

    name: str
    root: str
    timeframe: str


@dataclass(frozen=True)
class FeedLayout:
    """Every feed of a strategy, in Cerebro order, and the optional reference roots left out."""

    symbols: tuple[str, ...]
    required: tuple[str, ...]
    optional: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def references(self) -> tuple[str, ...]:
        """Reference roots that have feeds (required first), traded ones excluded."""
        return tuple(r for r in (*self.required, *self.optional) if r not in self.symbols)

    @property
    def feeds(self) -> tuple[FeedSpec, ...]:
        """Traded symbols' feeds (config order), then the references' (daily, hourly)."""
        own = [FeedSpec(feed_name(s, tf), s, tf) for s in self.symbols for tf in FEED_TIMEFRAMES]
        refs = [FeedSpec(reference_feed_name(r, tf), r, tf) for r in self.references for tf in REFERENCE_TIMEFRAMES]
        return (*own, *refs)

    @property
    def missing_feeds(self) -> list[str]:
        """Names of the feeds of missing optional roots (``VIX_day``, ``VIX_hour``, …)."""
        return sorted(reference_feed_name(r, tf) for r in self.missing for tf in REFERENCE_TIMEFRAMES)

    @property
    def roots(self) -> list[str]:
        """Every root with feeds."""
        return [*self.symbols, *self.references]

    def without(self, roots: Collection[str]) -> FeedLayout:
        """This layout with the optional ``roots`` moved to missing (they turned out to have no data)."""
        gone = [r for r in self.optional if r in roots]
        return FeedLayout(self.symbols, self.required, tuple(r for r in self.optional if r not in gone),
                          tuple(sorted({*self.missing, *gone})))


def feed_label(root: str, timeframe: str, symbols: Collection[str]) -> str:
    """The feed name of ``root``/``timeframe`` in a Cerebro trading ``symbols``."""
    return feed_name(root, timeframe) if root in symbols else reference_feed_name(root, timeframe)


def layout_for(symbols: Collection[str], required: Collection[str], optional: Collection[str],
               available: Collection[str]) -> FeedLayout:
    """The feeds of a strategy trading ``symbols`` whose references are ``required``/``optional``.

    ``available`` are the roots that can have feeds (configured instruments, or roots with bars).
    Raises LookupError naming the feeds of a required root that is not available.
    """
    have = set(available)
    absent = [r for r in required if r not in have and r not in symbols]
    if absent:
        names = ", ".join(f"{reference_feed_name(r, 'daily')}/{reference_feed_name(r, 'hourly')} ({r})" for r in absent)
        raise LookupError(f"required reference feed(s) {names} not available")
    opt = [r for r in optional if r not in required]
    return FeedLayout(
        symbols=tuple(symbols),
        required=tuple(dict.fromkeys(required)),
        optional=tuple(r for r in dict.fromkeys(opt) if r in have or r in symbols),
        missing=tuple(sorted(r for r in set(opt) if r not in have and r not in symbols)),
    )
