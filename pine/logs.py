"""One log format for every Pine process: time, level, component, logger, message; secrets scrubbed.

Secrets (webhook URLs, API keys) registered with :func:`register_secret` are replaced by ``***``
in every formatted line, tracebacks included, whatever library produced the text: a
``requests`` error quoting the URL it failed on cannot leak a TradersPost webhook.
"""

from __future__ import annotations

import logging
import sys
from urllib.parse import urlsplit

REDACTED = "***"
# Shorter values would blot out ordinary words (and cannot be secrets worth the name).
_MIN_SECRET_LEN = 8
_MIN_SEGMENT_LEN = 12
_secrets: set[str] = set()


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


class ScrubbingFormatter(logging.Formatter):
    """A Formatter whose output (message, arguments, traceback) never contains a registered secret."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def setup_logging(component: str, level: str = "INFO") -> None:
    """Log to stderr as ``2025-01-02 03:04:05,678 INFO hub pine.x: message``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter(f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter that says nothing an operator needs (urllib3 at DEBUG prints request lines).
    for noisy in ("urllib3", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
