"""``pine logs``: the JSON-lines log files of every Pine process, merged by time.

Each long-running process writes ``<logs dir>/{component}.jsonl`` and its rotated predecessors
``{component}.jsonl.1`` … (``pine.logs``). Files are read oldest first; records of all
components are merged by their time; ``--follow`` keeps printing new records as they are
written (a rotation is noticed and the new file read from its start).
"""

from __future__ import annotations

import argparse
import heapq
import json
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from pine.config.schema import PineConfig

_ROTATED: Final = re.compile(r"^(?P<stem>.+)\.jsonl(?:\.(?P<n>\d+))?$")
_LEVELS: Final = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
FOLLOW_POLL_S: Final = 0.5


@dataclass(frozen=True)
class LogFilter:
    """Which records to show: components (``worker`` matches every ``worker:*``), strategy, symbol, level."""

    components: tuple[str, ...] = ()
    strategy: str | None = None
    symbol: str | None = None
    level: str = "DEBUG"

    def __call__(self, rec: dict[str, Any]) -> bool:
        component = str(rec.get("component", ""))
        if self.components and not any(component == c or component.startswith(f"{c}:") for c in self.components):
            return False
        if self.strategy is not None and rec.get("strategy") != self.strategy:
            return False
        if self.symbol is not None and rec.get("symbol") != self.symbol:
            return False
        return _LEVELS.get(str(rec.get("level")), 0) >= _LEVELS[self.level]


def log_files(log_dir: Path) -> dict[str, list[Path]]:
    """Per component file stem, its files oldest first (``x.jsonl.3``, …, ``x.jsonl.1``, ``x.jsonl``)."""
    found: dict[str, list[tuple[int, Path]]] = {}
    if not log_dir.is_dir():
        return {}
    for path in log_dir.iterdir():
        m = _ROTATED.match(path.name)
        if m and path.is_file():
            found.setdefault(m["stem"], []).append((int(m["n"] or 0), path))
    return {stem: [p for _, p in sorted(files, reverse=True)] for stem, files in sorted(found.items())}


def parse_line(line: str) -> dict[str, Any] | None:
    """One record, or None for a line that is not a log record (a partial write, foreign text)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and "time" in rec and "message" in rec else None


def _records(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if (rec := parse_line(line)) is not None:
                        yield rec
        except FileNotFoundError:
            continue  # rotated away while reading


def merged(log_dir: Path, keep: LogFilter) -> Iterator[dict[str, Any]]:
    """Every record of every file in ``log_dir`` that ``keep`` accepts, in time order."""
    streams = [(r for r in _records(paths) if keep(r)) for paths in log_files(log_dir).values()]
    # ISO 8601 UTC times with a fixed format sort as strings; a process writes its records in time order.
    return heapq.merge(*streams, key=lambda r: str(r["time"]))


def render(rec: dict[str, Any]) -> str:
    """A record as the console's text line (traceback on the following lines)."""
    line = (f"{rec.get('time')} {rec.get('level')} {rec.get('component', '-')} strategy={rec.get('strategy', '-')} "
            f"symbol={rec.get('symbol', '-')} {rec.get('logger', '')}: {rec.get('message', '')}")
    return f"{line}\n{rec['exc']}" if rec.get("exc") else line


@dataclass
class _Tail:
    """Reads the lines appended to one file since the last call, across rotations."""

    path: Path
    offset: int = 0
    inode: int | None = None
    partial: str = field(default="")

    def read(self) -> list[dict[str, Any]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        data = ""
        if self.inode is not None and (stat.st_ino != self.inode or stat.st_size < self.offset):
            # Rotated: the rest of the old file (now ``.1``), then the new file from its start.
            old = self.path.with_name(self.path.name + ".1")
            if old.exists() and old.stat().st_ino == self.inode:
                data = self._read_from(old, self.offset)[0]
            self.offset = 0
        self.inode = stat.st_ino
        more, self.offset = self._read_from(self.path, self.offset)
        lines = (self.partial + data + more).split("\n")
        self.partial = lines.pop()  # an unfinished last line waits for its end
        return [rec for line in lines if (rec := parse_line(line)) is not None]

    @staticmethod
    def _read_from(path: Path, offset: int) -> tuple[str, int]:
        with path.open(encoding="utf-8", errors="replace") as fh:
            fh.seek(offset)
            return fh.read(), fh.tell()


def follow(log_dir: Path, keep: LogFilter, out: TextIO, *, as_json: bool, stop: Any = None) -> None:
    """Print records written after now, every poll's batch in time order, until interrupted (or ``stop()``)."""
    tails: dict[Path, _Tail] = {}
    for paths in log_files(log_dir).values():
        current = paths[-1]
        tails[current] = _Tail(current, offset=current.stat().st_size, inode=current.stat().st_ino)
    while stop is None or not stop():
        for paths in log_files(log_dir).values():
            tails.setdefault(paths[-1], _Tail(paths[-1]))
        batch = [rec for tail in tails.values() for rec in tail.read() if keep(rec)]
        for rec in sorted(batch, key=lambda r: str(r["time"])):
            print(json.dumps(rec, ensure_ascii=False) if as_json else render(rec), file=out, flush=True)
        time.sleep(FOLLOW_POLL_S)


def logs_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """``pine logs``: 0 after printing (or when ``--follow`` is interrupted), 1 when there are no log files."""
    log_dir = cfg.runtime_path(cfg.logging.dir)
    keep = LogFilter(tuple(args.component or ()), args.strategy, args.symbol, args.level)
    if not log_files(log_dir) and not args.follow:
        print(f"pine logs: no log files in {log_dir}", file=sys.stderr)
        return 1
    records = merged(log_dir, keep)
    if args.lines is not None:
        records = iter(list(records)[-args.lines:] if args.lines else [])
    for rec in records:
        print(json.dumps(rec, ensure_ascii=False) if args.json else render(rec))
    if args.follow:
        try:
            follow(log_dir, keep, sys.stdout, as_json=args.json)
        except KeyboardInterrupt:
            return 0
    return 0
