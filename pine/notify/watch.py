"""Emergencies that other code records in Redis, turned into notifications.

- ``portfolio:events`` (workers, killswitch): daily stop hit, killswitch changed, order failed
  after retries, order in doubt, position mismatch, reservation reconciled, position restored.
- ``ops:alerts`` (Dagster sensors): crash loops, failed runs, … — except ``process_down`` of the
  hub or a worker, which the heartbeat watch below reports itself (one message per death, with or
  without Dagster).
- Heartbeats: a hub or enabled worker whose heartbeat key expires while it said it was running
  died without saying so (a process that fails or refuses reports that itself as it exits); a
  feed gap in the hub's heartbeat (recovered by replay or not) is a data-gap alert.

Every process with notifications on runs this watch; the event ids (stream entry id, component
and pid, gap start) make the outbox keep one message per event. How far the streams were read
is kept in the outbox (``cursors``), so an event recorded while no process watched is still
forwarded — late, and saying so. A fresh outbox starts one hour back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import redis

from pine import redis_names
from pine.notify.events import Message
from pine.notify.messages import emergency_message, is_severe
from pine.notify.outbox import Outbox

log = logging.getLogger(__name__)

FIRST_LOOKBACK_S: Final = 3600
_EXITED: Final = frozenset({"finished", "stopped", "failed", "refused"})

_TITLES: Final = {
    "daily_stop_hit": "Daily stop hit: no new entries until the session closes",
    "killswitch_changed": "Killswitch changed",
    "order_failed": "Order failed after retries",
    "order_in_doubt": "Order in doubt after a restart (check the broker)",
    "position_mismatch": "Position mismatch after a restart",
    "reservation_reconciled": "Dead worker's reservation released",
    "position_restored": "Position restored from the DB",
    "flatten_complete": "Flatten complete",
}


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def portfolio_message(entry_id: str, fields: dict[str, str]) -> Message:
    """The notification of one ``portfolio:events`` entry."""
    kind = fields.pop("kind", "event")
    strategy = fields.get("strategy") or None
    if kind == "killswitch_changed":
        title = f"Killswitch {fields.get('previous', '?')} → {fields.get('state', '?')}"
    else:
        title = _TITLES.get(kind, kind.replace("_", " "))
    return emergency_message(f"portfolio:{entry_id}", title, fields=fields, strategy=strategy,
                             severe=is_severe(kind) or fields.get("state") in ("halt", "flatten"),
                             occurred_at=int(entry_id.split("-")[0]) / 1000)


def ops_message(entry_id: str, fields: dict[str, str]) -> Message:
    """The notification of one ``ops:alerts`` entry (Dagster's alerts)."""
    kind = fields.get("kind", "alert")
    details = fields.get("details", "")
    shown = {"component": fields.get("component", ""), "kind": kind, "source": fields.get("source", "")}
    if details and details != "{}":
        shown["details"] = details
    return emergency_message(f"ops:{entry_id}", f"{kind.replace('_', ' ')}: {fields.get('component', '')}",
                             fields.get("message", ""), fields=shown,
                             severe=fields.get("severity") == "critical" or is_severe(kind),
                             occurred_at=int(entry_id.split("-")[0]) / 1000)


@dataclass
class _Seen:
    pid: Any
    status: str
    time: float


class Watcher:
    """Polls Redis for the events above and publishes their messages (``publish`` never raises)."""

    def __init__(self, client: redis.Redis, outbox: Outbox, components: list[str],
                 publish: Callable[[Message], None]) -> None:
        self.client = client
        self.outbox = outbox
        self.components = components
        self.publish = publish
        self._seen: dict[str, _Seen] = {}

    def poll(self) -> None:
        """One round: both streams, then the heartbeats."""
        self._stream(redis_names.PORTFOLIO_EVENTS, portfolio_message, skip=lambda f: False)
        self._stream(redis_names.OPS_ALERTS, ops_message,
                     skip=lambda f: f.get("kind") == "process_down" and f.get("component") in self.components)
        self._heartbeats()

    def _stream(self, stream: str, build: Callable[[str, dict[str, str]], Message],
                skip: Callable[[dict[str, str]], bool]) -> None:
        cursor = self.outbox.cursor(stream) or f"{int((time.time() - FIRST_LOOKBACK_S) * 1000)}-0"
        entries = self.client.xrange(stream, min=f"({cursor}", count=500)
        if not entries:
            return
        for raw_id, raw in entries:
            entry_id = _text(raw_id)
            fields = {_text(k): _text(v) for k, v in raw.items()}
            if not skip(fields):
                self.publish(build(entry_id, fields))
        last = _text(entries[-1][0])
        stored = self.outbox.cursor(stream)
        if stored is None or _id_key(last) > _id_key(stored):  # another process may be further already
            self.outbox.set_cursor(stream, last)

    def _heartbeats(self) -> None:
        for component in self.components:
            raw = self.client.get(redis_names.heartbeat(component))
            doc = _parse(raw) if raw is not None else None
            before = self._seen.get(component)
            if doc is None:
                if before is not None and before.status not in _EXITED:
                    self._died(component, before)
                self._seen.pop(component, None)
                continue
            self._seen[component] = _Seen(doc.get("pid"), str(doc.get("status", "")), float(doc.get("time", 0)))
            if component == "hub":
                self._gaps(doc)

    def _died(self, component: str, last: _Seen) -> None:
        ago = time.time() - last.time
        self.publish(emergency_message(
            f"down:{component}:{last.pid}", f"{component} died: its heartbeat stopped",
            f"Last heartbeat {ago:.0f}s ago with status '{last.status}' (pid {last.pid}); no orderly stop was "
            "reported. The supervisor (Dagster or systemd) should restart it.",
            fields={"component": component, "pid": str(last.pid), "last status": last.status},
            strategy=component.removeprefix("worker:") if component.startswith("worker:") else None,
        ))

    def _gaps(self, doc: dict[str, Any]) -> None:
        for gap in doc.get("gaps") or []:
            if not isinstance(gap, dict) or gap.get("up_at") is None:
                continue  # still open: reported once the feed has caught up and the gap is measured
            lost = gap.get("replayed") is False
            title = ("Data gap NOT recovered: trades are missing" if lost
                     else "Data gap recovered by replay")
            self.publish(emergency_message(
                f"data_gap:{gap.get('start')}:{gap.get('down_at')}", title,
                f"Feed lost ({gap.get('reason', '?')}) for {gap.get('offline_s', '?')}s.",
                fields={"from": str(gap.get("start")), "to": str(gap.get("end")),
                        "trades recovered": str(gap.get("recovered", 0)), "duplicates dropped":
                        str(gap.get("duplicates", 0))},
                severe=lost, occurred_at=float(gap.get("up_at") or time.time()),
            ))


def _parse(raw: bytes | str) -> dict[str, Any] | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
