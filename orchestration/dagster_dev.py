"""Running ``dagster dev`` (webserver + daemon + code server) for a Dagster home, e.g. for ``pine demo``.

The home gets the repository's ``dagster.yaml`` (SQLite storage in the home), with Postgres storage
(``deploy/dagster-postgres.yaml``) appended when ``PINE_DAGSTER_PG_URL`` is set; the code location
is the repository's ``workspace.yaml``. ``dagster dev`` runs in its own session so that stopping it (SIGTERM, which it
turns into a clean shutdown of its services; then SIGKILL of the whole group) never touches the
caller, and a Ctrl-C in the caller's terminal does not stop it before the caller is done with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from pine.redis_server import free_port

REPO: Final = Path(__file__).resolve().parents[1]
DEFAULT_PORT: Final = 3000
# Set: the instance keeps runs, event logs and schedules in Postgres, not SQLite.
PG_URL_ENV: Final = "PINE_DAGSTER_PG_URL"
POSTGRES_STORAGE: Final = REPO / "deploy" / "dagster-postgres.yaml"
# dagster-postgres installs psycopg2, and SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3:
# the URL must name the driver.
PG_SCHEME: Final = "postgresql+psycopg2"
STOP_TIMEOUT_S: Final = 30.0

LOCATIONS_QUERY: Final = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""
# The name Dagster gives the one repository of a ``dg.Definitions`` code location.
REPOSITORY: Final = "__repository__"
LAUNCH_RUN_MUTATION: Final = """
mutation LaunchRun($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message } } }
"""
RUNS_QUERY: Final = """
query Runs($ids: [String]) { runsOrError(filter: {runIds: $ids}) { __typename
    ... on Runs { results { runId status } }
    ... on Error { message } } }
"""
# The metadata of a run's materialisations and its asset checks' results.
RUN_EVENTS_QUERY: Final = """
query RunEvents($runId: ID!) { runOrError(runId: $runId) { __typename
    ... on Run { eventConnection(limit: 1000) { events { __typename
        ... on MaterializationEvent { assetKey { path } partition metadataEntries { label __typename
            ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue }
            ... on TextMetadataEntry { text } } }
        ... on AssetCheckEvaluationEvent { evaluation { checkName success } } } } }
    ... on Error { message } } }
"""


class DagsterDevError(RuntimeError):
    """``dagster dev`` exited, or its code location failed to load; the message says where its log is."""


def instance_config(env: Mapping[str, str]) -> str:
    """The text of a Dagster home's ``dagster.yaml``: the repository's, plus Postgres storage when
    ``PINE_DAGSTER_PG_URL`` is set in ``env`` (ValueError, never echoing the URL, unless it is a
    ``postgresql+psycopg2://`` URL).

    The storage section reads the URL from the environment (``env: PINE_DAGSTER_PG_URL``), so the
    password stays out of the file; every Dagster process must see the variable.
    """
    text = (REPO / "dagster.yaml").read_text()
    url = env.get(PG_URL_ENV, "").strip()
    if not url:
        return text
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme != PG_SCHEME:
        raise ValueError(f"{PG_URL_ENV} must be a {PG_SCHEME}:// URL ({PG_SCHEME}://user:password@host:5432/dagster); "
                         f"got {'scheme ' + repr(scheme) if scheme else 'no scheme'}. Unset it for SQLite.")
    return text + "\n" + POSTGRES_STORAGE.read_text()


def write_instance_config(home: Path, env: Mapping[str, str]) -> Path:
    """Write :func:`instance_config` to ``home/dagster.yaml`` (creating ``home``); returns the file."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(instance_config(env))
    return path


def pick_port(preferred: int = DEFAULT_PORT) -> int:
    """``preferred`` if nothing listens on it on 127.0.0.1, else a free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


class DagsterDev:
    """One ``dagster dev`` for ``home`` on ``host:port``, its output appended to ``log``."""

    def __init__(
        self, home: Path, log: Path, *, port: int | None = None, host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.home = Path(home)
        self.log = Path(log)
        self.host = host
        self.port = port or pick_port()
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The UI's address."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> DagsterDev:
        """Launch ``dagster dev``; returns at once (see :meth:`wait_loaded`)."""
        write_instance_config(self.home, {**os.environ, **self.env})
        self.log.parent.mkdir(parents=True, exist_ok=True)
        dagster = Path(sys.executable).parent / "dagster"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(dagster), "dev", "-w", str(REPO / "workspace.yaml"), "-h", self.host, "-p", str(self.port)],
                cwd=REPO,  # workspace.yaml's working_directory is relative to it
                env={**os.environ, **self.env, "DAGSTER_HOME": str(self.home)},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """POST ``query`` to the webserver's GraphQL endpoint; the ``data`` of the answer."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def launch_run(self, job: str, run_config: Mapping[str, Any], tags: Mapping[str, str], *,
                   location: str = "pine") -> str:
        """Launch a run of ``job`` of code location ``location`` (through the run queue); its run id.
        DagsterDevError naming why Dagster refused it."""
        selector = {"repositoryLocationName": location, "repositoryName": REPOSITORY, "jobName": job}
        params = {"selector": selector,
                  "runConfigData": dict(run_config),
                  "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}}
        result = self.graphql(LAUNCH_RUN_MUTATION, {"params": params})["launchRun"]
        if result["__typename"] == "LaunchRunSuccess":
            return str(result["run"]["runId"])
        errors = [e["message"] for e in result.get("errors", [])] or [result.get("message", "")]
        raise DagsterDevError(f"run of {job} not launched: {result['__typename']}: {'; '.join(errors)}")

    def run_statuses(self, run_ids: list[str]) -> dict[str, str]:
        """Status of each run (``QUEUED``, ``STARTED``, ``SUCCESS``, ``FAILURE``, …) by run id."""
        result = self.graphql(RUNS_QUERY, {"ids": run_ids})["runsOrError"]
        if result["__typename"] != "Runs":
            raise DagsterDevError(f"runs not readable: {result.get('message')}")
        return {r["runId"]: r["status"] for r in result["results"]}

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        """The materialisations (asset key, partition, metadata entries) and asset check evaluations of a run."""
        result = self.graphql(RUN_EVENTS_QUERY, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            raise DagsterDevError(f"run {run_id} not readable: {result.get('message')}")
        return [e for e in result["eventConnection"]["events"] if len(e) > 1]  # events of the two kinds asked for

    def run_url(self, run_id: str) -> str:
        """The run's page in the UI (its steps, logs and errors)."""
        return f"{self.url}/runs/{run_id}"

    def asset_url(self, key: str, view: str = "events") -> str:
        """The asset's page in the UI, on tab ``view`` (``events``: its materialisations; ``partitions``)."""
        return f"{self.url}/assets/{key}?view={view}"

    def location_status(self) -> dict[str, str]:
        """Load status of each code location (``LOADING``, ``LOADED``); DagsterDevError if one failed to load."""
        data = self.graphql(LOCATIONS_QUERY)["workspaceOrError"]
        if data["__typename"] != "Workspace":
            raise DagsterDevError(f"the workspace failed to load: {data.get('message')}")
        status = {}
        for entry in data["locationEntries"]:
            loaded = entry["locationOrLoadError"]
            if loaded is not None and loaded["__typename"] == "PythonError":
                raise DagsterDevError(f"code location {entry['name']} failed to load: {loaded['message']}")
            status[entry["name"]] = entry["loadStatus"]
        return status

    def is_loaded(self) -> bool:
        """Whether the webserver answers and every code location is LOADED (one query, never raises)."""
        try:
            status = self.location_status()
        except (DagsterDevError, urllib.error.URLError, ConnectionError, TimeoutError):
            return False
        return bool(status) and all(s == "LOADED" for s in status.values())

    def wait_loaded(self, timeout: float) -> None:
        """Block until every code location is LOADED; DagsterDevError if it exits, fails or takes longer."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise DagsterDevError(f"dagster dev is not running; see {self.log}")
            try:
                status = self.location_status()
                if status and all(s == "LOADED" for s in status.values()):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # the webserver is not listening yet
            if time.monotonic() > deadline:
                raise DagsterDevError(f"the code location did not load within {timeout:.0f}s; see {self.log}")
            time.sleep(0.5)

    def stop(self) -> int | None:
        """SIGTERM (dagster dev shuts its services down), then SIGKILL to the whole group; the exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind (webserver, daemon, code server)
        return proc.wait()

    def __enter__(self) -> DagsterDev:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
