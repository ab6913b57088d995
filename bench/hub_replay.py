"""Hub replay throughput next to the raw DBN decode rate of the same files, measured in one run.

    .venv/bin/python bench/hub_replay.py                 # a fresh synthetic market (5 days, enabled roots)
    .venv/bin/python bench/hub_replay.py --days 10
    .venv/bin/python bench/hub_replay.py --file runtime/market/*.dbn

Prints figures, asserts nothing. Redis is a private server started for the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TypeVar

import databento_dbn

from hub.aggregator import Aggregator
from hub.dbn_source import CHUNK_SIZE, iter_records
from hub.main import configured_roots, run_replay
from hub.synthetic import default_roots, write_synthetic_market
from pine.config import load_config
from pine.contracts import load_contract_map
from pine.redis_server import RedisServer, connect

T = TypeVar("T")


def raw_decode(files: Sequence[Path]) -> int:
    """Records decoded by ``DBNDecoder`` alone, in the hub's chunk size."""
    count = 0
    for path in files:
        decoder = databento_dbn.DBNDecoder()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                count += len(decoder.write_and_decode(chunk))
    return count


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the seconds it took."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, nargs="+", help="DBN files to replay (default: a synthetic market)")
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--start", default="2024-03-04")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--roots", nargs="+", help="roots of the synthetic market (default: enabled strategies')")
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)

    cfg = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="pine-bench-") as tmp:
        cfg = cfg.model_copy(update={"runtime_dir": Path(tmp) / "runtime"})
        if args.file:
            files = list(args.file)
        else:
            roots = args.roots or default_roots(cfg)
            contract_map = load_contract_map(cfg.contract_map_path)
            files, gen_s = timed(lambda: write_synthetic_market(
                Path(tmp) / "market", roots, date.fromisoformat(args.start), args.days, args.seed, contract_map))
            print(f"synthetic market: {len(roots)} roots x {args.days} days written in {gen_s:.1f}s")
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        print(f"input: {len(files)} file(s), {size_mb:.1f} MB")

        records, raw_s = timed(lambda: raw_decode(files))
        sourced, source_s = timed(lambda: sum(1 for _ in iter_records(files)))

        def aggregate() -> int:
            agg = Aggregator(configured_roots(cfg), cfg.sessions.calendar())
            for record in iter_records(files):
                agg.on_record(record)
            return agg.bars_closed + len(agg.flush().bars)

        bars, agg_s = timed(aggregate)
        with RedisServer() as server:
            client = connect(server.url)
            stats = run_replay(cfg, files, client)
            client.close()

    print()
    print(f"{'stage':<44}{'seconds':>9}{'records/s':>13}{'trades/s':>13}{'bars/s':>11}")
    print(f"{'raw DBN decode (databento_dbn.DBNDecoder)':<44}{raw_s:>9.2f}{records / raw_s:>13,.0f}")
    print(f"{'hub.dbn_source (decoder + framing check)':<44}{source_s:>9.2f}{sourced / source_s:>13,.0f}")
    print(f"{'aggregation only (no Redis)':<44}{agg_s:>9.2f}{records / agg_s:>13,.0f}"
          f"{stats.trades / agg_s:>13,.0f}{bars / agg_s:>11,.0f}")
    print(f"{'hub replay into Redis (--speed max)':<44}{stats.elapsed_s:>9.2f}{stats.records / stats.elapsed_s:>13,.0f}"
          f"{stats.trades / stats.elapsed_s:>13,.0f}{stats.bars_published / stats.elapsed_s:>11,.0f}")
    print(f"\n{stats.records:,} records, {stats.trades:,} trades, {stats.bars_published:,} bars published")
    return 0


if __name__ == "__main__":
    sys.exit(main())
