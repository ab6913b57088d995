"""``pine hub --record DIR``: the live stream as DBN files that ``pine hub --replay DIR`` replays.

One file per trading session (a new one also at every hub start), named by the UTC time of its
first record — ``glbx-mdp3-20240305T143000.123456Z.live.dbn`` — so that a directory sorts in time
order. Each file is self-contained: a DBN header, then the symbol mappings known when it was
opened, then every record of the stream as received (trades, mappings, system and error
messages), after the replay duplicates of a reconnect were dropped. Replaying the files
therefore rebuilds the live bars.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

import databento_dbn as dbn

from pine.sessions import SessionCalendar

log = logging.getLogger(__name__)

NS: Final = 1_000_000_000


class DailyRecorder:
    """Appends records to the current session's DBN file, opening a new file per session."""

    def __init__(self, directory: Path, calendar: SessionCalendar, dataset: str, parents: list[str]) -> None:
        self.directory = Path(directory)
        self.calendar = calendar
        self.dataset = dataset
        self.parents = sorted(parents)
        self._mappings: dict[int, Any] = {}
        self._file: BinaryIO | None = None
        self._session_end = 0
        self.path: Path | None = None
        self.records = 0
        self.failed: str | None = None
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, rec: Any) -> None:
        """Record one DBN record (mappings are also kept to start the next file)."""
        if self.failed is not None:
            return
        try:
            if isinstance(rec, dbn.SymbolMappingMsg):
                self._mappings[rec.instrument_id] = rec
                if self._file is None:
                    return  # written at the top of the first file
            else:
                ts = rec.ts_index
                if self._file is None or ts >= self._session_end:
                    self._open(ts)
            assert self._file is not None
            self._file.write(bytes(rec))
            self.records += 1
        except OSError as exc:
            self._fail(exc)

    def flush(self) -> None:
        """Push buffered bytes to the file (called about once a second and on close)."""
        if self._file is not None and self.failed is None:
            try:
                self._file.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        """Flush and close the current file."""
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self, ts: int) -> None:
        self.close()
        _, end = self.calendar.session_bounds(datetime.fromtimestamp(ts // NS, UTC))
        self._session_end = int(end.timestamp()) * NS
        micros = ts // 1000
        while (path := self.directory / _file_name(micros)).exists():  # a restart within the same microsecond
            micros += 1  # still sorts after the earlier file
        handle = path.open("xb")
        metadata = dbn.Metadata(dataset=self.dataset, start=ts, stype_in=dbn.SType.PARENT,
                                stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema.TRADES, symbols=self.parents)
        handle.write(metadata.encode())
        for mapping in self._mappings.values():
            handle.write(bytes(mapping))
        self._file, self.path = handle, path
        log.info("recording the live stream to %s", path)

    def _fail(self, exc: OSError) -> None:
        self.failed = f"{self.path}: {exc}"
        log.error("recording stopped: cannot write %s", self.failed)
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def _file_name(micros: int) -> str:
    """``glbx-mdp3-{UTC time to the microsecond}Z.live.dbn``: names sort in time order."""
    stamp = datetime.fromtimestamp(micros // 1_000_000, UTC).strftime("%Y%m%dT%H%M%S")
    return f"glbx-mdp3-{stamp}.{micros % 1_000_000:06d}Z.live.dbn"
