"""The dashboard of ``pine demo``: ``pine dashboard`` on the demo's runtime dir, Redis and a one-off token."""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.error import URLError
from urllib.request import urlopen

from orchestration.processes import spawn_pine, stop
from pine.redis_server import free_port

READY_TIMEOUT_S = 30.0


class DemoDashboard:
    """Runs ``pine dashboard`` for the length of the demo; ``url`` carries the token in its fragment
    (``#token=…``: the page keeps it for the tab; browsers never send a fragment to the server)."""

    def __init__(self, root_dir: Path, env: dict[str, str], config_arg: list[str]) -> None:
        self.port = free_port()
        self.token = secrets.token_urlsafe(18)
        self.log = root_dir / "logs" / "dashboard.log"
        self.base = f"http://127.0.0.1:{self.port}/"
        self.url = f"{self.base}#token={self.token}"
        self._args = ["dashboard", "--port", str(self.port), *config_arg]
        self._env = {**env, "PINE_DASHBOARD_TOKEN": self.token}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DemoDashboard:
        self.proc = spawn_pine(self._args, self.log, self._env)
        return self

    def ready(self) -> bool:
        """Wait until it answers (False if it exited or did not answer in time; see its log)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
            try:
                with urlopen(f"{self.base}api/meta", timeout=1):
                    return True
            except (URLError, OSError):
                time.sleep(0.2)
        return False

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            stop(self.proc)
