"""The dashboard's web app (FastAPI): one page, a JSON API, ``/health`` for monitors.

Routes:

- ``GET /`` and ``/static/*``: the page (plain HTML, CSS and JS; no data in them, so no token).
- ``GET /api/meta``: whether a token is needed, whether writes are possible, the refresh period.
- ``GET /api/overview``: everything the page shows, in one response (the page polls it).
- ``GET /api/positions|trades|pnl|metrics|health|killswitch|ml``: the same, piece by piece (``trades`` and
  ``ml`` take ``?limit=``).
- ``POST /api/killswitch`` ``{"state": "halt", "reason": "..."}``: change the killswitch.
- ``GET /health``: 200 ``{"ok": true}`` when the hub and every enabled worker have a fresh
  heartbeat, 503 with the reasons otherwise. Open without a token (uptime checkers), and it
  names components and states only.

Token (``dashboard.token``): write actions always need it (no token configured: writes are
refused); when set, every ``/api/*`` read needs it too. It travels as ``Authorization: Bearer``
(or ``X-Pine-Token``) and is compared in constant time. Every JSON response is scrubbed of the
config's secrets as a last line of defence; none is ever put into one.
"""

from __future__ import annotations

import hmac
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from dashboard import live, queries
from dashboard.totals import TradeTotals
from pine.config.schema import PineConfig
from pine.killswitch import Killswitch, parse_state
from pine.logs import register_secret, scrub
from workers.db_schema import SCHEMA_VERSION, schema_version
from workers.trades_db import open_reader

log = logging.getLogger(__name__)

STATIC: Final = Path(__file__).parent / "static"
_TYPES: Final = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
_SECURITY_HEADERS: Final = {
    # No inline script or style: the page's own files only (the chart is SVG built by app.js).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_REASON: Final = 200


class ScrubbedJSON(JSONResponse):
    """JSON with every registered secret replaced (pine.logs.scrub)."""

    def render(self, content: Any) -> bytes:
        return scrub(json.dumps(content, default=str, allow_nan=False, separators=(",", ":"))).encode()


class DashboardState:
    """Config, the trades DB path and a lazily (re)connected Redis client."""

    def __init__(self, cfg: PineConfig, redis_url: str | None) -> None:
        self.cfg = cfg
        self.redis_url = redis_url
        self.token = cfg.dashboard.token.get_secret_value() if cfg.dashboard.token is not None else None
        self.totals = TradeTotals()
        self._client: redis.Redis | None = None

    def client(self) -> redis.Redis | None:
        """A Redis client that answered a ping, or None (the page then shows the DB only)."""
        if self.redis_url is None:
            return None
        if self._client is None:
            self._client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1.0, socket_timeout=2.0)
        try:
            self._client.ping()
        except redis.RedisError:
            return None
        return self._client

    def db_status(self) -> str:
        """``ok``, ``missing`` or why the DB cannot be shown."""
        path = self.cfg.trades_db_path
        if not path.exists():
            return "missing"
        conn = open_reader(path)
        try:
            found = schema_version(conn)
        finally:
            conn.close()
        if found < SCHEMA_VERSION:
            return (f"schema v{found} is older than v{SCHEMA_VERSION}: start a worker once to migrate it "
                    "(the dashboard only reads)")
        return "ok"

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection to the trades DB, or None when it does not exist yet (or is too old to read)."""
        if self.db_status() != "ok":
            yield None
            return
        conn = open_reader(self.cfg.trades_db_path)
        try:
            if "trades" in queries.tables(conn):
                self.totals.refresh(conn, self.cfg.trades_db_path)
            yield conn
        finally:
            conn.close()

    def authorized(self, request: Request) -> bool:
        """Whether the request carries the configured token."""
        if self.token is None:
            return False
        given = request.headers.get("authorization", "")
        given = given[7:].strip() if given.lower().startswith("bearer ") else request.headers.get("x-pine-token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())


def _positions(state: DashboardState, conn: sqlite3.Connection | None, client: redis.Redis | None
               ) -> list[dict[str, Any]]:
    rows = queries.open_positions(conn) if conn is not None else []
    prices = live.latest_closes(client, sorted({r["symbol"] for r in rows})) if client is not None else {}
    for r in rows:
        spec = state.cfg.instruments.get(r["symbol"])
        quote = prices.get(r["symbol"])
        sign = 1 if r["direction"] == "long" else -1
        r["last_price"] = quote["close"] if quote else None
        r["last_bar_end"] = quote["end"] if quote else None
        if quote and spec is not None:
            move = (quote["close"] - r["entry_price"]) * sign
            r["unrealized_pnl"] = round(move * r["size"] * spec.multiplier, 2)
            r["unrealized_ticks"] = round(move / spec.tick_size, 1)
        else:
            r["unrealized_pnl"] = r["unrealized_ticks"] = None
    return rows


def _pnl(state: DashboardState, conn: sqlite3.Connection | None) -> dict[str, Any]:
    days = state.totals.days() if conn is not None else []
    today = state.cfg.sessions.calendar().trading_day(datetime.now(UTC)).isoformat()
    match = next((d for d in reversed(days) if d["trading_day"] == today), None)
    return {"today": {"trading_day": today, "net_pnl": match["net_pnl"] if match else 0.0,
                      "trades": match["trades"] if match else 0},
            "latest_day": days[-1] if days else None, "days": days[-30:],
            "equity": [{"day": d["trading_day"], "value": d["cumulative"]} for d in days]}


def _metrics(state: DashboardState, conn: sqlite3.Connection | None) -> dict[str, Any]:
    return state.totals.metrics() if conn is not None else {"all": None, "strategies": {}}


def _trades(state: DashboardState, conn: sqlite3.Connection | None, limit: int = queries.RECENT_TRADES
            ) -> list[dict[str, Any]]:
    return queries.recent_trades(conn, state.totals.strategies(), limit) if conn is not None else []


def overview(state: DashboardState) -> dict[str, Any]:
    """Everything the page shows."""
    client = state.client()
    with state.reader() as conn:
        out: dict[str, Any] = {
            "generated_at": time.time(),
            "positions": _positions(state, conn, client),
            "trades": _trades(state, conn),
            "pnl": _pnl(state, conn),
            "metrics": _metrics(state, conn),
            "ml": queries.ml_decisions(conn) if conn is not None else None,
        }
    out["health"] = live.health(state.cfg, client)
    out["killswitch"] = live.killswitch(client, state.cfg) if client is not None else None
    out["redis"] = "ok" if client is not None else "unreachable"
    out["trades_db"] = state.db_status()
    return out


def create_app(cfg: PineConfig, *, redis_url: str | None) -> FastAPI:
    """The dashboard for ``cfg`` reading Redis at ``redis_url`` (None: the DB only)."""
    for secret in cfg.secrets():
        register_secret(secret)
    state = DashboardState(cfg, redis_url)
    app = FastAPI(title="Pine dashboard", docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=ScrubbedJSON)
    app.state.pine = state

    @app.exception_handler(sqlite3.Error)
    async def db_error(request: Request, exc: sqlite3.Error) -> Response:
        log.warning("trades DB read failed: %s", exc)
        return ScrubbedJSON({"error": f"trades DB unreadable: {exc}"}, status_code=503)

    @app.exception_handler(redis.RedisError)
    async def redis_error(request: Request, exc: redis.RedisError) -> Response:
        log.warning("Redis read failed: %s", exc)
        return ScrubbedJSON({"error": f"Redis: {type(exc).__name__}"}, status_code=503)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Any]) -> Response:
        path = request.url.path
        needs_token = path.startswith("/api/") and path != "/api/meta" and (
            state.token is not None or request.method not in ("GET", "HEAD"))
        if needs_token and not state.authorized(request):
            if state.token is None:
                response: Response = ScrubbedJSON({"error": "write actions need dashboard.token to be configured"},
                                                  status_code=403)
            else:
                response = ScrubbedJSON({"error": "token required"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
        else:
            response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    def static(name: str) -> Response:
        path = STATIC / name
        return Response(path.read_bytes(), media_type=_TYPES[path.suffix])

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return static("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        if name not in {p.name for p in STATIC.iterdir()}:
            return ScrubbedJSON({"error": "not found"}, status_code=404)
        return static(name)

    @app.get("/api/meta")
    def meta() -> dict[str, Any]:
        return {"token_required": state.token is not None, "writes_enabled": state.token is not None,
                "refresh_s": cfg.dashboard.refresh_s, "strategies": list(cfg.enabled_strategies())}

    @app.get("/api/overview")
    def api_overview() -> dict[str, Any]:
        return overview(state)

    @app.get("/api/positions")
    def api_positions() -> list[dict[str, Any]]:
        with state.reader() as conn:
            return _positions(state, conn, state.client())

    @app.get("/api/trades")
    def api_trades(limit: int = queries.RECENT_TRADES) -> list[dict[str, Any]]:
        with state.reader() as conn:
            return _trades(state, conn, max(1, min(limit, 1000)))

    @app.get("/api/pnl")
    def api_pnl() -> dict[str, Any]:
        with state.reader() as conn:
            return _pnl(state, conn)

    @app.get("/api/metrics")
    def api_metrics() -> dict[str, Any]:
        with state.reader() as conn:
            return _metrics(state, conn)

    @app.get("/api/ml")
    def api_ml(limit: int = queries.ML_ROWS) -> dict[str, Any] | None:
        with state.reader() as conn:
            return queries.ml_decisions(conn, max(1, min(limit, 1000))) if conn is not None else None

    @app.get("/api/health")
    def api_health() -> dict[str, Any]:
        return live.health(cfg, state.client())

    @app.get("/health")
    def health() -> Response:
        h = live.health(cfg, state.client())
        return ScrubbedJSON({"ok": h["ok"], "reasons": h["reasons"],
                             "components": {c["component"]: c["status"] for c in h["components"]}},
                            status_code=200 if h["ok"] else 503)

    @app.get("/api/killswitch")
    def get_killswitch() -> Response:
        client = state.client()
        if client is None:
            return ScrubbedJSON({"error": "Redis unreachable"}, status_code=503)
        return ScrubbedJSON(live.killswitch(client, cfg))

    @app.post("/api/killswitch")
    async def set_killswitch(request: Request) -> Response:
        try:
            body = await request.json()
            new = parse_state(str(body["state"]))
            reason = str(body.get("reason") or "")[:MAX_REASON]
        except (ValueError, KeyError, TypeError) as exc:
            return ScrubbedJSON({"error": f"bad request: {exc}"}, status_code=400)
        client = state.client()
        if client is None:
            return ScrubbedJSON({"error": "Redis unreachable: the killswitch was not changed"}, status_code=503)
        host = request.client.host if request.client else "?"
        Killswitch(client, mirror_dir=cfg.runtime_dir).set(new, reason=reason or "set from the dashboard",
                                                           source=f"dashboard:{host}")
        log.warning("killswitch set to %s from the dashboard (%s)", new.value, host)
        return ScrubbedJSON(live.killswitch(client, cfg))

    return app
