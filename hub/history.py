"""History → bars → parquet warmup caches (``pine warmup build``, worker warmup, backtests).

Bars are built by the hub's own :class:`hub.aggregator.Aggregator`, so cached history has the
live hub's rules: one-minute bars by ``floor(ts_recv)``, hourly bars by UTC hour, session
daily bars closing at the configured CME close (not Databento's UTC-day ``ohlcv-1d``) and the
same active-contract choice. Two sources:

* **a DBN archive** (the embedded default): the files ``pine synth`` or ``pine hub --record``
  wrote, replayed record by record as ``pine hub --replay`` would;
* **the Databento Historical API** (``DATABENTO_API_KEY``): ``ohlcv-1m``, falling back to
  ``ohlcv-1s`` and then ``trades`` when a schema is not available for the request, each after a
  ``metadata.get_cost`` check against ``warmup.databento_max_cost_usd``. OHLCV records become
  four trades inside their bar (open, high, low, close; the volume on the close), which the
  aggregator turns back into the same minute bars and into hourly and session bars; their
  ``trade_count`` therefore counts source records, not exchange trades. Instrument ids are
  mapped to contract symbols with ``symbology.resolve``. This path needs a key and network
  access; without them it fails with a clear error before any request. ``databento.historical_gateway``
  points it at another server (tests: ``tests/databento_hist_server.py``). HTTP 429 is retried a
  few times; a rejected key, a 5xx, a timeout, a corrupt or truncated DBN stream or a refused
  symbology request fails the build with a HistoryError and writes nothing.

Completeness. Caches record the instant they are complete through (``pine.bar_cache``): the
``through`` asked for, else the end of the data — extended to the session close when the data
reaches into the last hour before it, CME Globex's daily maintenance halt (no trade can
arrive then, so the session's daily bar is complete). Bars ending later are left out.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

import databento_dbn as dbn

from hub.aggregator import NS, Aggregator
from hub.dbn_source import DBNFileError, iter_file
from pine.bar_cache import bars_frame, cache_path, write_bars
from pine.bars import TIMEFRAMES, Bar
from pine.config.schema import PineConfig
from pine.sessions import SessionCalendar

log = logging.getLogger(__name__)

# CME Globex halts trading for the hour before the session close (16:00-17:00 Chicago time).
MAINTENANCE_HALT: Final = timedelta(hours=1)
DATABENTO_SCHEMAS: Final = ("ohlcv-1m", "ohlcv-1s", "trades")
DATABENTO_TIMEOUT_S: Final = 100.0  # the client's own default
RATE_LIMIT_ATTEMPTS: Final = 3
RATE_LIMIT_MAX_WAIT_S: Final = 30.0
_OHLCV_NS: Final = {dbn.RType.OHLCV_1S: NS, dbn.RType.OHLCV_1M: 60 * NS}
_MAX_TS: Final = 2**63 - 1
Progress = Callable[[int, int, str], None]  # (done, total, what): files or records


class HistoryError(RuntimeError):
    """History that cannot be read or fetched; the message says what and how to fix it."""


@dataclass
class HistoryBars:
    """Closed bars per (root, timeframe), complete through ``complete_through``."""

    source: str
    bars: dict[tuple[str, str], list[Bar]] = field(default_factory=dict)
    complete_through: datetime | None = None
    records: int = 0
    detail: str = ""

    def count(self) -> int:
        """Bars held."""
        return sum(len(b) for b in self.bars.values())


@dataclass(frozen=True)
class CacheBuild:
    """What a cache build wrote."""

    source: str
    complete_through: datetime | None
    files: list[Path]
    bars: int
    detail: str


class _Sink:
    """Collects closed bars of the wanted timeframes, up to the completeness instant."""

    def __init__(self, timeframes: Iterable[str]) -> None:
        self.timeframes = set(timeframes)
        self.bars: dict[tuple[str, str], list[Bar]] = {}

    def take(self, bars: Iterable[Bar]) -> None:
        for bar in bars:
            if bar.timeframe in self.timeframes:
                self.bars.setdefault((bar.symbol, bar.timeframe), []).append(bar)

    def complete(self, through: datetime | None) -> dict[tuple[str, str], list[Bar]]:
        if through is None:
            return self.bars
        return {k: [b for b in v if b.end <= through] for k, v in self.bars.items()}


def complete_through(calendar: SessionCalendar, data_end: datetime) -> datetime:
    """How far data ending at ``data_end`` is complete: to the session close if it reached the halt hour."""
    close = calendar.session_end(data_end - timedelta(microseconds=1))
    return close if close - data_end <= MAINTENANCE_HALT else data_end


def _utc_ns(ts: datetime) -> int:
    return int(ts.astimezone(UTC).timestamp()) * NS


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // NS, UTC) + timedelta(microseconds=ns % NS // 1000)


# --------------------------------------------------------------------------- DBN archive


def archive_files(paths: Sequence[Path]) -> list[Path]:
    """DBN files to read in time order: files as given, a directory's ``*.dbn`` / ``*.dbn.zst`` by name."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.name.endswith((".dbn", ".dbn.zst"))))
        elif path.is_file():
            files.append(path)
        else:
            raise HistoryError(f"{path}: no such DBN file or archive directory")
    if not files:
        raise HistoryError(f"no .dbn or .dbn.zst files in {', '.join(map(str, paths))} "
                           "(write some with `pine synth` or `pine hub --record DIR`)")
    return files


def _file_start(path: Path) -> int:
    """Start (ns) from a DBN file's header (its first record)."""
    for record in iter_file(path):
        return int(record.start)
    raise HistoryError(f"{path}: empty DBN file")


def select_files(files: Sequence[Path], since: datetime | None) -> list[Path]:
    """``files`` without those wholly before ``since`` (a file ends where the next one starts)."""
    if since is None or len(files) < 2:
        return list(files)
    cutoff = _utc_ns(since)
    starts = [_file_start(p) for p in files]
    keep = [i for i in range(len(files)) if i == len(files) - 1 or starts[i + 1] > cutoff]
    return [files[i] for i in keep]


def bars_from_archive(files: Sequence[Path], roots: Iterable[str], calendar: SessionCalendar, *,
                      timeframes: Iterable[str] = TIMEFRAMES, through: datetime | None = None,
                      progress: Progress | None = None, stop: Callable[[], bool] = lambda: False) -> HistoryBars:
    """Replay DBN ``files`` through the hub's aggregator; bars of ``roots`` complete through ``through``
    (default: the end of the data, see the module docstring). Raises HistoryError on a bad file."""
    agg = Aggregator(roots, calendar)
    sink = _Sink(timeframes)
    limit = _utc_ns(through) if through is not None else _MAX_TS
    data_end = 0
    reached = False
    for i, path in enumerate(files):
        if stop() or reached:
            break
        try:
            for record in iter_file(path):
                if isinstance(record, dbn.Metadata):
                    if record.end is not None and record.end != dbn.UNDEF_TIMESTAMP:
                        data_end = max(data_end, min(int(record.end), limit))
                    continue
                ts = getattr(record, "ts_recv", None) or record.ts_event
                if ts >= limit:
                    reached = True
                    break
                boundary = agg.on_record(record)
                if boundary is not None:
                    sink.take(boundary.bars)
        except DBNFileError as exc:
            raise HistoryError(str(exc)) from None
        if progress is not None:
            progress(i + 1, len(files), path.name)
    clock = agg.clock
    data_end = max(data_end, _utc_ns(clock) if clock is not None else 0)
    if through is not None:
        ct = through
    elif data_end:
        ct = complete_through(calendar, _utc(data_end))
    else:
        ct = None
    if ct is not None:
        boundary = agg.advance(_utc_ns(ct))
        if boundary is not None:
            sink.take(boundary.bars)
    return HistoryBars("archive", sink.complete(ct), ct, agg.records,
                       f"{len(files)} DBN file(s), {agg.trades:,} trades")


# --------------------------------------------------------------------------- Databento Historical


def ohlcv_trades(rec: Any) -> list[tuple[int, int, int]]:
    """An OHLCV record as (ts, price, size) trades inside its bar: open, high, low, then close with the volume."""
    length = _OHLCV_NS[rec.rtype]
    t = int(rec.ts_event)
    return [(t, rec.open, 0), (t + 1, rec.high, 0), (t + 2, rec.low, 0), (t + length - 1, rec.close, int(rec.volume))]


def bars_from_records(records: Iterable[Any], symbols: dict[int, str], roots: Iterable[str],
                      calendar: SessionCalendar, *, timeframes: Iterable[str] = TIMEFRAMES,
                      through: datetime | None = None) -> HistoryBars:
    """Bars from Databento records (``ohlcv-1m``, ``ohlcv-1s`` or ``trades``) whose instrument ids
    ``symbols`` maps to contract symbols (e.g. a ``DBNStore`` and ``symbology.resolve``)."""
    agg = Aggregator(roots, calendar)
    sink = _Sink(timeframes)
    count = 0
    for rec in records:
        if not count:
            # Registered at the data's time: one-digit contract years (CLZ7, CLF8) resolve near it.
            for iid, raw in symbols.items():
                agg.on_mapping(iid, raw, int(rec.ts_event))
        count += 1
        if isinstance(rec, dbn.OHLCVMsg):
            if rec.rtype not in _OHLCV_NS:
                raise HistoryError(f"unexpected OHLCV record type {rec.rtype}: only ohlcv-1s and ohlcv-1m are used")
            trades = ohlcv_trades(rec)
        elif isinstance(rec, dbn.TradeMsg):
            trades = [(int(rec.ts_recv), rec.price, int(rec.size))]
        else:
            continue
        for ts, price, size in trades:
            boundary = agg.on_trade(rec.instrument_id, ts, price, size)
            if boundary is not None:
                sink.take(boundary.bars)
    clock = agg.clock
    ct = through if through is not None else (complete_through(calendar, clock) if clock is not None else None)
    if ct is not None and (boundary := agg.advance(_utc_ns(ct))) is not None:
        sink.take(boundary.bars)
    return HistoryBars("databento", sink.complete(ct), ct, count)


def resolved_symbols(resolution: dict[str, Any]) -> dict[int, str]:
    """Instrument id → raw symbol from a ``symbology.resolve`` reply (``{"result": {"<id>": [{"s": …}]}}``)."""
    out: dict[int, str] = {}
    for iid, intervals in (resolution.get("result") or {}).items():
        named = [i.get("s") for i in intervals if i.get("s")]
        if named:
            out[int(iid)] = str(named[-1])
    return out


class _Refused(Exception):
    """Databento refused this request (a 4xx other than auth and rate limits): the next schema may do."""


def _one_line(exc: BaseException) -> str:
    # Databento's error messages span lines (case, message, documentation link).
    return " ".join(str(exc).split()) or type(exc).__name__


def _retry_after(exc: Any, attempt: int) -> float:
    """Seconds to wait after a 429: the server's ``Retry-After`` (capped), else a doubling backoff."""
    try:
        return min(max(float(exc.headers.get("Retry-After")), 0.0), RATE_LIMIT_MAX_WAIT_S)
    except (TypeError, ValueError):
        return min(2.0 ** attempt, RATE_LIMIT_MAX_WAIT_S)


def _databento_call(call: Callable[[], Any], what: str, *, timeout_s: float) -> Any:
    """``call()`` (one Historical API request, ``what``), retried on HTTP 429 up to ``RATE_LIMIT_ATTEMPTS``
    times. Raises _Refused for a refusal of this request, HistoryError for everything else that fails."""
    import databento as db
    import requests

    attempt = 1
    while True:
        try:
            return call()
        except db.BentoClientError as exc:
            if exc.http_status == 429 and attempt < RATE_LIMIT_ATTEMPTS:
                wait = _retry_after(exc, attempt)
                log.warning("Databento rate limit (HTTP 429) on %s; retrying in %.1fs (%d/%d)", what, wait, attempt,
                            RATE_LIMIT_ATTEMPTS - 1)
                time.sleep(wait)
                attempt += 1
                continue
            if exc.http_status == 429:
                raise HistoryError(f"Databento kept rate-limiting {what} (HTTP 429, {RATE_LIMIT_ATTEMPTS} attempts); "
                                   "wait a few minutes and build again") from None
            if exc.http_status in (401, 403):
                raise HistoryError(f"Databento rejected the API key on {what} ({_one_line(exc)}); check "
                                   "DATABENTO_API_KEY (or databento.api_key)") from None
            raise _Refused(_one_line(exc)) from None
        except db.BentoServerError as exc:
            raise HistoryError(f"Databento Historical API failed on {what} ({_one_line(exc)}); nothing was written, "
                               "try again later") from None
        except requests.Timeout:
            raise HistoryError(f"Databento Historical API did not answer {what} within {timeout_s:g}s; nothing was "
                               "written, try again later or ask for less (--from, --symbols)") from None
        except db.BentoError as exc:  # e.g. the download broke off or is not DBN
            raise HistoryError(f"Databento {what} failed ({_one_line(exc)}); nothing was written, "
                               "try again") from None
        except OSError as exc:  # requests' connection errors are OSErrors
            raise HistoryError(f"cannot reach the Databento Historical API for {what} ({_one_line(exc)}); check "
                               "network access and databento.historical_gateway") from None


def _download(call: Callable[[], Any], schema: str, *, timeout_s: float) -> list[Any]:
    """Every record of a ``timeseries.get_range`` download (``call``); a corrupt or truncated stream is a
    HistoryError, not fewer bars. Raises _Refused / HistoryError as :func:`_databento_call`."""
    import zstandard
    from databento.common.error import BentoError, BentoWarning

    try:
        store = _databento_call(call, f"timeseries.get_range ({schema})", timeout_s=timeout_s)
        with warnings.catch_warnings():
            # The client only warns when the stream ends inside a record, and drops that record.
            warnings.simplefilter("error", BentoWarning)
            return list(store)
    except (BentoWarning, BentoError, dbn.DBNError, zstandard.ZstdError, ValueError) as exc:
        raise HistoryError(f"Databento sent an unreadable {schema} DBN stream ({_one_line(exc)}); nothing was "
                           "written, build again (report it to Databento if it persists)") from None


def fetch_databento(key: str, dataset: str, parents: Sequence[str], start: datetime, end: datetime, *,
                    max_cost_usd: float, gateway: str | None = None,
                    timeout_s: float = DATABENTO_TIMEOUT_S) -> tuple[str, list[Any], dict[int, str]]:
    """Fetch history for ``parents`` (``ES.FUT`` …): (schema used, records, instrument id → contract).

    Schemas are tried in order ``ohlcv-1m``, ``ohlcv-1s``, ``trades``; a schema the API refuses
    for this request (a 4xx such as 422) or that returns no records moves on to the next. Each
    download follows a ``metadata.get_cost`` estimate within ``max_cost_usd``. A 429 is retried a
    few times. Raises HistoryError when a request would cost more, the key is rejected, the API
    fails, times out (``timeout_s`` per connect / read) or cannot be reached, the data is corrupt,
    or no schema has data. Messages never contain the key.
    """
    import databento as db

    client = db.Historical(key=key, **({"gateway": gateway} if gateway else {}))
    for api in (client.metadata, client.timeseries, client.symbology):
        api.TIMEOUT = timeout_s  # the client's per-request (connect, read) timeout; no parameter for it
    span = f"{', '.join(parents)} from {start.isoformat()} to {end.isoformat()}"
    tried: list[str] = []
    for schema in DATABENTO_SCHEMAS:
        request = {"dataset": dataset, "symbols": list(parents), "schema": schema, "stype_in": "parent",
                   "start": start, "end": end}
        try:
            cost = float(_databento_call(partial(client.metadata.get_cost, **request),
                                         f"metadata.get_cost ({schema})", timeout_s=timeout_s))
            if cost > max_cost_usd:
                raise HistoryError(
                    f"Databento {schema} history for {span} would cost ${cost:.2f}, above "
                    f"warmup.databento_max_cost_usd (${max_cost_usd:.2f}); raise the limit or ask for less "
                    "(--from, --symbols)")
            log.info("Databento %s for %s: estimated cost $%.2f (limit $%.2f); downloading", schema, span, cost,
                     max_cost_usd)
            records = _download(partial(client.timeseries.get_range, **request), schema, timeout_s=timeout_s)
        except _Refused as exc:
            tried.append(f"{schema}: {exc}")
            log.warning("Databento refused %s for this request (%s); trying the next schema", schema, exc)
            continue
        log.info("Databento %s: %d records", schema, len(records))
        if not records:
            tried.append(f"{schema}: no records")
            continue
        ids = sorted({int(r.instrument_id) for r in records})
        try:
            resolution = _databento_call(
                partial(client.symbology.resolve, dataset=dataset, symbols=[str(i) for i in ids],
                        stype_in="instrument_id", stype_out="raw_symbol", start_date=start.date(),
                        end_date=end.date() + timedelta(days=1)),
                "symbology.resolve", timeout_s=timeout_s)
        except _Refused as exc:
            raise HistoryError(f"Databento symbology.resolve refused the instrument ids ({exc}); nothing was "
                               "written") from None
        symbols = resolved_symbols(resolution)
        if missing := [i for i in ids if i not in symbols]:
            raise HistoryError(f"Databento symbology.resolve did not name instrument id(s) {missing[:10]}: their "
                               f"{schema} records cannot be assigned to a contract; nothing was written")
        return schema, records, symbols
    raise HistoryError(f"Databento has no usable history for {span}: " + "; ".join(tried))


# --------------------------------------------------------------------------- caches


def write_caches(history: HistoryBars, cache_dir: Path, roots: Iterable[str], timeframes: Iterable[str]) -> list[Path]:
    """One parquet cache per root and timeframe (empty ones too: the root had no trade)."""
    written = []
    for root in roots:
        for tf in timeframes:
            path = cache_path(cache_dir, root, tf)
            write_bars(path, bars_frame(history.bars.get((root, tf), [])), complete_through=history.complete_through)
            written.append(path)
    return written


def databento_key(cfg: PineConfig) -> str | None:
    """The configured key, else ``DATABENTO_API_KEY``; None when neither is set."""
    configured = cfg.databento.api_key.get_secret_value() if cfg.databento.api_key is not None else None
    return configured or os.environ.get("DATABENTO_API_KEY") or None


def default_start(cfg: PineConfig, end: datetime) -> datetime:
    """Far enough back for every strategy's daily lookback (about 7 calendar days per 5 bars, plus holidays)."""
    bars = max((s.warmup.daily_bars for s in cfg.strategies.values()), default=250)
    return end - timedelta(days=bars * 7 // 5 + 30)


def build_caches(cfg: PineConfig, roots: Sequence[str], *, source: str = "auto", archive: Sequence[Path] = (),
                 timeframes: Sequence[str] = TIMEFRAMES, since: datetime | None = None,
                 through: datetime | None = None, progress: Progress | None = None,
                 stop: Callable[[], bool] = lambda: False) -> CacheBuild:
    """Build the caches of ``roots`` from Databento (``auto`` with a key) or the DBN archive.

    Raises HistoryError when the source has nothing (no key, no archive files) or fails.
    """
    calendar = cfg.sessions.calendar()
    key = databento_key(cfg)
    if source == "auto":
        source = "databento" if key else "archive"
    if source == "databento":
        if not key:
            raise HistoryError("no Databento API key: set DATABENTO_API_KEY (or databento.api_key), or build from "
                               "the DBN archive with --source archive")
        end = through or datetime.now(UTC)
        start = since or default_start(cfg, end)
        parents = [cfg.instruments[r].databento_product_id for r in roots]
        schema, records, symbols = fetch_databento(key, cfg.databento.dataset, parents, start, end,
                                                   max_cost_usd=cfg.warmup.databento_max_cost_usd,
                                                   gateway=cfg.databento.historical_gateway)
        history = bars_from_records(records, symbols, roots, calendar, timeframes=timeframes, through=through)
        history.detail = f"Databento {schema}, {len(records):,} records"
    elif source == "archive":
        dirs = list(archive) or [cfg.runtime_path(cfg.warmup.archive_dir)]
        files = select_files(archive_files(dirs), since)
        history = bars_from_archive(files, roots, calendar, timeframes=timeframes, through=through,
                                    progress=progress, stop=stop)
    else:
        raise HistoryError(f"unknown history source {source!r} (auto, databento or archive)")
    written = write_caches(history, cfg.runtime_path(cfg.warmup.cache_dir), roots, timeframes)
    return CacheBuild(history.source, history.complete_through, written, history.count(), history.detail)


def worker_history_builder(cfg: PineConfig) -> Callable[..., CacheBuild | None]:
    """What a worker calls when its caches are missing: build them from Databento (key set) or the archive.

    Returns None (nothing to build from) when there is no key and no archive file.
    """

    def build(roots: Sequence[str], timeframes: Sequence[str], through: datetime | None,
              stop: Callable[[], bool]) -> CacheBuild | None:
        archive = cfg.runtime_path(cfg.warmup.archive_dir)
        if not databento_key(cfg) and not (archive.is_dir() and any(archive.glob("*.dbn*"))):
            return None
        last = [0.0]

        def progress(done: int, total: int, what: str) -> None:
            if time.monotonic() - last[0] > 5 or done == total:
                last[0] = time.monotonic()
                log.info("building warmup caches: %d/%d files (%s)", done, total, what)

        return build_caches(cfg, list(roots), timeframes=list(timeframes), through=through, progress=progress,
                            stop=stop)

    return build


# --------------------------------------------------------------------------- pine warmup build


def parse_when(text: str, calendar: SessionCalendar, *, end: bool) -> datetime:
    """An ISO 8601 time (UTC unless it says otherwise), or a trading day ``YYYY-MM-DD``: its session
    close when ``end``, else its session start. Raises HistoryError on anything else."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start, close = calendar.session_bounds(datetime(day.year, day.month, day.day, 12, tzinfo=UTC))
            return close if end else start
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise HistoryError(f"expected a trading day (YYYY-MM-DD) or an ISO 8601 time, got {text!r}") from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def warmup_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """``pine warmup build``: 0 when the caches were written, 1 when the source failed, 2 on bad arguments."""
    from tqdm import tqdm

    calendar = cfg.sessions.calendar()
    try:
        since = parse_when(args.since, calendar, end=False) if args.since else None
        through = parse_when(args.through, calendar, end=True) if args.through else None
    except HistoryError as exc:
        print(f"pine warmup build: --from/--through: {exc}", file=sys.stderr)
        return 2
    roots = args.symbols or sorted(cfg.instruments)
    unknown = [r for r in roots if r not in cfg.instruments]
    if unknown:
        print(f"pine warmup build: unknown symbol(s) {', '.join(unknown)}; configured: {' '.join(cfg.instruments)}",
              file=sys.stderr)
        return 2
    bar = tqdm(total=0, unit="file", desc="warmup caches", file=sys.stderr, disable=None)

    def progress(done: int, total: int, what: str) -> None:
        bar.total = total
        bar.set_postfix_str(what, refresh=False)
        bar.update(done - bar.n)

    started = time.monotonic()
    try:
        build = build_caches(cfg, roots, source=args.source, archive=args.archive or (), timeframes=args.timeframes,
                             since=since, through=through, progress=progress)
    except HistoryError as exc:
        bar.close()
        print(f"pine warmup build: {exc}", file=sys.stderr)
        return 1
    bar.close()
    ct = build.complete_through.isoformat() if build.complete_through else "unknown"
    print(f"wrote {len(build.files)} caches ({build.bars:,} bars of {len(roots)} roots: {' '.join(roots)}) to "
          f"{cfg.runtime_path(cfg.warmup.cache_dir)} from the {build.source} ({build.detail}); complete through {ct}; "
          f"{time.monotonic() - started:.1f}s")
    return 0
