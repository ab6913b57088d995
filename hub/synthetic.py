"""A seeded synthetic CME futures market, written as real DBN trade files (``pine synth``).

One file per trading day (``glbx-mdp3-YYYYMMDD.trades.dbn``, dataset GLBX.MDP3, parent
symbology, schema trades) holding, for every root:

* a ``SymbolMappingMsg`` per instrument at the start (``ES.FUT`` → ``ESM4``), like a live
  parent subscription;
* trades of the front and the next outright contract (the next one has 5–10% of the volume
  and trades a few ticks above) and of one calendar spread (``ESM4-ESU4``); over the days
  around the roll date the volume migrates to the next contract (quarterly contracts roll 8
  days before their 3rd-Friday expiry, monthly ones (CL, NG) about the 20th of the month
  before the contract month) and the expiring one keeps trading thinly until it expires;
* Globex hours: the session opens 17:00 America/Chicago Sunday–Thursday and trading stops
  16:00 CT, so there is a daily maintenance break and nothing from Friday 16:00 to Sunday 17:00;
* a U-shaped volume profile over the root's regular hours, thin overnight trading (some
  minutes have no trade), prices on the tick grid following a random walk with the root's
  daily volatility, and ``ts_recv`` a few microseconds after ``ts_event`` (trades stamped at the
  very end of a minute are received in the next one).

A day's file depends only on (seed, roots, day): the daily price levels come from one seeded
walk per root and each day bridges its open level to the next day's, so ranges that overlap
produce identical files. Nothing reads the wall clock.
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import databento_dbn as dbn
import numpy as np

from pine.config.schema import PineConfig
from pine.contracts import MONTH_CODES, ContractMap, ContractMapError, ContractSpec, load_contract_map
from pine.runtime import RuntimePaths

CHICAGO: Final = ZoneInfo("America/Chicago")
DATASET: Final = "GLBX.MDP3"
PUBLISHER_GLBX: Final = 1
NS: Final = 1_000_000_000
MINUTE_NS: Final = 60 * NS
SESSION_OPEN: Final = time(17, 0)
TRADING_STOP: Final = time(16, 0)
SESSION_MINUTES: Final = 23 * 60
# Volume share of the contract that is not the front one: 5-10%, except over the business days
# around the roll (keyed by business days from the roll day) when volume migrates.
QUIET_SHARE: Final = (0.05, 0.10)
ROLL_SHARES: Final = {-2: (0.15, 0.25), -1: (0.30, 0.45), 0: (0.30, 0.40), 1: (0.15, 0.25)}
# Daily price levels are a walk anchored here; this many business days either side are covered.
ANCHOR: Final = date(2024, 1, 2)
WALK_DAYS: Final = 10_000


@dataclass(frozen=True)
class RootProfile:
    """How one root trades: price level at ANCHOR, daily volatility, trades per session, busy hours (CT)."""

    price: float
    daily_vol: float
    trades: int
    rth: tuple[time, time]


_EQUITY = (time(8, 30), time(15, 0))
_FX_RATES = (time(7, 20), time(14, 0))
_ENERGY = (time(8, 0), time(13, 30))
_METALS = (time(7, 20), time(12, 30))
_GRAINS = (time(8, 30), time(13, 20))

PROFILES: Final[dict[str, RootProfile]] = {
    "ES": RootProfile(4750.0, 0.009, 20_000, _EQUITY),
    "NQ": RootProfile(16800.0, 0.012, 19_000, _EQUITY),
    "RTY": RootProfile(2030.0, 0.014, 12_000, _EQUITY),
    "YM": RootProfile(37700.0, 0.008, 11_000, _EQUITY),
    "6A": RootProfile(0.68, 0.006, 11_000, _FX_RATES),
    "6B": RootProfile(1.27, 0.004, 11_000, _FX_RATES),
    "6C": RootProfile(0.755, 0.003, 10_000, _FX_RATES),
    "6E": RootProfile(1.095, 0.004, 16_000, _FX_RATES),
    "6J": RootProfile(0.0071, 0.005, 13_000, _FX_RATES),
    "6M": RootProfile(0.058, 0.006, 10_000, _FX_RATES),
    "6N": RootProfile(0.63, 0.006, 10_000, _FX_RATES),
    "6S": RootProfile(1.19, 0.004, 10_000, _FX_RATES),
    "CL": RootProfile(70.4, 0.022, 18_000, _ENERGY),
    "NG": RootProfile(2.6, 0.04, 14_000, _ENERGY),
    "PL": RootProfile(990.0, 0.015, 10_000, _METALS),
    "GC": RootProfile(2070.0, 0.009, 15_000, _METALS),
    "SI": RootProfile(23.8, 0.017, 12_000, _METALS),
    "HG": RootProfile(3.88, 0.012, 11_000, _METALS),
    "ZC": RootProfile(470.0, 0.013, 12_000, _GRAINS),
    "ZS": RootProfile(1290.0, 0.011, 12_000, _GRAINS),
    "ZW": RootProfile(620.0, 0.018, 11_000, _GRAINS),
    "ZB": RootProfile(122.0, 0.007, 14_000, _FX_RATES),
}


def profile_for(root: str, spec: ContractSpec) -> RootProfile:
    """The root's profile; a root without one trades 10,000 ticks high with 1% daily volatility."""
    return PROFILES.get(root) or RootProfile(10_000 * spec.tick_size, 0.01, 10_000, _EQUITY)


# --------------------------------------------------------------------------- calendar


def trading_days(start: date, days: int) -> list[date]:
    """``days`` weekdays from ``start`` (a weekend start moves to Monday); exchange holidays are ignored."""
    out: list[date] = []
    d = start
    while len(out) < days:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


def session_window(day: date) -> tuple[int, int]:
    """(open, stop) of the Globex session of trading day ``day`` in UTC nanoseconds.

    Opens 17:00 CT the calendar day before (Sunday for Monday), stops 16:00 CT on ``day``.
    """
    opened = datetime.combine(day - timedelta(days=1), SESSION_OPEN, tzinfo=CHICAGO)
    stop = datetime.combine(day, TRADING_STOP, tzinfo=CHICAGO)
    return _ns(opened), _ns(stop)


def _ns(ts: datetime) -> int:
    return int(ts.astimezone(UTC).timestamp()) * NS


def _third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


def _business_days_before(d: date, n: int) -> date:
    while n:
        d -= timedelta(days=1)
        if d.weekday() < 5:
            n -= 1
    return d


def expiry_and_roll(spec: ContractSpec, year: int, month: int) -> tuple[date, date]:
    """(last trading day, volume roll day) of one contract.

    Monthly cycles follow the NYMEX crude rule (3 business days before the 25th of the month
    before the contract month, 4 if the 25th is a weekend) and roll 2 business days earlier;
    the other cycles expire on the 3rd Friday of the contract month and roll 8 days before.
    """
    if len(spec.months) == 12:
        prior = date(year - 1, 12, 25) if month == 1 else date(year, month - 1, 25)
        expiry = _business_days_before(prior, 3 if prior.weekday() < 5 else 4)
        return expiry, _business_days_before(expiry, 2)
    expiry = _third_friday(year, month)
    return expiry, expiry - timedelta(days=8)


@dataclass(frozen=True)
class Contract:
    """An outright contract listed on a day: raw symbol, expiry and roll day."""

    symbol: str
    expiry: date
    roll: date


def live_contracts(root: str, spec: ContractSpec, day: date, count: int = 2) -> list[Contract]:
    """The ``count`` nearest contracts of ``root`` still trading on ``day``."""
    found: list[Contract] = []
    year, month = day.year, day.month
    while len(found) < count:
        if MONTH_CODES[month - 1] in spec.months:
            expiry, roll = expiry_and_roll(spec, year, month)
            if expiry >= day:
                found.append(Contract(f"{root}{MONTH_CODES[month - 1]}{year % 10}", expiry, roll))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def instrument_id(symbol: str) -> int:
    """A stable instrument id per raw symbol (the same contract has the same id every day)."""
    return zlib.crc32(symbol.encode()) or 1


# --------------------------------------------------------------------------- one root, one day


@dataclass(frozen=True)
class _Trades:
    ts_event: np.ndarray
    ts_recv: np.ndarray
    instrument_id: np.ndarray
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray


def _minute_weights(rth: tuple[time, time]) -> np.ndarray:
    """Relative activity of each session minute: thin Asia, busier Europe, U-shaped regular hours."""
    local = (np.arange(SESSION_MINUTES) + SESSION_OPEN.hour * 60) % (24 * 60)  # CT minute of day
    open_m, close_m = rth[0].hour * 60 + rth[0].minute, rth[1].hour * 60 + rth[1].minute
    w = np.where((local >= 2 * 60) & (local < open_m), 0.35, 0.08)
    in_rth = (local >= open_m) & (local < close_m)
    u_shape = 1.0 + 3.0 * np.exp(-(local - open_m) / 30.0) + 2.0 * np.exp(-(close_m - 1 - local) / 20.0)
    w = np.where(in_rth, u_shape, w)
    return np.where((local >= close_m) & (local < TRADING_STOP.hour * 60), 0.25, w)


class _LevelWalk:
    """Daily open price levels of one root: a seeded log-normal walk over business days."""

    def __init__(self, seed: int, root: str, profile: RootProfile) -> None:
        rng = np.random.default_rng([seed, zlib.crc32(root.encode())])
        returns = rng.normal(0.0, profile.daily_vol, 2 * WALK_DAYS)
        self._cum = np.concatenate(([0.0], np.cumsum(returns)))
        self._log0 = np.log(profile.price)

    def log_level(self, day: date) -> float:
        k = int(np.busday_count(ANCHOR, day)) + WALK_DAYS
        if not 0 <= k < len(self._cum):
            raise ValueError(f"{day} is outside the synthetic calendar ({WALK_DAYS} business days around {ANCHOR})")
        return float(self._log0 + self._cum[k] - self._cum[WALK_DAYS])


def _root_day(
    root: str, spec: ContractSpec, profile: RootProfile, walk: _LevelWalk, day: date, seed: int
) -> tuple[_Trades, list[str]]:
    """All trades of one root on one trading day, and its instruments' raw symbols."""
    rng = np.random.default_rng([seed, zlib.crc32(root.encode()), day.toordinal()])
    near, far = live_contracts(root, spec, day)
    primary, secondary = (near, far) if day < near.roll else (far, near)
    share = rng.uniform(*ROLL_SHARES.get(int(np.busday_count(near.roll, day)), QUIET_SHARE))
    tick = round(spec.tick_size * NS)
    basis = int(rng.integers(2, 9))
    opened, _ = session_window(day)

    weights = _minute_weights(profile.rth)
    lam = profile.trades * weights / weights.sum()
    per_minute = rng.poisson(lam)
    n = int(per_minute.sum())
    minute = np.repeat(np.arange(SESSION_MINUTES), per_minute)
    offset = rng.integers(0, MINUTE_NS, n)
    # Algorithms firing on the minute: stamped in its last microseconds, received in the next.
    edge = (rng.random(n) < 0.02) & (minute < SESSION_MINUTES - 1)
    offset = np.where(edge, MINUTE_NS - rng.integers(1, 50_000, n), offset)
    ts_event = np.sort(opened + minute * MINUTE_NS + offset)

    # Brownian bridge in log price from today's level to the next day's, one step per trade.
    start, end = walk.log_level(day), walk.log_level(_next_weekday(day))
    steps = np.cumsum(rng.normal(0.0, profile.daily_vol / np.sqrt(max(n, 1)), n))
    frac = np.arange(1, n + 1) / max(n, 1)
    log_price = start + steps - frac * (steps[-1] if n else 0.0) + frac * (end - start)
    near_ticks = np.rint(np.exp(log_price) / spec.tick_size).astype(np.int64)

    is_secondary = rng.random(n) < share
    on_far = is_secondary == (primary is near)
    ids = np.where(is_secondary, instrument_id(secondary.symbol), instrument_id(primary.symbol))
    price_ticks = near_ticks + np.where(on_far, basis, 0)

    size = rng.geometric(0.45, n)
    size = np.where(rng.random(n) < 0.01, size * rng.integers(5, 30, n), size)
    side = rng.integers(0, 2, n)

    spread_symbol = f"{near.symbol}-{far.symbol}"
    k = int(rng.integers(15, 60))
    s_minute = rng.choice(SESSION_MINUTES, size=k, p=lam / lam.sum())
    s_event = np.sort(opened + s_minute * MINUTE_NS + rng.integers(0, MINUTE_NS, k))
    s_ticks = -basis + rng.integers(-1, 2, k)

    ts_event = np.concatenate((ts_event, s_event))
    latency = np.clip(rng.lognormal(np.log(25_000), 0.5, n + k), 3_000, 2_000_000).astype(np.int64)
    trades = _Trades(
        ts_event=ts_event,
        ts_recv=ts_event + latency,
        instrument_id=np.concatenate((ids, np.full(k, instrument_id(spread_symbol)))),
        price=np.concatenate((price_ticks, s_ticks)) * tick,
        size=np.concatenate((size, rng.geometric(0.3, k))),
        side=np.concatenate((side, rng.integers(0, 2, k))),
    )
    return trades, [near.symbol, far.symbol, spread_symbol]


def _next_weekday(day: date) -> date:
    return trading_days(day + timedelta(days=1), 1)[0]


# --------------------------------------------------------------------------- files


def day_file_name(day: date) -> str:
    """``glbx-mdp3-YYYYMMDD.trades.dbn``: one trading day per file."""
    return f"glbx-mdp3-{day:%Y%m%d}.trades.dbn"


def encode_day(day: date, roots: Sequence[str], contract_map: ContractMap, seed: int) -> tuple[bytes, int]:
    """The DBN bytes of one trading day and its number of trades."""
    opened, stop = session_window(day)
    parts: list[_Trades] = []
    mappings: list[tuple[int, str, str]] = []
    for root in roots:
        spec = contract_map[root]
        profile = profile_for(root, spec)
        trades, symbols = _root_day(root, spec, profile, _LevelWalk(seed, root, profile), day, seed)
        parts.append(trades)
        mappings.extend((instrument_id(s), spec.parent, s) for s in symbols)
    ids = [m[0] for m in mappings]
    if len(set(ids)) != len(ids):
        raise ValueError(f"instrument id collision among {[m[2] for m in mappings]}")

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    ts_recv, ts_event, iid = cat("ts_recv"), cat("ts_event"), cat("instrument_id")
    order = np.lexsort((iid, ts_event, ts_recv))
    metadata = dbn.Metadata(
        dataset=DATASET,
        start=opened,
        end=stop,
        stype_in=dbn.SType.PARENT,
        stype_out=dbn.SType.INSTRUMENT_ID,
        schema=dbn.Schema.TRADES,
        symbols=sorted({contract_map[r].parent for r in roots}),
    )
    out = [metadata.encode()]
    for iid_, parent, symbol in mappings:
        out.append(bytes(dbn.SymbolMappingMsg(
            publisher_id=PUBLISHER_GLBX, instrument_id=iid_, ts_event=opened,
            stype_in=dbn.SType.PARENT, stype_in_symbol=parent,
            stype_out=dbn.SType.RAW_SYMBOL, stype_out_symbol=symbol,
            start_ts=opened, end_ts=stop,
        )))
    sides = (dbn.Side.ASK, dbn.Side.BID)
    columns = zip(
        iid[order].tolist(), ts_event[order].tolist(), ts_recv[order].tolist(), cat("price")[order].tolist(),
        cat("size")[order].tolist(), cat("side")[order].tolist(), strict=True,
    )
    for seq, (i, t_event, t_recv, price, size, side) in enumerate(columns, start=1):
        out.append(bytes(dbn.TradeMsg(
            publisher_id=PUBLISHER_GLBX, instrument_id=i, ts_event=t_event, price=price, size=size,
            action=dbn.Action.TRADE, side=sides[side], depth=0, ts_recv=t_recv, flags=dbn.F_LAST,
            ts_in_delta=(t_recv - t_event) // 2, sequence=seq,
        )))
    return b"".join(out), len(order)


def write_synthetic_market(
    out_dir: Path,
    roots: Iterable[str],
    start: date,
    days: int,
    seed: int,
    contract_map: ContractMap,
    *,
    on_day: Callable[[date, Path, int], None] | None = None,
) -> list[Path]:
    """Write ``days`` trading days from ``start`` as DBN files in ``out_dir``; returns their paths.

    ``on_day(day, path, trades)`` is called after each file is written.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    roots = sorted(set(roots))
    unknown = [r for r in roots if r not in contract_map]
    if unknown:
        raise ValueError(f"root(s) {', '.join(unknown)} not in the contract map {contract_map.source or ''}".rstrip())
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for day in trading_days(start, days):
        data, trades = encode_day(day, roots, contract_map, seed)
        path = out_dir / day_file_name(day)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # a reader never sees half a day
        written.append(path)
        if on_day is not None:
            on_day(day, path, trades)
    return written


def default_roots(cfg: PineConfig) -> list[str]:
    """Every instrument of the enabled strategies."""
    return sorted({sym for strat in cfg.enabled_strategies().values() for sym in strat.instruments})


def synth_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """``pine synth``: write the synthetic market; 0 on success, 2 on bad arguments."""
    try:
        start = date.fromisoformat(args.start)
    except ValueError:
        print(f"pine synth: --start must be YYYY-MM-DD, got {args.start!r}", file=sys.stderr)
        return 2
    try:
        contract_map = load_contract_map(cfg.contract_map_path)
    except ContractMapError as exc:
        print(f"pine synth: {exc}", file=sys.stderr)
        return 2
    roots = args.symbols or default_roots(cfg)
    out_dir = args.out or RuntimePaths(cfg.runtime_dir).market_dir

    def progress(day: date, path: Path, trades: int) -> None:
        print(f"{day:%a %Y-%m-%d}  {trades:>8,} trades  {path}", flush=True)

    print(f"synthetic market: {len(roots)} roots ({' '.join(sorted(roots))}), seed {args.seed}, {args.days} days")
    try:
        written = write_synthetic_market(out_dir, roots, start, args.days, args.seed, contract_map, on_day=progress)
    except ValueError as exc:
        print(f"pine synth: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} DBN files to {out_dir}")
    return 0
