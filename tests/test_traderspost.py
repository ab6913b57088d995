"""TradersPost client against a real local HTTP server: payload, retries, final states, no URL in output."""

from __future__ import annotations

import io
import logging
from datetime import UTC, date, datetime
from typing import Any

import pytest

from pine.config.schema import TradersPostConfig
from pine.logs import ScrubbingFormatter
from pine.redis_server import free_port
from tests.webhook_server import WEBHOOK_PATH, Reply, WebhookServer
from workers.order_journal import OrderIntent
from workers.traderspost import TradersPostClient, broker_ticker, build_payload

FAST = TradersPostConfig(connect_timeout_s=1, read_timeout_s=0.3, max_attempts=4, backoff_s=0.5, backoff_max_s=8)


def _intent(**kw: Any) -> OrderIntent:
    base: dict[str, Any] = dict(
        client_order_id="ibs_a-CL-20240304T230000Z-buy", strategy="ibs_a", symbol="CL", contract="CLK4",
        role="entry", side="buy", action="buy", quantity=2, order_type="market", limit_price=None,
        requested_price=78.12, reason="ibs=0.070", signal_time=datetime(2024, 3, 4, 23, tzinfo=UTC),
        trading_day=date(2024, 3, 4), broker="traderspost", payload={},
    )
    return OrderIntent(**{**base, **kw})


class _Attempts:
    def __init__(self) -> None:
        self.calls: list[int] = []
        self.sleeps: list[float] = []

    def __call__(self, n: int) -> None:
        self.calls.append(n)


def _client(url: str, attempts: _Attempts, cfg: TradersPostConfig = FAST) -> TradersPostClient:
    return TradersPostClient(url, cfg, sleep=attempts.sleeps.append)


def test_payload_is_traderspost_signal_json_with_day_time_in_force() -> None:
    assert build_payload(_intent(), "CLK2024") == {
        "ticker": "CLK2024", "action": "buy", "quantity": 2, "orderType": "market", "timeInForce": "day",
        "signalPrice": 78.12, "time": "2024-03-04T23:00:00+00:00",
        "extras": {"clientOrderId": "ibs_a-CL-20240304T230000Z-buy", "strategy": "ibs_a", "symbol": "CL",
                   "contract": "CLK4", "role": "entry", "reason": "ibs=0.070",
                   "signalBar": "2024-03-04T23:00:00+00:00", "tradingDay": "2024-03-04"},
    }
    exit_limit = build_payload(_intent(role="exit", side="sell", action="exit", order_type="limit", limit_price=79.5),
                               "CL")
    assert (exit_limit["action"], exit_limit["orderType"], exit_limit["limitPrice"], exit_limit["ticker"]) == (
        "exit", "limit", 79.5, "CL")
    with pytest.raises(ValueError, match="has no limit price"):
        build_payload(_intent(order_type="limit"), "CL")


def test_ticker_is_the_contract_with_a_four_digit_year_or_the_root() -> None:
    assert broker_ticker("CL", "CLK4", "contract", 2024) == "CLK2024"
    assert broker_ticker("6A", "6AH25", "contract", 2024) == "6AH2025"
    assert broker_ticker("CL", "CLK4", "root", 2024) == "CL"
    assert broker_ticker("CL", "", "contract", 2024) == "CL"


def test_acknowledged_on_2xx_at_the_first_attempt() -> None:
    attempts = _Attempts()
    with WebhookServer() as server:
        result = _client(server.url, attempts).deliver(build_payload(_intent(), "CLK2024"), attempts)
    assert (result.acknowledged, result.attempts, result.http_status) == (True, 1, 200)
    assert '"success": true' in (result.response or "")
    assert attempts.calls == [1] and attempts.sleeps == []
    [req] = server.requests
    assert req.path == WEBHOOK_PATH
    assert req.headers["Content-Type"] == "application/json"
    assert req.body == build_payload(_intent(), "CLK2024")


def test_5xx_is_retried_with_exponential_backoff_until_acknowledged() -> None:
    attempts = _Attempts()
    with WebhookServer(lambda n, body: Reply(500 if n < 3 else 200)) as server:
        result = _client(server.url, attempts).deliver(build_payload(_intent(), "X"), attempts)
    assert (result.acknowledged, result.attempts) == (True, 3)
    assert attempts.calls == [1, 2, 3]
    assert attempts.sleeps == [0.5, 1.0]
    assert len(server.requests) == 3 and len({str(r.body) for r in server.requests}) == 1  # the same order


def test_5xx_forever_fails_after_max_attempts() -> None:
    attempts = _Attempts()
    with WebhookServer(lambda n, body: Reply(503, '{"error": "maintenance"}')) as server:
        result = _client(server.url, attempts).deliver(build_payload(_intent(), "X"), attempts)
    assert (result.acknowledged, result.attempts, result.http_status, result.error) == (False, 4, 503, "HTTP 503")
    assert attempts.sleeps == [0.5, 1.0, 2.0]
    assert len(server.requests) == 4


def test_4xx_is_final_and_reported_without_retry(caplog: pytest.LogCaptureFixture) -> None:
    attempts = _Attempts()
    body = '{"success": false, "messageCode": "invalid-ticker", "message": "Invalid ticker"}'
    with WebhookServer(lambda n, b: Reply(400, body)) as server:
        result = _client(server.url, attempts).deliver(build_payload(_intent(), "X"), attempts)
    assert (result.acknowledged, result.attempts, result.http_status) == (False, 1, 400)
    assert result.response == body
    assert attempts.sleeps == [] and len(server.requests) == 1
    assert "refused order ibs_a-CL-20240304T230000Z-buy: HTTP 400" in caplog.text
    assert "not retried" in caplog.text


def test_429_waits_at_least_retry_after() -> None:
    attempts = _Attempts()
    with WebhookServer(lambda n, b: Reply(429, headers={"Retry-After": "3"}) if n == 1 else Reply()) as server:
        result = _client(server.url, attempts).deliver(build_payload(_intent(), "X"), attempts)
    assert (result.acknowledged, result.attempts) == (True, 2)
    assert attempts.sleeps == [3.0]
    assert len(server.requests) == 2


def test_a_read_timeout_is_retried_and_the_receiver_sees_both_requests() -> None:
    attempts = _Attempts()
    with WebhookServer(lambda n, b: Reply(delay_s=1.5) if n == 1 else Reply()) as server:
        result = _client(server.url, attempts).deliver(build_payload(_intent(), "X"), attempts)
    assert (result.acknowledged, result.attempts) == (True, 2)
    assert server.deliveries() == {"ibs_a-CL-20240304T230000Z-buy": 2}  # the id lets a receiver drop the repeat


def test_a_dropped_connection_is_retried() -> None:
    attempts = _Attempts()
    with WebhookServer(lambda n, b: Reply(drop=True) if n == 1 else Reply()) as server:
        result = _client(server.url, attempts).deliver(build_payload(_intent(), "X"), attempts)
    assert (result.acknowledged, result.attempts) == (True, 2)


def test_connection_refused_is_retried_then_failed_without_the_url_in_the_error() -> None:
    attempts = _Attempts()
    url = f"http://127.0.0.1:{free_port()}/trading/webhook/refused-uuid-0001/refused-secret-pass"
    client = _client(url, attempts)
    result = client.deliver(build_payload(_intent(), "X"), attempts)
    assert (result.acknowledged, result.attempts, result.http_status) == (False, 4, None)
    assert result.error is not None and result.error.startswith("connection error")
    assert "refused-uuid-0001" not in result.error and "refused-secret-pass" not in result.error
    assert "refused-uuid-0001" not in repr(client)


def test_log_lines_never_show_the_webhook() -> None:
    url = "https://webhooks.traderspost.io/trading/webhook/c4n4ry-uuid-77/c4n4ry-password"
    TradersPostClient(url, FAST)  # registers the URL as a secret
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(ScrubbingFormatter("%(message)s"))
    logger = logging.getLogger("test.scrub")
    logger.addHandler(handler)
    try:
        logger.error("posting to %s", url)
        logger.error("POST /trading/webhook/c4n4ry-uuid-77/c4n4ry-password HTTP/1.1")
        try:
            raise RuntimeError(f"failed: {url}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "c4n4ry" not in text
    assert "posting to ***" in text
