"""The operations dashboard (``pine dashboard``): a web page and a JSON API over the trades DB and Redis.

Reads only (the trades DB through a read-only connection); the one write is the killswitch,
guarded by ``dashboard.token``. Nothing imports this package.
"""
