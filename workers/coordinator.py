"""Portfolio coordinator: portfolio-wide ``max_positions`` and the daily stop, shared in Redis.

Every worker (one per strategy, the *owner*) holds one *slot* per position it has or is opening,
in the hash ``portfolio:slots`` (``{strategy}:{symbol}`` → owner, client order id, state). The
hash's length is what ``max_positions`` limits, across all strategies:

- An entry first **reserves** a slot. One Lua script checks the daily stop, the capacity and
  writes the reservation, so two workers can never both take the last slot (no read-then-write).
- The slot becomes **open** when the entry fills and is **released** when the position closes or
  the entry order fails.
- A reservation whose owner is dead is **reconciled**: each owner refreshes a lease (in
  ``portfolio:leases``, with its heartbeat); when the portfolio is full, a reservation whose
  owner's lease has expired is removed (and an event says so). An *open* slot is never taken
  away: the position exists at the broker whatever happened to the worker. A restarted worker
  re-syncs its own slots from its DB (``sync``).

Daily stop: realised P&L is summed per CME trading day (``portfolio:day:{day}``, which is why it
resets at the session close); each trade counts once (its id goes into a set in the same script).
When the sum reaches ``-daily_stop_loss`` the day is marked stopped, a ``daily_stop_hit`` event is
emitted once, and no slot is reserved for an entry signalled in that trading day by anyone.
Everything is in Redis, so it survives worker restarts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

import redis

from pine import redis_names
from pine.config.schema import PineConfig

log = logging.getLogger(__name__)

EVENTS_MAXLEN: Final = 10_000
# Day keys outlive their day long enough for reports and late trades, then expire.
DAY_TTL_S: Final = 8 * 24 * 3600

_NOW_MS = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS: slots, leases, day hash, events. ARGV: owner, slot, cid, max_positions, lease_ttl_ms.
_RESERVE = _NOW_MS + """
redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[5]))
if redis.call('HEXISTS', KEYS[3], 'stopped') == 1 then return {0, 'daily_stop'} end
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if cur then
  if cjson.decode(cur).owner == ARGV[1] then return {1, 'held'} end
  return {0, 'held_by_other'}
end
local max = tonumber(ARGV[4])
local n = redis.call('HLEN', KEYS[1])
if n >= max then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local d = cjson.decode(all[i + 1])
    if d.state == 'reserved' and d.owner ~= ARGV[1] then
      local lease = tonumber(redis.call('HGET', KEYS[2], d.owner) or '0')
      if lease < now then
        redis.call('HDEL', KEYS[1], all[i])
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', 'kind', 'reservation_reconciled',
                   'slot', all[i], 'owner', d.owner, 'client_order_id', d.cid, 'reason', 'owner lease expired')
        n = n - 1
      end
    end
  end
  if n >= max then return {0, 'max_positions'} end
end
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode({owner = ARGV[1], cid = ARGV[3], state = 'reserved', since = now}))
return {1, 'reserved'}
"""

# KEYS: slots. ARGV: owner, slot, new state. Only the owner's own slot changes.
_SET_STATE = """
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if not cur then return 0 end
local d = cjson.decode(cur)
if d.owner ~= ARGV[1] then return 0 end
d.state = ARGV[3]
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(d))
return 1
"""

_RELEASE = """
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if not cur or cjson.decode(cur).owner ~= ARGV[1] then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[2])
"""

# KEYS: day hash, day trade set, events. ARGV: trade id, pnl, limit, ttl_s, owner, day.
_RECORD_PNL = _NOW_MS + """
local new = redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local realized
if new == 1 then
  realized = redis.call('HINCRBYFLOAT', KEYS[1], 'realized', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
else
  realized = redis.call('HGET', KEYS[1], 'realized') or '0'
end
local hit = 0
if tonumber(realized) <= -tonumber(ARGV[3]) and redis.call('HSETNX', KEYS[1], 'stopped', now) == 1 then
  hit = 1
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'kind', 'daily_stop_hit', 'trading_day', ARGV[6],
             'realized', realized, 'limit', ARGV[3], 'by', ARGV[5], 'trade_id', ARGV[1])
end
return {realized, hit, redis.call('HEXISTS', KEYS[1], 'stopped')}
"""

# KEYS: slots, leases. ARGV: owner, lease_ttl_ms, desired JSON {slot: {cid, state}}.
# Makes the owner's slots exactly ``desired`` (positions exist whatever the capacity says).
_SYNC = _NOW_MS + """
redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[2]))
local desired = cjson.decode(ARGV[3])
local removed, added = {}, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local d = cjson.decode(all[i + 1])
  if d.owner == ARGV[1] and desired[all[i]] == nil then
    redis.call('HDEL', KEYS[1], all[i])
    table.insert(removed, all[i])
  end
end
for slot, want in pairs(desired) do
  local cur = redis.call('HGET', KEYS[1], slot)
  local d = cur and cjson.decode(cur)
  if not d or d.state ~= want.state or d.cid ~= want.cid then
    table.insert(added, slot)
    redis.call('HSET', KEYS[1], slot, cjson.encode({owner = ARGV[1], cid = want.cid, state = want.state,
                                                     since = (d and d.since) or now}))
  end
end
return {cjson.encode(added), cjson.encode(removed), redis.call('HLEN', KEYS[1])}
"""


@dataclass(frozen=True)
class Reservation:
    """The answer to a reservation: granted or not, and why (``reserved``, ``held``, ``daily_stop``,
    ``max_positions``, ``held_by_other``)."""

    granted: bool
    reason: str


@dataclass(frozen=True)
class Slot:
    """One slot of the portfolio: ``{owner}:{symbol}``, its order, ``reserved`` or ``open``."""

    key: str
    owner: str
    client_order_id: str
    state: str
    since_ms: int

    @property
    def symbol(self) -> str:
        """The symbol part of the key."""
        return self.key.split(":", 1)[1]


@dataclass(frozen=True)
class DayPnl:
    """Realised P&L of one trading day across strategies; ``hit_now`` when this call hit the stop."""

    trading_day: date
    realized: float
    stopped: bool
    hit_now: bool = False


@dataclass(frozen=True)
class SyncResult:
    """What ``sync`` changed (slots written, slots released) and the portfolio's slot count afterwards."""

    added: list[str]
    removed: list[str]
    total: int


class PortfolioCoordinator:
    """The view of one owner (a strategy) on the shared portfolio state."""

    def __init__(self, client: redis.Redis, owner: str, *, max_positions: int, daily_stop_loss: float,
                 lease_ttl_s: float) -> None:
        if ":" in owner:
            raise ValueError(f"an owner name cannot contain ':' ({owner!r})")
        self.client = client
        self.owner = owner
        self.max_positions = max_positions
        self.daily_stop_loss = daily_stop_loss
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        self._reserve = client.register_script(_RESERVE)
        self._set_state = client.register_script(_SET_STATE)
        self._release = client.register_script(_RELEASE)
        self._record_pnl = client.register_script(_RECORD_PNL)
        self._sync = client.register_script(_SYNC)

    @classmethod
    def from_config(cls, client: redis.Redis, owner: str, cfg: PineConfig) -> PortfolioCoordinator:
        """Limits from ``portfolio``; the lease lasts as long as the worker's heartbeat TTL."""
        return cls(client, owner, max_positions=cfg.portfolio.max_positions,
                   daily_stop_loss=cfg.portfolio.daily_stop_loss, lease_ttl_s=cfg.heartbeat.ttl)

    def slot_key(self, symbol: str) -> str:
        """``{owner}:{symbol}``."""
        return f"{self.owner}:{symbol}"

    def touch(self) -> None:
        """Refresh this owner's lease (called with every heartbeat)."""
        t = self.client.time()
        now_ms = int(t[0]) * 1000 + int(t[1]) // 1000
        self.client.hset(redis_names.PORTFOLIO_LEASES, self.owner, now_ms + self.lease_ttl_ms)

    def reserve(self, symbol: str, client_order_id: str, trading_day: date) -> Reservation:
        """Atomically take a slot for an entry signalled in ``trading_day`` (see the module docstring)."""
        granted, reason = self._reserve(
            keys=[redis_names.PORTFOLIO_SLOTS, redis_names.PORTFOLIO_LEASES, redis_names.portfolio_day(trading_day),
                  redis_names.PORTFOLIO_EVENTS],
            args=[self.owner, self.slot_key(symbol), client_order_id, self.max_positions, self.lease_ttl_ms],
        )
        return Reservation(bool(granted), _text(reason))

    def confirm(self, symbol: str) -> bool:
        """The entry filled: the reservation becomes an open position."""
        return bool(self._set_state(keys=[redis_names.PORTFOLIO_SLOTS], args=[self.owner, self.slot_key(symbol),
                                                                              "open"]))

    def hold(self, symbol: str, client_order_id: str) -> None:
        """Take a slot without checking capacity or the daily stop: for an entry the broker already has
        (found after a restart), which exists whatever the limits say."""
        t = self.client.time()
        since = int(t[0]) * 1000 + int(t[1]) // 1000
        self.client.hsetnx(redis_names.PORTFOLIO_SLOTS, self.slot_key(symbol), json.dumps(
            {"owner": self.owner, "cid": client_order_id, "state": "reserved", "since": since}))

    def release(self, symbol: str) -> bool:
        """The position closed or its entry failed: free the slot (only this owner's)."""
        return bool(self._release(keys=[redis_names.PORTFOLIO_SLOTS], args=[self.owner, self.slot_key(symbol)]))

    def record_pnl(self, trading_day: date, trade_id: str, net_pnl: float) -> DayPnl:
        """Add a closed trade's P&L to its trading day (once per trade id); may hit the daily stop."""
        realized, hit, stopped = self._record_pnl(
            keys=[redis_names.portfolio_day(trading_day), redis_names.portfolio_day_trades(trading_day),
                  redis_names.PORTFOLIO_EVENTS],
            args=[trade_id, repr(float(net_pnl)), repr(float(self.daily_stop_loss)), DAY_TTL_S, self.owner,
                  trading_day.isoformat()],
        )
        value = float(_text(realized))
        return DayPnl(trading_day, value, bool(stopped), bool(hit))

    def slots(self) -> list[Slot]:
        """Every slot of the portfolio (all owners)."""
        return sorted((_slot(_text(k), _text(v)) for k, v in
                       self.client.hgetall(redis_names.PORTFOLIO_SLOTS).items()), key=lambda s: s.key)

    def owned(self) -> dict[str, Slot]:
        """This owner's slots by symbol."""
        return {s.symbol: s for s in self.slots() if s.owner == self.owner}

    def sync(self, open_positions: Mapping[str, str], reservations: Mapping[str, str]) -> SyncResult:
        """Make this owner's slots exactly ``open_positions`` + ``reservations`` (symbol → client order id).

        Used when a worker (re)starts trading: positions restored from its DB get their slots back
        (even beyond ``max_positions``: they exist), and slots it no longer has are released.
        """
        desired: dict[str, dict[str, Any]] = {self.slot_key(s): {"cid": cid, "state": "open"}
                                              for s, cid in open_positions.items()}
        desired.update({self.slot_key(s): {"cid": cid, "state": "reserved"} for s, cid in reservations.items()
                        if s not in open_positions})
        added, removed, total = self._sync(keys=[redis_names.PORTFOLIO_SLOTS, redis_names.PORTFOLIO_LEASES],
                                           args=[self.owner, self.lease_ttl_ms, json.dumps(desired or {})])
        return SyncResult(_json_list(added), _json_list(removed), int(total))

    def emit(self, kind: str, **fields: object) -> None:
        """Add an event to ``portfolio:events`` (never raises: events must not stop trading)."""
        try:
            self.client.xadd(redis_names.PORTFOLIO_EVENTS,
                             {"kind": kind, "owner": self.owner, **{k: str(v) for k, v in fields.items()}},
                             maxlen=EVENTS_MAXLEN, approximate=True)
        except redis.RedisError as exc:
            log.warning("could not record %s event in Redis: %s", kind, exc)


def _text(v: bytes | str | int) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _json_list(v: bytes | str) -> list[str]:
    # cjson encodes an empty Lua table as an object.
    decoded = json.loads(_text(v))
    return sorted(decoded) if isinstance(decoded, list) else []


def _slot(key: str, raw: str) -> Slot:
    d = json.loads(raw)
    return Slot(key, str(d.get("owner", "")), str(d.get("cid", "")), str(d.get("state", "")),
                int(d.get("since", 0)))
