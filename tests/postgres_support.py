"""A private PostgreSQL cluster for a test: ``initdb`` into a temporary directory, ``pg_ctl start`` on a free port.

Never the machine's shared server: the cluster listens on 127.0.0.1 on a free port (its socket in its
own directory), trusts local connections, and is removed afterwards. PostgreSQL refuses to run as
root, so as root the binaries run as the ``postgres`` user (``runuser``) on a directory it owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pine.redis_server import free_port

USER = "pine"  # the cluster's superuser (initdb -U); trust auth, so any password is accepted


def postgres_bin() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (newest Debian-style install, else PATH), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_owner() -> tuple[list[str], int | None, int | None]:
    """Command prefix and (uid, gid) to run PostgreSQL under: the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run initdb/pg_ctl as")
    if shutil.which("runuser") is None:
        pytest.skip("running as root and runuser is missing: cannot run initdb/pg_ctl as 'postgres'")
    return ["runuser", "-u", "postgres", "--"], owner.pw_uid, owner.pw_gid


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """URL of a fresh private cluster's ``postgres`` database (skipped when PostgreSQL is not installed)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    prefix, uid, gid = _as_owner()
    # Not pytest's tmp_path: its parents are private to the current user, and 'postgres' must reach it.
    base = Path(tempfile.mkdtemp(prefix="pine-pg-"))
    if uid is not None and gid is not None:
        os.chown(base, uid, gid)
    data, port = base / "data", free_port()
    try:
        _run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8",
              "--locale=C", "--no-sync"], "initdb")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        _run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-o", options,
              "-w", "-t", "30", "start"], "pg_ctl start")
        try:
            yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
        finally:
            _run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], "pg_ctl stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
