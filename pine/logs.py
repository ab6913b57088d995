"""One log format for every Pine process; secrets scrubbed.

Every record carries ``component`` (``hub``, ``worker:ibs_a``, ``demo`` …), ``strategy`` and
``symbol`` (``-`` when they do not apply): the component and strategy are the process's own
(:func:`setup_logging`), the symbol comes from ``extra={"symbol": …}`` or from the innermost
:func:`log_symbol` block. The console shows text lines::

    2025-01-02T03:04:05.678+00:00 INFO worker:ibs_a strategy=ibs_a symbol=CL workers.execution: ...

or the same fields as JSON objects (``logging.format: json``). Log files (:func:`add_log_file`)
are always JSON lines — ``<runtime>/logs/{component}.jsonl``, rotated by size — so that
``pine logs`` can merge the files of every process by time exactly, multi-line tracebacks included.

Secrets (webhook URLs, API keys) registered with :func:`register_secret` are replaced by ``***``
in every formatted line, tracebacks included, whatever library produced the text: a
``requests`` error quoting the URL it failed on cannot leak a TradersPost webhook.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

REDACTED = "***"
NONE: Final = "-"
# Shorter values would blot out ordinary words (and cannot be secrets worth the name).
_MIN_SECRET_LEN = 8
_MIN_SEGMENT_LEN = 12
_secrets: set[str] = set()
_process = {"component": NONE, "strategy": NONE}
_symbol: ContextVar[str | None] = ContextVar("pine_log_symbol", default=None)


def register_secret(value: str | None) -> None:
    """Scrub ``value`` from all log output of this process; for a URL, also its path and query."""
    if not value:
        return
    candidates = {value}
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is not None and parts.scheme and parts.netloc:
        # A library may print only the request line ("POST /trading/webhook/<uuid>/<password>").
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        candidates |= {tail, parts.path}
        # Long segments (a webhook's uuid and password) on their own too; short ones are ordinary words.
        candidates |= {seg for seg in parts.path.split("/") if len(seg) >= _MIN_SEGMENT_LEN}
    _secrets.update(c for c in candidates if len(c) >= _MIN_SECRET_LEN)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


@contextmanager
def log_symbol(symbol: str) -> Iterator[None]:
    """Lines logged inside the block carry ``symbol`` (unless they name one themselves)."""
    token = _symbol.set(symbol)
    try:
        yield
    finally:
        _symbol.reset(token)


class ContextFilter(logging.Filter):
    """Stamps every record with the process's component and strategy and the current symbol."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.component = _process["component"]
        record.strategy = getattr(record, "strategy", None) or _process["strategy"]
        record.symbol = getattr(record, "symbol", None) or _symbol.get() or NONE
        return True


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


TEXT_FORMAT: Final = ("%(isotime)s %(levelname)s %(component)s strategy=%(strategy)s symbol=%(symbol)s "
                      "%(name)s: %(message)s")


class ScrubbingFormatter(logging.Formatter):
    """Text lines (``fmt``, by default the one of the module docstring) that never contain a registered secret."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        record.isotime = _iso(record.created)
        for name, default in (("component", _process["component"]), ("strategy", _process["strategy"]),
                              ("symbol", NONE)):
            record.__dict__.setdefault(name, default)
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, component, strategy, symbol, logger, message[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": _iso(record.created),
            "level": record.levelname,
            "component": getattr(record, "component", _process["component"]),
            "strategy": getattr(record, "strategy", _process["strategy"]),
            "symbol": getattr(record, "symbol", NONE),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        if record.exc_info:
            doc["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(component: str, level: str = "INFO", *, strategy: str | None = None, fmt: str = "text") -> None:
    """Log to stderr as text (or JSON with ``fmt='json'``), every line stamped with ``component`` and ``strategy``."""
    _process["component"] = component
    _process["strategy"] = strategy or NONE
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ScrubbingFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter that says nothing an operator needs (urllib3 at DEBUG prints request lines).
    for noisy in ("urllib3", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_log_context(*, component: str | None = None, strategy: str | None = None) -> None:
    """Change the process's component or strategy after :func:`setup_logging` (e.g. once the strategy is known)."""
    if component is not None:
        _process["component"] = component
    if strategy is not None:
        _process["strategy"] = strategy


def log_file_path(log_dir: Path, component: str) -> Path:
    """``<log_dir>/{component}.jsonl`` (``worker:ibs_a`` → ``worker_ibs_a.jsonl``)."""
    return Path(log_dir) / f"{component.replace(':', '_')}.jsonl"


def add_log_file(log_dir: Path, *, max_bytes: int, backup_count: int) -> Path:
    """Also write every record as a JSON line to this process's file in ``log_dir``, rotated at ``max_bytes``."""
    path = log_file_path(log_dir, _process["component"])
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count,
                                                   encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logging.getLogger().addHandler(handler)
    return path
