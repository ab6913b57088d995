"""Discord webhooks: the payload (one embed per message) and a single delivery attempt.

Payload (Discord's "Execute Webhook")::

    {"username": "Pine", "allowed_mentions": {"parse": []}, "flags": 4096 (silent types only),
     "embeds": [{"title", "description", "color", "fields": [{"name", "value", "inline"}],
                 "footer": {"text": <event id>}, "timestamp": <event time, ISO 8601>}]}

Discord's limits (title 256, description 4096, 25 fields of 256/1024, footer 2048, 6000 in all)
are enforced by clipping. ``flags: 4096`` is SUPPRESS_NOTIFICATIONS: the message is posted
without a push. A message delivered later than ``late_after_s`` after its event starts with how
late it is; one resent after its sender stopped mid-request says it may be a repeat.

An attempt ends ``delivered`` (2xx), ``rate_limited`` (429: wait ``retry_after`` from the body,
else the ``Retry-After`` header), ``retry`` (5xx, 408, network error, timeout) or ``rejected``
(any other 4xx: retrying cannot help). A 2xx whose headers say the bucket is empty
(``X-RateLimit-Remaining: 0``) carries the wait before the next message on that channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import requests

from pine.logs import scrub
from pine.notify.events import Message

SUPPRESS_NOTIFICATIONS: Final = 1 << 12
_LIMITS: Final = {"title": 256, "description": 4096, "field_name": 256, "field_value": 1024, "footer": 2048}
_MAX_FIELDS: Final = 25
_MAX_TOTAL: Final = 6000
_DEFAULT_RETRY_AFTER_S: Final = 1.0
_MAX_DETAIL: Final = 300


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 2 * 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def build_payload(msg: Message, *, username: str, silent: bool, now: float, late_after_s: float,
                  possible_repeat: bool = False) -> dict[str, Any]:
    """The webhook body for ``msg`` delivered at wall time ``now``."""
    notes = []
    late = now - msg.occurred_at
    if late > late_after_s:
        at = datetime.fromtimestamp(msg.occurred_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        notes.append(f"⏱ **Late by {_ago(late)}** (event at {at})")
    if possible_repeat:
        notes.append("↻ Possibly a repeat: the sender stopped while delivering it")
    description = "\n".join([*notes, msg.description] if msg.description else notes)
    embed: dict[str, Any] = {
        "title": _clip(msg.title, _LIMITS["title"]),
        "color": msg.color,
        "footer": {"text": _clip(msg.event_id, _LIMITS["footer"])},
        "timestamp": datetime.fromtimestamp(msg.occurred_at, UTC).isoformat(),
    }
    fields = [{"name": _clip(f.name, _LIMITS["field_name"]), "value": _clip(f.value or "-", _LIMITS["field_value"]),
               "inline": f.inline} for f in msg.fields[:_MAX_FIELDS]]
    if fields:
        embed["fields"] = fields
    used = len(embed["title"]) + len(embed["footer"]["text"]) + sum(len(f["name"]) + len(f["value"]) for f in fields)
    if description:
        embed["description"] = _clip(description, max(1, min(_LIMITS["description"], _MAX_TOTAL - used)))
    payload: dict[str, Any] = {"username": username, "embeds": [embed], "allowed_mentions": {"parse": []}}
    if silent:
        payload["flags"] = SUPPRESS_NOTIFICATIONS
    return payload


Outcome = Literal["delivered", "rate_limited", "retry", "rejected"]


@dataclass(frozen=True)
class Attempt:
    """How one POST ended; ``wait_s`` is how long the channel must wait before its next message."""

    outcome: Outcome
    status: int | None
    wait_s: float = 0.0
    detail: str = ""


def _float(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _retry_after(resp: requests.Response) -> float:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    seconds = _float(body.get("retry_after")) if isinstance(body, dict) else None
    if seconds is None:
        seconds = _float(resp.headers.get("Retry-After"))
    return max(0.0, seconds if seconds is not None else _DEFAULT_RETRY_AFTER_S)


def post(session: requests.Session, url: str, payload: dict[str, Any], *, timeout: tuple[float, float]) -> Attempt:
    """One delivery attempt of ``payload`` to the webhook ``url`` (never raises; errors are scrubbed of the URL)."""
    try:
        resp = session.post(url, json=payload, params={"wait": "true"}, timeout=timeout)
    except requests.RequestException as exc:
        return Attempt("retry", None, detail=scrub(f"{type(exc).__name__}: {exc}")[:_MAX_DETAIL])
    status = resp.status_code
    if 200 <= status < 300:
        empty = resp.headers.get("X-RateLimit-Remaining") == "0"
        wait = _float(resp.headers.get("X-RateLimit-Reset-After")) if empty else None
        return Attempt("delivered", status, wait_s=wait or 0.0)
    detail = scrub(f"HTTP {status}: {resp.text}")[:_MAX_DETAIL]
    if status == 429:
        return Attempt("rate_limited", status, wait_s=_retry_after(resp), detail=detail)
    if status >= 500 or status == 408:
        return Attempt("retry", status, detail=detail)
    return Attempt("rejected", status, detail=detail)
