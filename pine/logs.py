"""One log format for every Pine process: time, level, component, logger, message."""

from __future__ import annotations

import logging
import sys


def setup_logging(component: str, level: str = "INFO") -> None:
    """Log to stderr as ``2025-01-02 03:04:05,678 INFO hub pine.x: message``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter that says nothing an operator needs.
    for noisy in ("urllib3", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
