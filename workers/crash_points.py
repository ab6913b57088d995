"""Test hook: die (SIGKILL) at a named point of the order path, to test recovery from real crashes.

``PINE_TEST_CRASH_AT=after_journal`` kills the worker right after the first order intent is journaled
(before anything is sent); ``after_send`` right after the broker answered the first delivery (before
the answer is journaled). Unset (always, outside tests), :func:`crash_point` does nothing.
"""

from __future__ import annotations

import os
import signal
from typing import Final

ENV_VAR: Final = "PINE_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process if ``PINE_TEST_CRASH_AT`` names ``name`` (no cleanup, like a real crash)."""
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
