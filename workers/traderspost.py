"""TradersPost webhook client: signal payloads, timeouts, retries with backoff; the URL is a secret.

Payload (TradersPost's webhook signal format; ``ticker`` and ``action`` are required by it)::

    {"ticker": "CLK2024", "action": "buy" | "sell" | "exit", "quantity": 1,
     "orderType": "market" | "limit", "limitPrice": 77.5 (limit orders only), "timeInForce": "day",
     "signalPrice": 77.62, "time": "2024-03-04T23:00:00+00:00",
     "extras": {"clientOrderId": "...", "strategy": "ibs_a", "symbol": "CL", "contract": "CLK4",
                "role": "entry" | "exit", "reason": "...", "signalBar": "...", "tradingDay": "..."}}

Entries are ``buy`` (long) or ``sell`` (short); every exit is ``exit``, which closes whatever
position TradersPost holds in the ticker. Time in force is ``day`` (the legacy docs' "1-hour
GTD" was wrong; the legacy code sent ``day``). ``extras`` carries our metadata and client order id.

Retries: 5xx, 408, 429 and network errors (refused, reset, timeouts) are retried up to
``max_attempts`` with exponential backoff (``Retry-After`` honoured for 429, within the cap);
other 4xx are final and reported. A read timeout may mean the request arrived: the retry is
still made (as the issue asks), and the client order id in ``extras`` lets the receiver tell
a duplicate. The URL (it embeds the webhook's uuid and password) is registered with the log
scrubber, and every error text is scrubbed before it is logged or journaled.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from pine.config.schema import TradersPostConfig
from pine.contracts import parse_contract_symbol
from pine.logs import register_secret, scrub
from workers.delivery import Delivery, Probe
from workers.order_journal import OrderIntent

log = logging.getLogger(__name__)

TIME_IN_FORCE: Final = "day"
_RETRY_STATUSES: Final = frozenset({408, 429})
_MAX_RESPONSE: Final = 500


def broker_ticker(symbol: str, contract: str, mode: str, year_hint: int) -> str:
    """TradersPost ticker: ``root`` → ``CL``; ``contract`` → ``CLK2024`` (four-digit year, as in
    TradersPost's examples), or the raw contract if it cannot be parsed."""
    if mode == "root" or not contract:
        return symbol
    parsed = parse_contract_symbol(contract, reference_year=year_hint)
    if parsed is None:
        return contract
    return f"{parsed.root}{parsed.month_code}{parsed.year}"


def build_payload(intent: OrderIntent, ticker: str) -> dict[str, Any]:
    """The webhook JSON of ``intent`` (see the module docstring)."""
    payload: dict[str, Any] = {
        "ticker": ticker,
        "action": intent.action,
        "quantity": intent.quantity,
        "orderType": intent.order_type,
        "timeInForce": TIME_IN_FORCE,
        "time": intent.signal_time.isoformat(),
        "extras": {
            "clientOrderId": intent.client_order_id,
            "strategy": intent.strategy,
            "symbol": intent.symbol,
            "contract": intent.contract,
            "role": intent.role,
            "reason": intent.reason,
            "signalBar": intent.signal_time.isoformat(),
            "tradingDay": intent.trading_day.isoformat(),
        },
    }
    if intent.requested_price is not None:
        payload["signalPrice"] = intent.requested_price
    if intent.order_type == "limit":
        if intent.limit_price is None:
            raise ValueError(f"limit order {intent.client_order_id} has no limit price")
        payload["limitPrice"] = intent.limit_price
    return payload


class TradersPostClient:
    """Posts payloads to one strategy's webhook URL (never logged: ``repr`` shows the host only)."""

    name = "traderspost"
    # TradersPost reports no fills back: what the journal records as a fill is the paper model.
    fill_source = "model"

    def __init__(self, url: str, cfg: TradersPostConfig | None = None, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the TradersPost webhook (broker_account) must be an http(s) URL")
        register_secret(url)
        self._url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.cfg = cfg or TradersPostConfig()
        self.sleep = sleep
        # Set by a worker that is shutting down: the attempt in progress finishes, no retry is started.
        self.shutting_down = False
        self.session = requests.Session()
        # No urllib3-level retries: every attempt goes through the journal and our policy.
        adapter = HTTPAdapter(max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"Content-Type": "application/json", "User-Agent": "pine"})

    def __repr__(self) -> str:
        return f"TradersPostClient(host={self.host!r}, webhook=***)"

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        delay = self.cfg.backoff_s * 2 ** (attempt - 1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.cfg.backoff_max_s)

    def deliver(self, payload: dict[str, Any], on_attempt: Callable[[int], None]) -> Delivery:
        """POST ``payload`` until acknowledged (2xx), refused for good (4xx) or out of attempts."""
        body = json.dumps(payload, separators=(",", ":"))
        cid = payload.get("extras", {}).get("clientOrderId", "?")
        last = Delivery(acknowledged=False, attempts=0, error="not attempted")
        for attempt in range(1, self.cfg.max_attempts + 1):
            if attempt > 1 and self.shutting_down:
                log.error("TradersPost order %s: not retried after attempt %d (%s): the worker is shutting down",
                          cid, attempt - 1, last.error)
                return last
            on_attempt(attempt)
            retry_after: float | None = None
            try:
                resp = self.session.post(self._url, data=body,
                                         timeout=(self.cfg.connect_timeout_s, self.cfg.read_timeout_s))
            except requests.RequestException as exc:
                last = Delivery(False, attempt, error=_describe(exc))
                retry = True
            else:
                text = scrub(resp.text[:_MAX_RESPONSE])
                if 200 <= resp.status_code < 300:
                    return Delivery(True, attempt, resp.status_code, text)
                last = Delivery(False, attempt, resp.status_code, text, f"HTTP {resp.status_code}")
                retry = resp.status_code >= 500 or resp.status_code in _RETRY_STATUSES
                if resp.status_code == 429:
                    retry_after = _seconds(resp.headers.get("Retry-After"))
            if not retry:
                log.error("TradersPost refused order %s: %s %s (not retried)", cid, last.error, last.response or "")
                return last
            if attempt < self.cfg.max_attempts and not self.shutting_down:
                delay = self.backoff(attempt, retry_after)
                log.warning("TradersPost order %s attempt %d/%d failed (%s); retrying in %.2fs", cid, attempt,
                            self.cfg.max_attempts, last.error, delay)
                self.sleep(delay)
        log.error("TradersPost order %s failed after %d attempts: %s", cid, last.attempts, last.error)
        return last

    def probe(self) -> Probe:
        """TCP connect to the webhook host only: TradersPost documents no side-effect-free HTTP probe,
        and any request to the webhook path would be read as a trading signal."""
        try:
            with socket.create_connection((self.host, self.port), timeout=self.cfg.connect_timeout_s):
                pass
        except OSError as exc:
            return Probe(False, f"cannot connect to {self.host}:{self.port}: {scrub(str(exc))}")
        return Probe(True, f"TCP connect to {self.host}:{self.port} ok; HTTP probe skipped (TradersPost has "
                           "no side-effect-free probe)")


def _describe(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        kind = "connect timeout"
    elif isinstance(exc, requests.ReadTimeout):
        kind = "read timeout (the request may have arrived)"
    elif isinstance(exc, requests.ConnectionError):
        kind = "connection error"
    else:
        kind = type(exc).__name__
    return scrub(f"{kind}: {exc}")


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
