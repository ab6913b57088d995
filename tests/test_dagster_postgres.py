"""The Dagster instance: SQLite by default, Postgres (a private cluster here) when PINE_DAGSTER_PG_URL is set."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml

from assets.contract_map import contract_map
from orchestration.dagster_dev import PG_URL_ENV, REPO, DagsterDev, instance_config, write_instance_config
from orchestration.resources import PineConfigResource
from tests.postgres_support import postgres_url  # noqa: F401  (fixture)

CANARY = "CANARY-pg-password-7c1d"


def test_instance_config_is_the_repository_sqlite_one_without_the_setting(tmp_path: Path) -> None:
    path = write_instance_config(tmp_path / "home", {PG_URL_ENV: "  "})
    assert path.read_text() == (REPO / "dagster.yaml").read_text()
    assert "storage" not in yaml.safe_load(path.read_text())  # Dagster's default: SQLite in the home


@pytest.mark.parametrize("url, said", [
    (f"mysql://dagster:{CANARY}@db:3306/dagster", "got scheme 'mysql'"),
    (f"postgres://dagster:{CANARY}@db/dagster", "got scheme 'postgres'"),
    # SQLAlchemy 2.1 would load psycopg 3 for it, which dagster-postgres does not install.
    (f"postgresql://dagster:{CANARY}@db/dagster", "got scheme 'postgresql'"),
    (f"dagster:{CANARY}@db/dagster", "got no scheme"),
])
def test_a_url_that_is_not_postgresql_is_refused_without_echoing_it(url: str, said: str) -> None:
    with pytest.raises(ValueError) as err:
        instance_config({PG_URL_ENV: url})
    message = str(err.value)
    assert message.startswith(f"{PG_URL_ENV} must be a postgresql+psycopg2:// URL") and said in message
    assert CANARY not in message


def test_dagster_dev_refuses_a_bad_url_before_starting_anything(tmp_path: Path) -> None:
    dev = DagsterDev(tmp_path / "home", tmp_path / "dagster.log", env={PG_URL_ENV: f"postgres://u:{CANARY}@db/x"})
    with pytest.raises(ValueError, match=PG_URL_ENV):
        dev.start()
    assert dev.proc is None and not (tmp_path / "home" / "dagster.yaml").exists()


def test_with_a_postgres_url_runs_and_events_are_stored_in_postgres(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    # Trust auth ignores the password: it only proves the password never lands in the instance directory.
    url = postgres_url.replace("postgresql://pine@", f"postgresql+psycopg2://pine:{CANARY}@")
    monkeypatch.setenv(PG_URL_ENV, url)
    home = tmp_path / "dagster_home"
    config = write_instance_config(home, {PG_URL_ENV: url})
    assert CANARY not in config.read_text()
    assert yaml.safe_load(config.read_text())["storage"] == {"postgres": {"postgres_url": {"env": PG_URL_ENV}}}

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        # The rest of dagster.yaml still applies: the run queue's one-run-per-process limit.
        run_queue = instance.get_concurrency_config().run_queue_config
        assert run_queue is not None and run_queue.tag_concurrency_limits[0]["key"] == "pine/process"

        result = dg.materialize([contract_map], instance=instance, resources={"pine_config": PineConfigResource()})
        assert result.success
    finally:
        instance.dispose()

    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchall() == [("SUCCESS",)]
        cur.execute("SELECT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
                    (result.run_id, "ASSET_MATERIALIZATION"))
        assert cur.fetchall() == [('["contract_map"]',)]
    assert not list(home.glob("history/runs*"))  # nothing went to SQLite
