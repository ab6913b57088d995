"""Exponential backoff with jitter and a cap, for reconnecting to the live gateway."""

from __future__ import annotations

import random

from pine.config.schema import ReconnectConfig


class Backoff:
    """Delays ``initial × multiplier^n`` capped at ``max_s``, each drawn from ``[d × (1 − jitter), d]``.

    Drawing below the nominal delay (never above) keeps the cap a true upper bound while
    spreading the retries of several clients that lost the gateway at the same moment.
    """

    def __init__(self, cfg: ReconnectConfig, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call counts one attempt."""
        nominal = min(self.cfg.max_s, self.cfg.initial_s * self.cfg.multiplier ** self.attempts)
        self.attempts += 1
        return self.rng.uniform(nominal * (1 - self.cfg.jitter), nominal)

    def reset(self) -> None:
        """The connection works again: the next failure starts from ``initial_s``."""
        self.attempts = 0
