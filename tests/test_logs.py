"""One log format for every process (component, strategy, symbol on every line), JSON-lines files with
rotation, secrets scrubbed, and `pine logs` merging the files of all processes by time."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pine.log_reader import LogFilter, follow, log_files, merged
from pine.logs import add_log_file, log_symbol, register_secret, setup_logging
from tests.conftest import REPO

EXAMPLE = REPO / "data" / "config.multi_alpha.example.yml"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def _rec(time: str, component: str, message: str, *, strategy: str = "-", symbol: str = "-",
         level: str = "INFO") -> str:
    return json.dumps({"time": time, "level": level, "component": component, "strategy": strategy,
                       "symbol": symbol, "logger": "t", "message": message}) + "\n"


def test_every_line_names_component_strategy_and_symbol(restore_logging: None, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("worker:ibs_a", strategy="ibs_a")
    path = add_log_file(tmp_path / "logs", max_bytes=10_000, backup_count=2)
    secret = "https://webhooks.example/trading/webhook/0123456789abcdef/s3cr3tpassw0rd"
    register_secret(secret)
    log = logging.getLogger("workers.test")
    log.info("starting")
    with log_symbol("CL"):
        log.warning("order to %s", secret)
    log.info("explicit", extra={"symbol": "GC"})
    try:
        raise RuntimeError(f"boom at {secret}")
    except RuntimeError:
        log.exception("failed")

    console = capsys.readouterr().err.splitlines()
    assert console[0].endswith("INFO worker:ibs_a strategy=ibs_a symbol=- workers.test: starting")
    assert " WARNING worker:ibs_a strategy=ibs_a symbol=CL workers.test: order to ***" in console[1]
    assert "symbol=GC" in console[2]
    assert secret not in "\n".join(console) and "s3cr3tpassw0rd" not in "\n".join(console)

    assert path == tmp_path / "logs" / "worker_ibs_a.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["component"], r["strategy"], r["symbol"], r["message"]) for r in records] == [
        ("worker:ibs_a", "ibs_a", "-", "starting"), ("worker:ibs_a", "ibs_a", "CL", "order to ***"),
        ("worker:ibs_a", "ibs_a", "GC", "explicit"), ("worker:ibs_a", "ibs_a", "-", "failed")]
    assert "RuntimeError: boom at ***" in records[-1]["exc"] and secret not in path.read_text()


def test_log_files_rotate_by_size(restore_logging: None, tmp_path: Path) -> None:
    setup_logging("hub")
    add_log_file(tmp_path, max_bytes=10_000, backup_count=2)
    for i in range(400):
        logging.getLogger("hub.x").info("line %d %s", i, "x" * 40)
    files = log_files(tmp_path)["hub"]
    assert [p.name for p in files] == ["hub.jsonl.2", "hub.jsonl.1", "hub.jsonl"]
    assert all(p.stat().st_size <= 10_000 for p in files)
    kept = [r["message"] for r in merged(tmp_path, LogFilter())]
    assert kept[-1].startswith("line 399 ") and kept == sorted(kept, key=lambda m: int(m.split()[1]))


def test_pine_logs_merges_every_process_by_time_and_filters(tmp_path: Path) -> None:
    logs = tmp_path / "runtime" / "logs"
    logs.mkdir(parents=True)
    (logs / "hub.jsonl").write_text(_rec("2024-03-05T14:00:00.100+00:00", "hub", "bars published")
                                    + _rec("2024-03-05T14:00:02.000+00:00", "hub", "clock 14:01"))
    (logs / "worker_ibs_a.jsonl.1").write_text(
        _rec("2024-03-05T14:00:00.050+00:00", "worker:ibs_a", "warmup done", strategy="ibs_a"))
    (logs / "worker_ibs_a.jsonl").write_text(
        _rec("2024-03-05T14:00:01.000+00:00", "worker:ibs_a", "CL entry", strategy="ibs_a", symbol="CL")
        + "{half a line")
    (logs / "worker_breakout.jsonl").write_text(
        _rec("2024-03-05T14:00:01.500+00:00", "worker:breakout", "ES stop", strategy="breakout", symbol="ES",
             level="WARNING"))
    env = {"PINE_RUNTIME_DIR": str(tmp_path / "runtime"), "PATH": "/usr/bin:/bin"}

    def pine_logs(*args: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-m", "pine.cli", "logs", "--config", str(EXAMPLE), *args], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    lines = pine_logs()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "warmup done", "bars published", "CL entry", "ES stop", "clock 14:01"]
    assert lines[2] == "2024-03-05T14:00:01.000+00:00 INFO worker:ibs_a strategy=ibs_a symbol=CL t: CL entry"
    assert [line.split(": ", 1)[1] for line in pine_logs("--component", "worker")] == [
        "warmup done", "CL entry", "ES stop"]
    assert [line.split(": ", 1)[1] for line in pine_logs("--component", "hub", "worker:breakout")] == [
        "bars published", "ES stop", "clock 14:01"]
    assert [json.loads(line)["message"] for line in pine_logs("--symbol", "CL", "--json")] == ["CL entry"]
    assert [line.split(": ", 1)[1] for line in pine_logs("--level", "WARNING")] == ["ES stop"]
    assert [line.split(": ", 1)[1] for line in pine_logs("-n", "2")] == ["ES stop", "clock 14:01"]


def test_follow_prints_new_lines_of_every_file_across_a_rotation(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pine.log_reader.FOLLOW_POLL_S", 0.01)
    (tmp_path / "hub.jsonl").write_text(_rec("2024-03-05T14:00:00.000+00:00", "hub", "old"))
    out = io.StringIO()
    started = threading.Event()
    want = ["hub 1", "worker 1", "hub 2 (before rotation)", "hub 3 (after rotation)"]

    def write() -> None:
        started.wait()
        with (tmp_path / "hub.jsonl").open("a") as fh:
            fh.write(_rec("2024-03-05T14:00:01.000+00:00", "hub", "hub 1"))
        (tmp_path / "worker_x.jsonl").write_text(_rec("2024-03-05T14:00:01.500+00:00", "worker:x", "worker 1"))

    def rotate() -> None:
        with (tmp_path / "hub.jsonl").open("a") as fh:
            fh.write(_rec("2024-03-05T14:00:02.000+00:00", "hub", "hub 2 (before rotation)"))
        (tmp_path / "hub.jsonl").rename(tmp_path / "hub.jsonl.1")
        (tmp_path / "hub.jsonl").write_text(_rec("2024-03-05T14:00:03.000+00:00", "hub", "hub 3 (after rotation)"))

    polls = iter(range(1000))

    def stop() -> bool:
        n = next(polls)
        if n == 1:
            started.set()
            writer.join()
        elif n == 3:
            rotate()
        return n > 5 or n == 999

    writer = threading.Thread(target=write)
    writer.start()
    follow(tmp_path, LogFilter(), out, as_json=False, stop=stop)
    assert [line.split(": ", 1)[1] for line in out.getvalue().splitlines()] == want
