"""Discord notifications shared by the hub and the workers: a persistent outbox drained by a background sender.

- ``events``: message types, their on/silent/off setting, the message record the outbox stores.
- ``messages``: the messages themselves (entry, exit, started/stopped, emergencies, status).
- ``summary``: the daily summary (figures from ``pine.trade_stats``; sent once per trading day).
- ``discord``: the webhook payload (embeds) and one HTTP delivery attempt.
- ``outbox``: the SQLite outbox ``<runtime>/notifications.db`` shared by every process.
- ``sender``: the background thread that drains it, in order per channel.
- ``watch``: forwards risk events, ops alerts, feed gaps and dead processes from Redis.
- ``notifier``: what a process uses (``Notifier``); it never raises into trading code.
- ``status`` and ``cli``: ``pine notify status`` (the system's state, sent on request) and ``pine notify outbox``.
"""
