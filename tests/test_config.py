"""Config loading, every error path, .env and ${VAR} handling, the report and ``pine config check``."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from datetime import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pine.config import ConfigError, default_config_path, load_config
from pine.config.report import config_report

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "data" / "config.multi_alpha.example.yml"
CONTRACT_MAP = REPO / "data" / "contract_map.yml"
EXAMPLE_DATA = yaml.safe_load(EXAMPLE.read_text())

CANARY_KEY = "db-CANARY0123456789abcdef"
CANARY_WEBHOOK = "https://traderspost.io/trading/webhook/CANARY-7f3a9c/token-CANARY-a1"
CANARY_DISCORD = "https://discord.com/api/webhooks/42/CANARY-discord-token"
CANARY_REDIS_PASSWORD = "CANARYredispass"
CANARY_ENV = {
    "DATABENTO_API_KEY": CANARY_KEY,
    "TRADERSPOST_IBS_A_WEBHOOK": CANARY_WEBHOOK,
    "DISCORD_WEBHOOK_URL": CANARY_DISCORD,
    "REDIS_URL": f"redis://:{CANARY_REDIS_PASSWORD}@cache.internal:6390/2",
}
DELETE = object()


@pytest.fixture
def _sandbox() -> Path:
    """The empty working directory conftest runs every test in."""
    return Path.cwd()


def edited(**changes: Any) -> dict[str, Any]:
    """The example config with ``changes`` applied; keys are dotted paths (``__`` stands for ``.``)."""
    data = copy.deepcopy(EXAMPLE_DATA)
    for dotted, value in changes.items():
        *parents, last = dotted.replace("__", ".").split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def write(tmp_path: Path, content: dict[str, Any] | str, name: str = "config.yml") -> Path:
    """Write a config file into ``tmp_path/cfg`` (not the working directory)."""
    folder = tmp_path / "cfg"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def config_error(path: Path) -> ConfigError:
    """The ConfigError of loading ``path``; its message always names the file."""
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.source == path
    assert str(path) in str(exc.value)
    return exc.value


def error_at(err: ConfigError, key: str) -> str:
    """The one error line about ``key``."""
    lines = [e for e in err.errors if e.startswith(f"{key}: ")]
    assert len(lines) == 1, f"expected one error at {key}, got {err.errors}"
    return lines[0]


# --- loading ---------------------------------------------------------------------------------


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.source == EXAMPLE
    assert list(cfg.enabled_strategies()) == ["ibs_a", "ibs_b", "breakout"]
    assert list(cfg.strategy("ibs_a").instruments) == ["6A", "6C", "6M", "CL", "GC", "HG"]
    assert list(cfg.strategy("ibs_b").instruments) == ["6B", "6N", "6S", "SI", "YM"]
    assert cfg.strategy("breakout").strategy_type == "breakout"
    assert list(cfg.strategy("breakout").instruments) == ["ES", "NQ", "RTY", "YM"]
    assert cfg.strategy("ibs_a").historical_warmup_compression == "1h"
    assert cfg.strategy("ibs_a").warmup.daily_bars == 250 and cfg.strategy("ibs_a").warmup.hourly_days == 15
    assert len(cfg.instruments) == 19
    assert cfg.instruments["ES"].tick_size == 0.25
    assert cfg.instruments["6A"].databento_product_id == "6A.FUT"
    assert cfg.databento.api_key is None
    assert cfg.strategy("ibs_a").broker_account is None
    assert cfg.redis.resolved_url() is None
    assert cfg.sessions.close == time(17, 0)
    assert cfg.runtime_dir == Path(os.environ["PINE_RUNTIME_DIR"])
    assert cfg.contract_map_path == CONTRACT_MAP


def test_default_config_path(monkeypatch: pytest.MonkeyPatch, _sandbox: Path) -> None:
    assert default_config_path() == EXAMPLE
    (_sandbox / "config.multi_alpha.yml").write_text("{}")
    assert default_config_path() == Path("config.multi_alpha.yml")
    monkeypatch.setenv("PINE_CONFIG", "/etc/pine/pine.yml")
    assert default_config_path() == Path("/etc/pine/pine.yml")


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, edited(contract_map_path="my_map.yml", models_path="models"))
    (path.parent / "my_map.yml").write_text(CONTRACT_MAP.read_text())
    cfg = load_config(path)
    assert cfg.contract_map_path == path.parent / "my_map.yml"
    assert cfg.models_path == path.parent / "models"


# --- file-level errors -----------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    err = config_error(tmp_path / "absent.yml")
    assert err.errors == ["file not found (pass --config FILE or set PINE_CONFIG)"]


def test_invalid_yaml_names_the_line_but_never_quotes_it(tmp_path: Path) -> None:
    path = write(tmp_path, f"databento:\n  api_key: {CANARY_KEY}: oops\n")
    err = config_error(path)
    assert len(err.errors) == 1
    assert err.errors[0].startswith("not valid YAML at line 2, column ")
    assert "CANARY" not in str(err)


def test_duplicate_keys_are_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "portfolio:\n  max_positions: 2\n  max_positions: 3\n")
    err = config_error(path)
    assert err.errors == ["not valid YAML at line 3, column 3: duplicate key 'max_positions'"]


@pytest.mark.parametrize(("body", "found"), [("- a\n- b\n", "a list"), ("just text\n", "a str"),
                                             ("", "an empty file"), ("42\n", "a int")])
def test_top_level_must_be_a_mapping(tmp_path: Path, body: str, found: str) -> None:
    err = config_error(write(tmp_path, body))
    assert len(err.errors) == 1
    assert err.errors[0].startswith("(top level): must be a mapping of sections")
    assert err.errors[0].endswith(f"found {found}")


# --- schema errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("strategy", "did you mean 'strategies'?"),
        ("databento.apikey", "did you mean 'api_key'?"),
        ("redis.uri", "did you mean 'url'?"),
        ("sessions.time_zone", "did you mean 'timezone'?"),
        ("heartbeat.intervall", "did you mean 'interval'?"),
        ("portfolio.max_position", "did you mean 'max_positions'?"),
        ("portfolio.xyz", "allowed: starting_cash, max_positions, daily_stop_loss"),
        ("strategies.ibs_a.broker_acount", "did you mean 'broker_account'?"),
        ("strategies.ibs_a.instruments.6A.sise", "did you mean 'size'?"),
        ("instruments.ES.tick", "did you mean 'tick_size'?"),
        ("source", "set by the loader, not the file"),
    ],
)
def test_unknown_key_anywhere(tmp_path: Path, key: str, hint: str) -> None:
    err = config_error(write(tmp_path, edited(**{key: 1})))
    assert error_at(err, key) == f"{key}: unknown key ({hint})"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("portfolio.max_positions", "two", "valid integer"),
        ("strategies.ibs_a.enabled", "maybe", "valid boolean"),
        ("instruments.ES.multiplier", [50], "valid number"),
        ("strategies.ibs_a.instruments", 5, "valid dictionary"),
        ("strategies.ibs_a.params", [1, 2], "valid dictionary"),
        ("strategies.ibs_a.broker_account", {"token": "x"}, "valid string"),
        ("redis", "localhost", "valid dictionary"),
        ("sessions.close", 1020, 'write the time in quotes, e.g. "17:00"'),
        ("sessions.close", "5pm", "valid time"),
        ("instruments.ES.databento_product_id", "ES", "must be a Databento parent symbol"),
    ],
)
def test_wrong_type(tmp_path: Path, key: str, value: Any, message: str) -> None:
    err = config_error(write(tmp_path, edited(**{key: value})))
    assert message in error_at(err, key)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("instruments.ES.tick_size", 0),
        ("instruments.ES.multiplier", -50),
        ("instruments.ES.commission", -1),
        ("instruments.ES.margin", -1),
        ("portfolio.starting_cash", 0),
        ("portfolio.daily_stop_loss", -100),
        ("portfolio.max_positions", 0),
        ("strategies.ibs_a.starting_cash", -1),
        ("strategies.ibs_a.slippage_ticks", -1),
        ("strategies.ibs_a.instruments.6A.size", 0),
        ("strategies.ibs_a.instruments.6A.commission", -4.5),
        ("heartbeat.interval", 0),
        ("heartbeat.ttl", -5),
        ("redis.port", 0),
        ("sessions.fixed_utc_close_hour", 24),
    ],
)
def test_out_of_range_numbers(tmp_path: Path, key: str, value: float) -> None:
    err = config_error(write(tmp_path, edited(**{key: value})))
    assert error_at(err, key).startswith(f"{key}: Input should be ")


def test_missing_required_key(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, edited(**{"strategies.ibs_a.strategy_type": DELETE})))
    assert error_at(err, "strategies.ibs_a.strategy_type") == "strategies.ibs_a.strategy_type: required key is missing"


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, edited(**{
        "portfolio.max_positions": 0,
        "redis.uri": "redis://x",
        "strategies.ibs_b.instruments.SI.size": -1,
        "strategies.ibs_a.broker_account": "${PINE_TEST_UNSET_HOOK}",
    }))
    err = config_error(path)
    assert len(err.errors) == 4
    for key in ("portfolio.max_positions", "redis.uri", "strategies.ibs_b.instruments.SI.size",
                "strategies.ibs_a.broker_account"):
        error_at(err, key)
    assert f"{path}: 4 errors:" in str(err)


def test_strategy_referencing_unknown_instruments(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, edited(**{
        "strategies.ibs_a.instruments.ZZ": {"size": 1},
        "strategies.breakout.instruments": ["ES", "QQ"],
    })))
    known = ", ".join(sorted(EXAMPLE_DATA["instruments"]))
    message = error_at(err, "strategies.ibs_a.instruments.ZZ")
    assert message.endswith(f"no such instrument in 'instruments' (known: {known})")
    error_at(err, "strategies.breakout.instruments.QQ")
    assert len(err.errors) == 2


@pytest.mark.parametrize(("empty", "message"), [({}, "at least one instrument"), (None, "valid dictionary")])
def test_empty_instruments(tmp_path: Path, empty: dict[str, Any] | None, message: str) -> None:
    err = config_error(write(tmp_path, edited(instruments=empty)))
    assert message in error_at(err, "instruments")


@pytest.mark.parametrize("empty", [[], {}])
def test_strategy_without_instruments(tmp_path: Path, empty: Any) -> None:
    err = config_error(write(tmp_path, edited(**{"strategies.ibs_a.instruments": empty})))
    assert error_at(err, "strategies.ibs_a.instruments").endswith("a strategy needs at least one instrument")


def test_instrument_listed_twice(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, edited(**{"strategies.breakout.instruments": ["ES", "NQ", "ES"]})))
    assert error_at(err, "strategies.breakout.instruments").endswith("listed more than once: ES")


# --- contract map cross-check ----------------------------------------------------------------


def test_contract_map_mismatches_name_key_file_and_both_values(tmp_path: Path) -> None:
    gc = {k: v for k, v in EXAMPLE_DATA["instruments"]["GC"].items() if k != "exchange"}
    path = write(tmp_path, edited(**{
        "instruments.ES.tick_size": 0.5,
        "instruments.NQ.multiplier": 5,
        "instruments.RTY.databento_product_id": "M2K.FUT",
        "instruments.CL.exchange": "CME",
        "instruments.GC": gc,
        "instruments.XX": {"multiplier": 1, "tick_size": 1, "databento_product_id": "XX.FUT"},
    }))
    err = config_error(path)
    where = f"contract map {CONTRACT_MAP}"
    assert sorted(err.errors) == sorted([
        f"instruments.ES.tick_size: 0.5 disagrees with {where} (0.25)",
        f"instruments.NQ.multiplier: 5 disagrees with {where} (20)",
        f"instruments.RTY.databento_product_id: M2K.FUT disagrees with {where} (RTY.FUT)",
        f"instruments.CL.exchange: CME disagrees with {where} (NYMEX)",
        f"instruments.GC.exchange: not set, so CME, disagrees with {where} (COMEX)",
        f"instruments.XX: root XX is not in {where} (known roots: 6A, 6B, 6C, 6E, 6J, 6M, 6N, 6S, CL, ES, GC, HG, "
        "NG, NQ, PL, RTY, SI, YM, ZB, ZC, ZS, ZW)",
    ])
    # The Dagster asset loads the same file without the check and reports it as a failed asset check.
    assert load_config(path, verify_contract_map=False).instruments["ES"].tick_size == 0.5


def test_contract_map_path_problems(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, edited(contract_map_path="absent_map.yml")))
    assert error_at(err, "contract_map_path").endswith("absent_map.yml: contract map not found")

    path = write(tmp_path, edited(contract_map_path="bad_map.yml"), name="other.yml")
    (path.parent / "bad_map.yml").write_text(CONTRACT_MAP.read_text().replace("tick_size: 0.25,", "tick_size: -0.25,"))
    err = config_error(path)
    assert "contracts.ES.tick_size: Input should be greater than 0" in error_at(err, "contract_map_path")


# --- ${VAR}, .env and environment overrides -----------------------------------------------------


def test_unset_variable_without_default(tmp_path: Path) -> None:
    path = write(tmp_path, edited(**{
        "strategies.ibs_a.broker_account": "${PINE_TEST_UNSET_HOOK}",
        "strategies.ibs_a.params.note": "prefix-${PINE_TEST_UNSET_NOTE}",
    }))
    err = config_error(path)
    assert err.errors == [
        "strategies.ibs_a.broker_account: environment variable PINE_TEST_UNSET_HOOK is not set "
        "(use ${PINE_TEST_UNSET_HOOK:-default} to allow that)",
        "strategies.ibs_a.params.note: environment variable PINE_TEST_UNSET_NOTE is not set "
        "(use ${PINE_TEST_UNSET_NOTE:-default} to allow that)",
    ]


def test_variable_defaults_and_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, edited(**{
        "databento.api_key": "${PINE_TEST_KEY:-}",
        "strategies.ibs_a.broker_account": "${PINE_TEST_HOOK:-https://hooks.example/default}",
        "heartbeat.interval": "${PINE_TEST_HB:-15}",
        "strategies.ibs_a.params.note": "v-${PINE_TEST_SUFFIX:-x}-z",
    }))
    cfg = load_config(path)
    assert cfg.databento.api_key is None
    assert cfg.strategy("ibs_a").broker_account.get_secret_value() == "https://hooks.example/default"  # type: ignore[union-attr]
    assert cfg.heartbeat.interval == 15.0
    assert cfg.strategy("ibs_a").params["note"] == "v-x-z"

    monkeypatch.setenv("PINE_TEST_KEY", "0123456789")
    monkeypatch.setenv("PINE_TEST_HOOK", "https://hooks.example/from-env")
    monkeypatch.setenv("PINE_TEST_HB", "45")
    monkeypatch.setenv("PINE_TEST_SUFFIX", "y")
    cfg = load_config(path)
    # A key made of digits stays the exact string (no YAML number conversion).
    assert cfg.databento.api_key.get_secret_value() == "0123456789"  # type: ignore[union-attr]
    assert cfg.strategy("ibs_a").broker_account.get_secret_value() == "https://hooks.example/from-env"  # type: ignore[union-attr]
    assert cfg.heartbeat.interval == 45.0
    assert cfg.strategy("ibs_a").params["note"] == "v-y-z"


def test_dotenv_in_working_directory_is_loaded(tmp_path: Path, _sandbox: Path) -> None:
    (_sandbox / ".env").write_text("PINE_TEST_HOOK=https://hooks.example/cwd-dotenv\n")
    path = write(tmp_path, edited(**{"strategies.ibs_a.broker_account": "${PINE_TEST_HOOK}"}))
    cfg = load_config(path)
    assert cfg.strategy("ibs_a").broker_account.get_secret_value() == "https://hooks.example/cwd-dotenv"  # type: ignore[union-attr]
    assert cfg.env_files == (_sandbox / ".env",)


def test_dotenv_beside_the_config_wins_over_the_working_directory(tmp_path: Path, _sandbox: Path) -> None:
    path = write(tmp_path, edited(**{"strategies.ibs_a.broker_account": "${PINE_TEST_HOOK}"}))
    (path.parent / ".env").write_text("PINE_TEST_HOOK=https://hooks.example/config-dotenv\n")
    (_sandbox / ".env").write_text("PINE_TEST_HOOK=https://hooks.example/cwd-dotenv\nPINE_TEST_ONLY_CWD=1\n")
    cfg = load_config(path)
    assert cfg.strategy("ibs_a").broker_account.get_secret_value() == "https://hooks.example/config-dotenv"  # type: ignore[union-attr]
    assert cfg.env_files == (path.parent / ".env", _sandbox / ".env")
    assert os.environ["PINE_TEST_ONLY_CWD"] == "1"


def test_dotenv_never_overrides_a_set_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINE_TEST_HOOK", "https://hooks.example/real-env")
    path = write(tmp_path, edited(**{"strategies.ibs_a.broker_account": "${PINE_TEST_HOOK}"}))
    (path.parent / ".env").write_text("PINE_TEST_HOOK=https://hooks.example/dotenv\n"
                                      "REDIS_URL=redis://dotenv-host:6390/0\n")
    cfg = load_config(path)
    assert cfg.strategy("ibs_a").broker_account.get_secret_value() == "https://hooks.example/real-env"  # type: ignore[union-attr]
    assert os.environ["PINE_TEST_HOOK"] == "https://hooks.example/real-env"
    # REDIS_URL only in .env still counts as the environment override.
    assert cfg.redis.resolved_url() == "redis://dotenv-host:6390/0"


def test_redis_url_from_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, edited(redis={"url": "redis://file-host:6379/0", "host": "other-host"}))
    assert load_config(path).redis.resolved_url() == "redis://file-host:6379/0"
    monkeypatch.setenv("REDIS_URL", "redis://env-host:6380/1")
    assert load_config(path).redis.resolved_url() == "redis://env-host:6380/1"


def test_runtime_dir_from_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _sandbox: Path
) -> None:
    path = write(tmp_path, edited(runtime_dir="file-runtime"))
    monkeypatch.setenv("PINE_RUNTIME_DIR", str(tmp_path / "env-runtime"))
    assert load_config(path).runtime_dir == tmp_path / "env-runtime"
    monkeypatch.delenv("PINE_RUNTIME_DIR")
    # Relative runtime dirs are relative to the working directory, like the default ./runtime.
    assert load_config(path).runtime_dir == _sandbox / "file-runtime"


# --- report and `pine config check` ----------------------------------------------------------


def _with_secrets(tmp_path: Path) -> Path:
    # A secret copied into a free-form field must be redacted too.
    return write(tmp_path, edited(**{"strategies.ibs_a.params.hook_copy": "${TRADERSPOST_IBS_A_WEBHOOK}"}))


def _assert_no_canary(text: str) -> None:
    for secret in (CANARY_KEY, CANARY_WEBHOOK, CANARY_DISCORD, CANARY_REDIS_PASSWORD, "CANARY"):
        assert secret not in text


def test_report_redacts_every_secret_and_summarises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CANARY_ENV.items():
        monkeypatch.setenv(name, value)
    report = config_report(load_config(_with_secrets(tmp_path)))
    _assert_no_canary(report)
    resolved_yaml, summary = report.split("\nSummary\n")
    resolved = yaml.safe_load(resolved_yaml)
    assert resolved["databento"]["api_key"] == "***"
    assert resolved["redis"]["url"] == "***"
    assert resolved["strategies"]["ibs_a"]["broker_account"] == "***"
    assert resolved["strategies"]["ibs_a"]["discord_webhook_url"] == "***"
    assert resolved["strategies"]["ibs_a"]["params"]["hook_copy"] == "***"
    assert resolved["strategies"]["ibs_b"]["broker_account"] == "(not set)"
    assert resolved["instruments"]["6A"]["tick_size"] == 0.00005
    assert resolved["sessions"]["close"] == "17:00"
    assert "live Databento GLBX.MDP3 trades (API key set)" in summary
    assert "configured: redis://cache.internal:6390/2" in summary
    ibs_a = next(line for line in summary.splitlines() if line.strip().startswith("ibs_a "))
    ibs_b = next(line for line in summary.splitlines() if line.strip().startswith("ibs_b "))
    assert "webhook (TradersPost)" in ibs_a and "discord on" in ibs_a
    assert "paper broker" in ibs_b and "discord on" in ibs_b
    assert ibs_a.split()[-6:] == ["6A", "6C", "6M", "CL", "GC", "HG"]


def test_report_on_embedded_defaults() -> None:
    report = config_report(load_config(EXAMPLE))
    summary = report.split("\nSummary\n")[1]
    assert "synthetic market / DBN replay (no Databento API key)" in summary
    assert "private embedded server, started by Pine" in summary
    assert "3 of 3 enabled" in summary
    assert summary.count("paper broker") == 3
    assert "webhook" not in summary
    assert "daily bars close 17:00 America/Chicago" in summary


def run_check(config: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``pine config check --config FILE`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "pine.cli", "config", "check", "--config", str(config)],
        cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False,
    )


def test_cli_check_valid_config_prints_the_redacted_report(tmp_path: Path, _sandbox: Path) -> None:
    proc = run_check(_with_secrets(tmp_path), _sandbox, **CANARY_ENV)
    assert proc.returncode == 0, proc.stderr
    assert "\nSummary\n" in proc.stdout
    assert "api_key: '***'" in proc.stdout
    _assert_no_canary(proc.stdout + proc.stderr)


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (edited(**{"portfolio.max_positions": 0, "strategies.ibs_a.broker_acount": "${TRADERSPOST_IBS_A_WEBHOOK}"}),
         "strategies.ibs_a.broker_acount: unknown key"),
        (edited(**{"strategies.ibs_a.broker_account": {"token": CANARY_WEBHOOK}}),
         "strategies.ibs_a.broker_account: Input should be a valid string"),
        (edited(**{"instruments.ES.tick_size": 0.5, "strategies.ibs_b.params.hook": "${DISCORD_WEBHOOK_URL}"}),
         "instruments.ES.tick_size: 0.5 disagrees with contract map"),
        (edited(**{"databento.api_key": "${PINE_TEST_UNSET_KEY}"}),
         "databento.api_key: environment variable PINE_TEST_UNSET_KEY is not set"),
        (f"strategies:\n  ibs_a:\n    broker_account: {CANARY_WEBHOOK}: oops\n", "not valid YAML at line 3"),
    ],
    ids=["schema", "secret-wrong-type", "contract-map", "unset-variable", "yaml"],
)
def test_cli_check_failing_config_exits_1_without_secrets(
    tmp_path: Path, _sandbox: Path, content: dict[str, Any] | str, key: str
) -> None:
    path = write(tmp_path, content)
    proc = run_check(path, _sandbox, **CANARY_ENV)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"pine: configuration error in {path}" in proc.stderr
    assert key in proc.stderr
    _assert_no_canary(proc.stdout + proc.stderr)


@pytest.mark.parametrize(
    ("sessions", "message"),
    [
        ({"close": "16:30"}, "sessions.close: .*on the hour"),
        ({"timezone": "America/Chikago"}, "sessions.timezone: .*unknown time zone"),
    ],
)
def test_session_settings_are_validated(tmp_path: Path, sessions: dict[str, str], message: str) -> None:
    err = config_error(write(tmp_path, edited(**{f"sessions.{k}": v for k, v in sessions.items()})))
    assert re.search(message, str(err)), str(err)
