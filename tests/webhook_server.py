"""A real local HTTP server standing in for TradersPost: records every request, answers by script.

``WebhookServer(script)``: ``script(n, body)`` returns the reply to the n-th request (1-based) as a
``Reply`` (status, body, delay before answering, or ``drop`` to close the connection unanswered).
The default answers 200 like TradersPost (``{"success": true, ...}``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

WEBHOOK_PATH = "/trading/webhook/0f1e2d3c-test-uuid/test-password"


@dataclass(frozen=True)
class Reply:
    """What the server does with one request."""

    status: int = 200
    body: str = '{"success": true, "id": "tp-1", "logId": "log-1"}'
    delay_s: float = 0.0
    drop: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float


def ok(n: int, body: dict[str, Any]) -> Reply:
    """Always 200."""
    return Reply()


class WebhookServer:
    """ThreadingHTTPServer on 127.0.0.1 (free port) in a daemon thread."""

    def __init__(self, script: Callable[[int, dict[str, Any]], Reply] = ok, *, path: str = WEBHOOK_PATH,
                 on_request: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.script = script
        self.path = path
        self.on_request = on_request
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                with server._lock:
                    server.requests.append(Received(self.path, body, dict(self.headers), time.perf_counter()))
                    n = len(server.requests)
                if server.on_request is not None:
                    server.on_request(body)
                reply = server.script(n, body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                payload = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        """The webhook URL (host, port and the secret-looking path)."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    def bodies(self) -> list[dict[str, Any]]:
        """Request bodies in arrival order."""
        with self._lock:
            return [r.body for r in self.requests]

    def deliveries(self) -> Counter[str]:
        """Requests per client order id (``extras.clientOrderId``)."""
        return Counter(str(b.get("extras", {}).get("clientOrderId")) for b in self.bodies())

    def __enter__(self) -> WebhookServer:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
