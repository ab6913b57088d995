"""A local Databento live gateway that the real ``databento.Live`` client can talk to (tests, benches).

The protocol, as implemented by databento 0.87 (``databento/live/gateway.py``, ``protocol.py``,
``session.py`` and ``common/cram.py``); every control message is one ``key=value|…`` line:

1. gateway → client: ``lsg_version=…`` (greeting), then ``cram=<challenge>``.
2. client → gateway: ``auth=<sha256("{challenge}|{key}") hex>-<last 5 characters of the key>|dataset=…|
   encoding=dbn|ts_out=0|compression=none|heartbeat_interval_s=…|slow_reader_behavior=…|client=…``.
3. gateway → client: ``success=1|session_id=…`` or ``success=0|error=…`` (and the gateway closes).
4. client → gateway: one or more ``schema=…|stype_in=…|symbols=A,B|start=<ns>|snapshot=0|id=…|is_last=…``,
   then ``start_session=0``.
5. gateway → client: a DBN stream — the metadata header; an ``ErrorMsg`` (SYMBOL_RESOLUTION_FAILED)
   per symbol it does not know; a ``SymbolMappingMsg`` per instrument of the subscribed parents;
   with ``start``, the records already published whose ``ts_event`` ≥ start (intraday replay,
   filtered on ``ts_event`` as Databento does for trades) and a ``SystemMsg`` REPLAY_COMPLETED;
   then records as the market publishes them, and a heartbeat ``SystemMsg`` after every
   ``heartbeat_interval_s`` without records.

The market (:class:`RecordMarket`) is a list of DBN records (mappings and trades, in stream
order) published one by one as a connected session streams them — time stands still while no
client is connected — or paced by a clock. Hooks make faults happen at exact points of the
stream: drop the connection (RST) or close it gracefully before a given record, with records
published meanwhile that the client misses; go silent without closing; send an ``ErrorMsg``;
hold the market at a record.
A day file's mappings sit where the day starts, so a session spanning days receives the next
contract's mappings mid-session, as the front contract rolls.

Everything runs on 127.0.0.1 on a free port in daemon threads with bounded waits; ``stop()``
(or leaving the ``with`` block) closes every socket, and a gateway stops by itself after
``lifetime_s``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol

import databento_dbn as dbn

TEST_KEY: Final = "db-" + "PineLocalTestGateway".ljust(29, "0")
DATASET: Final = "GLBX.MDP3"
SEND_BATCH: Final = 512
SOCKET_TIMEOUT_S: Final = 10.0
NS: Final = 1_000_000_000


class Clock(Protocol):
    """Time source for a paced market (same shape as ``hub.clock.Clock``)."""

    def now_ns(self) -> int: ...

    def real_seconds(self, span_ns: int) -> float | None: ...


class ManualClock:
    """A clock that only moves when told to (tests drive the hub's wall clock with it)."""

    def __init__(self, now_ns: int = 0) -> None:
        self._now = now_ns

    def now_ns(self) -> int:
        """The time last set."""
        return self._now

    def set(self, now_ns: int) -> None:
        """Move the clock (never backwards)."""
        self._now = max(self._now, now_ns)

    def real_seconds(self, span_ns: int) -> float | None:
        """A manual clock does not follow real time."""
        return None


# --------------------------------------------------------------------------- the market


def load_records(paths: Iterable[Path]) -> list[Any]:
    """The mappings and trades of DBN files, in file order (headers left out)."""
    out: list[Any] = []
    for path in paths:
        for rec in dbn.DBNDecoder().write_and_decode(Path(path).read_bytes())[1:]:
            if isinstance(rec, (dbn.SymbolMappingMsg, dbn.TradeMsg)):
                out.append(rec)
    return out


def shifted(records: Iterable[Any], delta_ns: int) -> list[Any]:
    """Copies of ``records`` with every timestamp moved by ``delta_ns`` (to replay a day "now")."""
    out: list[Any] = []
    for r in records:
        if isinstance(r, dbn.TradeMsg):
            out.append(dbn.TradeMsg(
                publisher_id=r.publisher_id, instrument_id=r.instrument_id, ts_event=r.ts_event + delta_ns,
                price=r.price, size=r.size, action=r.action, side=r.side, depth=r.depth,
                ts_recv=r.ts_recv + delta_ns, flags=r.flags, ts_in_delta=r.ts_in_delta, sequence=r.sequence))
        else:
            out.append(dbn.SymbolMappingMsg(
                publisher_id=r.publisher_id, instrument_id=r.instrument_id, ts_event=r.ts_event + delta_ns,
                stype_in=dbn.SType.PARENT, stype_in_symbol=r.stype_in_symbol, stype_out=dbn.SType.RAW_SYMBOL,
                stype_out_symbol=r.stype_out_symbol, start_ts=r.start_ts + delta_ns, end_ts=r.end_ts + delta_ns))
    return out


@dataclass
class Fault:
    """A fault injected into the stream (see :meth:`RecordMarket.drop_at` and friends)."""

    at: int  # market index the fault happens before
    kind: str  # "drop", "close", "silence", "error" or "error_only"
    missed: int = 0
    code: Any = None
    message: str = ""


class RecordMarket:
    """DBN records published in order; see the module docstring.

    ``clock``: publish a record only once ``clock.now_ns()`` has reached its ``ts_recv``
    (real-time or scaled markets); without one, records are published as fast as a session
    streams them.
    """

    def __init__(self, records: Sequence[Any], *, clock: Clock | None = None) -> None:
        self.records = list(records)
        self._payload = [bytes(r) for r in self.records]
        self._ts = [r.ts_recv if isinstance(r, dbn.TradeMsg) else r.ts_event for r in self.records]
        self._parent: dict[int, str] = {}
        self._record_parent: list[str | None] = []
        for r in self.records:
            if isinstance(r, dbn.SymbolMappingMsg):
                self._parent[r.instrument_id] = r.stype_in_symbol
                self._record_parent.append(r.stype_in_symbol)
            else:
                self._record_parent.append(self._parent.get(r.instrument_id))
        self.parents = frozenset(self._parent.values())
        self.clock = clock
        self.published = 0
        self._limit = len(self.records)
        self._faults: list[Fault] = []
        self.cond = threading.Condition()

    def __len__(self) -> int:
        return len(self.records)

    # --- test controls

    def hold(self, index: int) -> None:
        """Publish nothing from record ``index`` on until :meth:`release`."""
        with self.cond:
            self._limit = index
            self.cond.notify_all()

    def release(self, index: int | None = None) -> None:
        """Publish up to record ``index`` (default: all)."""
        with self.cond:
            self._limit = len(self.records) if index is None else index
            self.cond.notify_all()

    def advance_to(self, index: int) -> None:
        """Count records before ``index`` as published already (a session without replay starts there)."""
        with self.cond:
            self.published = max(self.published, index)

    def drop_at(self, index: int, *, missed: int = 0) -> None:
        """Before record ``index``: reset the connection (RST); ``missed`` records get published meanwhile."""
        self._add(Fault(index, "drop", missed))

    def close_at(self, index: int, *, missed: int = 0) -> None:
        """Before record ``index``: close the connection gracefully (FIN), as a gateway restart does."""
        self._add(Fault(index, "close", missed))

    def silence_at(self, index: int) -> None:
        """Before record ``index``: send nothing more, not even heartbeats, and keep the connection open (a dead
        connection the client only notices by its heartbeat timeout)."""
        self._add(Fault(index, "silence"))

    def error_at(self, index: int, code: Any, message: str, *, close: bool = True) -> None:
        """Before record ``index``: send an ``ErrorMsg`` with ``code``, then close gracefully if ``close``."""
        self._add(Fault(index, "error" if close else "error_only", code=code, message=message))

    def _add(self, fault: Fault) -> None:
        with self.cond:
            self._faults.append(fault)
            self._faults.sort(key=lambda f: f.at)

    def now_ns(self) -> int:
        """Market time: the clock if paced, else the time of the last published record."""
        if self.clock is not None:
            return self.clock.now_ns()
        return self._ts[self.published - 1] if self.published else 0

    # --- used by sessions

    def mappings(self, parents: frozenset[str]) -> list[bytes]:
        """The latest published mapping of every instrument of ``parents``."""
        latest: dict[int, bytes] = {}
        for i in range(self.published):
            r = self.records[i]
            if isinstance(r, dbn.SymbolMappingMsg) and r.stype_in_symbol in parents:
                latest[r.instrument_id] = self._payload[i]
        return list(latest.values())

    def replay(self, start: int, parents: frozenset[str]) -> list[bytes]:
        """Published trades of ``parents`` with ``ts_event ≥ start``, in stream order."""
        return [self._payload[i] for i in range(self.published)
                if isinstance(self.records[i], dbn.TradeMsg) and self.records[i].ts_event >= start
                and self._record_parent[i] in parents]

    def next_batch(self, parents: frozenset[str]) -> tuple[list[bytes], Fault | None]:
        """Publish the records due now, up to the next fault; returns those of ``parents`` and the fault reached."""
        with self.cond:
            fault = self._faults[0] if self._faults and self._faults[0].at <= self.published else None
            if fault is not None:
                self._faults.pop(0)
                self.published = min(self.published + fault.missed, len(self.records))
                return [], fault
            end = min(self.published + SEND_BATCH, self._limit, len(self.records))
            if self._faults:
                end = min(end, max(self._faults[0].at, self.published))
            if self.clock is not None:
                now = self.clock.now_ns()
                stop = self.published
                while stop < end and self._ts[stop] <= now:
                    stop += 1
                end = stop
            start, self.published = self.published, max(end, self.published)
        return [self._payload[i] for i in range(start, end) if self._record_parent[i] in parents], None

    def wait(self, timeout: float) -> None:
        """Until the market may have more to publish, or ``timeout`` seconds."""
        if self.clock is not None and self.published < len(self._ts):
            real = self.clock.real_seconds(self._ts[self.published] - self.clock.now_ns())
            # A manual clock (no real-time rate): look again soon.
            timeout = min(timeout, max(real, 0.0005) if real is not None else 0.01)
        with self.cond:
            self.cond.wait(timeout)


class Market(Protocol):
    """What a gateway session needs from a market (:class:`RecordMarket`, or a bench's generator)."""

    parents: frozenset[str]
    cond: threading.Condition

    def now_ns(self) -> int:
        """Market time (heartbeats and error messages carry it)."""
        ...

    def mappings(self, parents: frozenset[str]) -> list[bytes]:
        """Encoded ``SymbolMappingMsg`` of every instrument of ``parents`` published so far."""
        ...

    def replay(self, start: int, parents: frozenset[str]) -> list[bytes]:
        """Encoded trades already published with ``ts_event ≥ start``."""
        ...

    def next_batch(self, parents: frozenset[str]) -> tuple[list[bytes], Fault | None]:
        """Publish what is due now; the encoded records of ``parents`` and a fault to inject, if any."""
        ...

    def wait(self, timeout: float) -> None:
        """Until more may be due, at most ``timeout`` seconds."""
        ...


# --------------------------------------------------------------------------- the gateway


@dataclass
class SessionLog:
    """What one client connection did (tests assert on it)."""

    number: int
    authenticated: bool = False
    auth_error: str | None = None
    heartbeat_interval_s: int | None = None
    subscriptions: list[dict[str, str]] = field(default_factory=list)
    replay_start: int | None = None
    replayed: int = 0
    sent: int = 0
    ended_by: str = ""


class _Ended(Exception):
    """The session is over (client gone, fault injected, gateway stopping)."""


class LiveGateway:
    """Serves a market to Databento live clients on 127.0.0.1 (see the module docstring)."""

    def __init__(self, market: Market, *, key: str = TEST_KEY, dataset: str = DATASET,
                 lifetime_s: float = 600.0) -> None:
        self.market = market
        self._deadline = time.monotonic() + lifetime_s  # a forgotten gateway stops by itself
        self.key = key
        self.dataset = dataset
        self.sessions: list[SessionLog] = []
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def __enter__(self) -> LiveGateway:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> LiveGateway:
        """Accept connections in the background."""
        thread = threading.Thread(target=self._accept_loop, name="live-gateway", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Close the listener and every connection; wait (bounded) for the threads."""
        self._stop.set()
        with self.market.cond:
            self.market.cond.notify_all()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.close()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def wait_sessions(self, count: int, timeout: float = 20.0) -> SessionLog:
        """The ``count``-th session, once it has authenticated (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.sessions) >= count and self.sessions[count - 1].authenticated:
                return self.sessions[count - 1]
            time.sleep(0.01)
        raise AssertionError(f"no session {count} within {timeout}s: {self.sessions}")

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            if time.monotonic() > self._deadline:
                self._stop.set()  # every session loop sees it and ends
                return
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            log = SessionLog(next(self._ids))
            self.sessions.append(log)
            thread = threading.Thread(target=self._serve, args=(conn, log), name=f"gateway-session-{log.number}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket, log: SessionLog) -> None:
        with self._lock:
            self._sockets.add(conn)
        conn.settimeout(SOCKET_TIMEOUT_S)
        reader = _LineReader(conn)
        try:
            parents, start = self._handshake(conn, reader, log)
            self._stream(conn, log, parents, start)
        except _Ended as ended:
            log.ended_by = log.ended_by or str(ended)
        except OSError as exc:
            log.ended_by = log.ended_by or f"socket: {exc}"
        finally:
            with self._lock:
                self._sockets.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _handshake(
        self, conn: socket.socket, reader: _LineReader, log: SessionLog
    ) -> tuple[frozenset[str], int | None]:
        challenge = secrets.token_hex(16)
        conn.sendall(f"lsg_version=0.0.0-pine-test\ncram={challenge}\n".encode())
        auth = _fields(reader.line())
        expected = f"{hashlib.sha256(f'{challenge}|{self.key}'.encode()).hexdigest()}-{self.key[-5:]}"
        problem = None
        if auth.get("auth") != expected:
            problem = "Authentication failed."
        elif auth.get("dataset") != self.dataset:
            problem = f"Unknown dataset {auth.get('dataset')!r}"
        elif auth.get("encoding", "dbn") != "dbn" or auth.get("compression", "none") != "none":
            problem = "Only uncompressed DBN is supported by this test gateway"
        if problem is not None:
            log.auth_error = problem
            conn.sendall(f"success=0|error={problem}\n".encode())
            raise _Ended("authentication refused")
        log.authenticated = True
        log.heartbeat_interval_s = int(auth.get("heartbeat_interval_s") or 30)
        conn.sendall(f"success=1|session_id={log.number}\n".encode())
        symbols: list[str] = []
        start: int | None = None
        while True:
            line = _fields(reader.line())
            if "start_session" in line:
                break
            log.subscriptions.append(line)
            if line.get("schema") != "trades" or line.get("stype_in") != "parent":
                raise _Ended(f"unsupported subscription {line}")
            symbols += [s for s in line.get("symbols", "").split(",") if s]
            if line.get("start"):
                start = int(line["start"])
        log.replay_start = start
        return frozenset(symbols), start

    def _stream(self, conn: socket.socket, log: SessionLog, symbols: frozenset[str], start: int | None) -> None:
        market = self.market
        metadata = dbn.Metadata(dataset=self.dataset, start=start if start is not None else market.now_ns(),
                                stype_in=dbn.SType.PARENT, stype_out=dbn.SType.INSTRUMENT_ID,
                                schema=dbn.Schema.TRADES, symbols=sorted(symbols))
        head = [metadata.encode()]
        for unknown in sorted(symbols - market.parents):
            head.append(bytes(dbn.ErrorMsg(market.now_ns(), f"Failed to resolve symbol: {unknown}", is_last=True,
                                           code=dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED)))
        parents = symbols & market.parents
        with market.cond:  # a consistent snapshot: nothing is published while it is taken
            head += market.mappings(parents)
            if start is not None:
                replayed = market.replay(start, parents)
                log.replayed = len(replayed)
                head += replayed
                head.append(bytes(dbn.SystemMsg(market.now_ns(), "Finished trades replay",
                                                code=dbn.SystemCode.REPLAY_COMPLETED)))
        conn.sendall(b"".join(head))
        heartbeat_s = log.heartbeat_interval_s or 30
        last_sent = time.monotonic()
        while not self._stop.is_set():
            batch, fault = market.next_batch(parents)
            if fault is not None:
                self._fault(conn, log, fault)
            if batch:
                conn.sendall(b"".join(batch))
                log.sent += len(batch)
                last_sent = time.monotonic()
                continue
            if time.monotonic() - last_sent >= heartbeat_s:
                conn.sendall(bytes(dbn.SystemMsg(market.now_ns(), "Heartbeat", code=dbn.SystemCode.HEARTBEAT)))
                last_sent = time.monotonic()
            market.wait(min(0.05, heartbeat_s))
            if _peer_closed(conn):
                raise _Ended("client closed")
        raise _Ended("gateway stopped")

    def _fault(self, conn: socket.socket, log: SessionLog, fault: Fault) -> None:
        if fault.kind == "silence":
            while not self._stop.is_set():
                if _peer_closed(conn):
                    log.ended_by = "silence, closed by the client"
                    raise _Ended(log.ended_by)
                time.sleep(0.05)
            log.ended_by = "silence"
            raise _Ended("silence")
        if fault.kind in ("error", "error_only"):
            conn.sendall(bytes(dbn.ErrorMsg(self.market.now_ns(), fault.message, is_last=True, code=fault.code)))
            if fault.kind == "error_only":
                return
        if fault.kind == "drop":
            # SO_LINGER 0: close() sends RST, the client sees "connection reset".
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            conn.shutdown(socket.SHUT_RDWR)
        log.ended_by = fault.kind
        raise _Ended(fault.kind)


class _LineReader:
    """Newline-terminated control lines from a socket."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""

    def line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = self.conn.recv(4096)
            if not chunk:
                raise _Ended("client closed during the handshake")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


def _fields(line: str) -> dict[str, str]:
    return {k: v for k, _, v in (part.partition("=") for part in line.strip().split("|"))}


def _peer_closed(conn: socket.socket) -> bool:
    """Whether the client has closed its side (a readable socket with nothing to read)."""
    conn.setblocking(False)
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    finally:
        conn.settimeout(SOCKET_TIMEOUT_S)
