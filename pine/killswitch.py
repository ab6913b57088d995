"""The portfolio killswitch: tiered, stored in Redis, mirrored to a file, floored by ``POLICY_KILLSWITCH``.

Tiers, from mild to drastic (every worker checks the state before every order):

- ``off``: normal trading.
- ``reduce_only``: exits only. Strategy exits and protective stops go out; entries are blocked.
- ``halt``: nothing is sent: no entries, no exits, no stops (the legacy ``POLICY_KILLSWITCH=true``:
  "no orders will be placed"). Positions stay as they are; use ``reduce_only`` to let them close.
- ``flatten``: every worker closes its open positions at market; nothing else is sent. When the
  whole portfolio is flat (no open position or reservation anywhere) a worker switches the state
  to ``halt``. While ``flatten`` lasts, a worker that restarts with a position flattens it too.

The state lives in Redis (``portfolio:killswitch``), so every worker sees a change at its next bar
and a restarted worker finds it again. Each change is also written to ``<runtime>/killswitch.json``:
if the Redis key is ever missing (a Redis without persistence was restarted), the mirror restores
it rather than silently trading again. ``POLICY_KILLSWITCH`` in a process's environment is a floor:
that process behaves at least as strictly as it says (``true`` = ``halt``), whatever Redis holds.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

import redis

from pine import redis_names

log = logging.getLogger(__name__)

ENV_VAR: Final = "POLICY_KILLSWITCH"
MIRROR_FILE: Final = "killswitch.json"
EVENTS_MAXLEN: Final = 10_000


class KillswitchState(StrEnum):
    """Killswitch tiers (values are what Redis, the mirror and heartbeats hold)."""

    OFF = "off"
    REDUCE_ONLY = "reduce_only"
    HALT = "halt"
    FLATTEN = "flatten"


# Strictness: a floor from the environment wins over anything milder in Redis.
_SEVERITY: Final = {
    KillswitchState.OFF: 0,
    KillswitchState.REDUCE_ONLY: 1,
    KillswitchState.HALT: 2,
    KillswitchState.FLATTEN: 3,
}
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "", "none"})

DESCRIPTIONS: Final = {
    KillswitchState.OFF: "normal trading",
    KillswitchState.REDUCE_ONLY: "exits only: entries blocked, exits and stops go out",
    KillswitchState.HALT: "nothing is sent: entries, exits and stops blocked",
    KillswitchState.FLATTEN: "closing every position at market, then halt",
}


def parse_state(text: str) -> KillswitchState:
    """``'halt'``, ``'reduce-only'``, ``'flatten'``, ``'off'``; legacy ``true``/``false`` mean halt/off."""
    t = text.strip().lower().replace("-", "_")
    if t in _TRUE:
        return KillswitchState.HALT
    if t in _FALSE:
        return KillswitchState.OFF
    try:
        return KillswitchState(t)
    except ValueError:
        raise ValueError(
            f"unknown killswitch state {text!r}; use off, reduce-only, halt or flatten (legacy: true = halt)"
        ) from None


def env_floor(environ: Mapping[str, str] | None = None) -> KillswitchState:
    """The floor ``POLICY_KILLSWITCH`` sets for this process; unreadable values fail closed (halt)."""
    raw = (os.environ if environ is None else environ).get(ENV_VAR)
    if raw is None:
        return KillswitchState.OFF
    try:
        return parse_state(raw)
    except ValueError:
        log.error("%s=%r is not a killswitch state: treating it as halt", ENV_VAR, raw)
        return KillswitchState.HALT


def strictest(*states: KillswitchState) -> KillswitchState:
    """The most drastic of ``states``."""
    return max(states, key=_SEVERITY.__getitem__)


def allows(state: KillswitchState, *, exit: bool) -> bool:
    """Whether an order may be sent under ``state``: ``exit`` orders reduce a position, entries open one."""
    if state is KillswitchState.OFF:
        return True
    if state in (KillswitchState.REDUCE_ONLY, KillswitchState.FLATTEN):
        return exit
    return False


@dataclass(frozen=True)
class KillswitchStatus:
    """What is stored: the state, why, who set it and when (epoch seconds; None if never set)."""

    state: KillswitchState = KillswitchState.OFF
    reason: str = ""
    source: str = ""
    updated_at: float | None = None

    def to_fields(self) -> dict[str, str]:
        """Redis hash / JSON form."""
        return {"state": self.state.value, "reason": self.reason, "source": self.source,
                "updated_at": "" if self.updated_at is None else repr(self.updated_at)}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> KillswitchStatus:
        """Inverse of :meth:`to_fields`; an unreadable state fails closed (halt)."""
        try:
            state = parse_state(fields.get("state", "off"))
        except ValueError:
            log.error("killswitch holds an unknown state %r: treating it as halt", fields.get("state"))
            state = KillswitchState.HALT
        updated = fields.get("updated_at") or ""
        return cls(state, fields.get("reason", ""), fields.get("source", ""), float(updated) if updated else None)


# Compare-and-set: only the expected state is replaced (FLATTEN → HALT by whichever worker sees the
# portfolio flat first must not undo an operator's later change).
_CAS = """
local cur = redis.call('HGET', KEYS[1], 'state') or 'off'
if cur ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'reason', ARGV[3], 'source', ARGV[4], 'updated_at', ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'kind', 'killswitch_changed', 'state', ARGV[2],
           'previous', cur, 'reason', ARGV[3], 'source', ARGV[4])
return 1
"""


class Killswitch:
    """Reads and changes the stored killswitch; ``effective()`` adds this process's environment floor."""

    def __init__(self, client: redis.Redis, *, mirror_dir: Path | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.client = client
        self.mirror = Path(mirror_dir) / MIRROR_FILE if mirror_dir is not None else None
        self.floor = env_floor(environ)
        self._cas = client.register_script(_CAS)

    def stored(self) -> KillswitchStatus:
        """The state in Redis; restored from the mirror file first if the key is missing."""
        fields = self.client.hgetall(redis_names.KILLSWITCH)
        if fields:
            return KillswitchStatus.from_fields(_decoded(fields))
        mirrored = self._read_mirror()
        if mirrored is not None and mirrored.state is not KillswitchState.OFF:
            # Only if still missing: a concurrent `pine killswitch` wins over the old mirror.
            if self.client.hsetnx(redis_names.KILLSWITCH, "state", mirrored.state.value):
                self.client.hset(redis_names.KILLSWITCH, mapping=mirrored.to_fields())
                log.warning("killswitch key was missing in Redis: restored %s from %s", mirrored.state.value,
                            self.mirror)
            return KillswitchStatus.from_fields(_decoded(self.client.hgetall(redis_names.KILLSWITCH)))
        return KillswitchStatus()

    def effective(self) -> KillswitchState:
        """The state this process obeys: the stricter of Redis and ``POLICY_KILLSWITCH``."""
        return strictest(self.stored().state, self.floor)

    def set(self, state: KillswitchState, *, reason: str = "", source: str = "") -> KillswitchStatus:
        """Store ``state`` (Redis and mirror) and record a ``killswitch_changed`` event; returns the new status."""
        status = KillswitchStatus(state, reason, source, time.time())
        previous = self.client.hget(redis_names.KILLSWITCH, "state")
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(redis_names.KILLSWITCH, mapping=status.to_fields())
        pipe.xadd(redis_names.PORTFOLIO_EVENTS,
                  {"kind": "killswitch_changed", "state": state.value, "previous": _text(previous) or "off",
                   "reason": reason, "source": source},
                  maxlen=EVENTS_MAXLEN, approximate=True)
        pipe.execute()
        self._write_mirror(status)
        return status

    def compare_and_set(self, expected: KillswitchState, new: KillswitchState, *, reason: str,
                        source: str) -> bool:
        """Replace ``expected`` by ``new`` atomically; False if the state was something else."""
        status = KillswitchStatus(new, reason, source, time.time())
        fields = status.to_fields()
        done = bool(self._cas(keys=[redis_names.KILLSWITCH, redis_names.PORTFOLIO_EVENTS],
                              args=[expected.value, new.value, reason, source, fields["updated_at"], EVENTS_MAXLEN]))
        if done:
            self._write_mirror(status)
        return done

    def _read_mirror(self) -> KillswitchStatus | None:
        if self.mirror is None or not self.mirror.exists():
            return None
        try:
            return KillswitchStatus.from_fields(json.loads(self.mirror.read_text()))
        except (OSError, ValueError, TypeError):
            log.error("unreadable killswitch mirror %s: treating it as halt", self.mirror)
            return KillswitchStatus(KillswitchState.HALT, "unreadable mirror file", "mirror")

    def _write_mirror(self, status: KillswitchStatus) -> None:
        if self.mirror is None:
            return
        self.mirror.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.mirror.with_suffix(".tmp")
        tmp.write_text(json.dumps(status.to_fields(), sort_keys=True))
        os.replace(tmp, self.mirror)


def _text(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


def _decoded(fields: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}
