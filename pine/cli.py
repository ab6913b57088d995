"""The ``pine`` command. Heavy libraries are imported inside the commands that use them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pine.config import ConfigError, PineConfig, load_config

Handler = Callable[[argparse.Namespace, PineConfig], int]


def _cmd_config_check(args: argparse.Namespace, cfg: PineConfig) -> int:
    from pine.config.report import config_report

    print(config_report(cfg))
    return 0


def _cmd_synth(args: argparse.Namespace, cfg: PineConfig) -> int:
    from hub.synthetic import synth_command

    return synth_command(cfg, args)


def _cmd_hub(args: argparse.Namespace, cfg: PineConfig) -> int:
    from hub.main import hub_command

    return hub_command(cfg, args)


def _cmd_worker(args: argparse.Namespace, cfg: PineConfig) -> int:
    # Composition: missing warmup caches are built by the hub's history code; workers never import the hub.
    from hub.history import worker_history_builder
    from workers.main import worker_command

    return worker_command(cfg, args, history_builder=worker_history_builder(cfg))


def _cmd_warmup(args: argparse.Namespace, cfg: PineConfig) -> int:
    from hub.history import warmup_command

    return warmup_command(cfg, args)


def _cmd_backtest(args: argparse.Namespace, cfg: PineConfig) -> int:
    from orchestration.backtest import backtest_command

    return backtest_command(cfg, args)


def _cmd_logs(args: argparse.Namespace, cfg: PineConfig) -> int:
    from pine.log_reader import logs_command

    return logs_command(cfg, args)


def _cmd_killswitch(args: argparse.Namespace, cfg: PineConfig) -> int:
    from pine.killswitch_cli import killswitch_command

    return killswitch_command(cfg, args)


def _cmd_ml(args: argparse.Namespace, cfg: PineConfig) -> int:
    from ml.cli import ml_command

    return ml_command(cfg, args)


def _cmd_notify(args: argparse.Namespace, cfg: PineConfig) -> int:
    from pine.notify.cli import notify_command

    return notify_command(cfg, args)


def _cmd_dashboard(args: argparse.Namespace, cfg: PineConfig) -> int:
    from dashboard.server import dashboard_command

    return dashboard_command(cfg, args)


def _cmd_demo(args: argparse.Namespace, cfg: PineConfig) -> int:
    from orchestration.demo import demo_command

    return demo_command(cfg, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pine", description="Pine: trading operations for CME futures strategies")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: $PINE_CONFIG, else ./config.multi_alpha.yml, else the shipped example)",
    )
    common.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common], help="run the whole system on a synthetic market")
    p.add_argument("--days", type=int, default=10, help="trading days of synthetic market (default 10)")
    p.add_argument("--history-days", type=int, default=25,
                   help="trading days of history before them, for the workers' warmup caches (default 25)")
    p.add_argument("--speed", default="max", help="replay speed: 'max' or a factor of real time")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", default="2024-03-04", help="first trading day of the synthetic market")
    p.add_argument("--no-dagster", action="store_true", help="do not start Dagster (webserver + daemon) alongside")
    p.add_argument("--serve", action="store_true",
                   help="keep the dashboard (and the demo's Redis) up after the demo until Ctrl-C")
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser("config", parents=[common], help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    c = csub.add_parser("check", parents=[common], help="print the resolved config (secrets redacted) or its errors")
    c.set_defaults(handler=_cmd_config_check)

    p = sub.add_parser("synth", parents=[common], help="write a seeded synthetic market as DBN files")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: <runtime>/market)")
    p.add_argument("--days", type=int, default=5, help="trading days (default 5)")
    p.add_argument("--start", default="2024-03-04", help="first trading day, YYYY-MM-DD (default 2024-03-04)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--symbols", nargs="*", default=None, help="roots (default: every enabled strategy's)")
    p.set_defaults(handler=_cmd_synth)

    p = sub.add_parser("hub", parents=[common], help="run the data hub (live feed, or --replay DBN files)")
    p.add_argument(
        "--replay", type=Path, nargs="+", default=None, help="DBN files or directories of them (.dbn or .dbn.zst)"
    )
    p.add_argument("--speed", default="max", help="replay speed: 'max' or a factor of real time")
    p.add_argument("--record", type=Path, default=None, metavar="DIR",
                   help="live feed: also record the stream to DBN files in DIR, one per session (replay with --replay)")
    p.set_defaults(handler=_cmd_hub)

    p = sub.add_parser("worker", parents=[common], help="run one strategy worker")
    p.add_argument("--strategy", required=True, help="strategy name from the config")
    p.add_argument(
        "--stop-at-end", action="store_true", help="exit when the hub has finished a replay and every bar is done"
    )
    p.add_argument("--check", action="store_true",
                   help="run the preflight checks only (config, Redis, broker, trades DB, bars, restart state)")
    p.set_defaults(handler=_cmd_worker)

    p = sub.add_parser("warmup", parents=[common], help="worker warmup history: parquet bar caches")
    wsub = p.add_subparsers(dest="warmup_command", required=True, metavar="SUBCOMMAND")
    w = wsub.add_parser("build", parents=[common],
                        help="build the caches (session daily, hourly, minute bars) from Databento or the DBN archive")
    w.add_argument("--source", choices=["auto", "databento", "archive"], default="auto",
                   help="auto: Databento when DATABENTO_API_KEY is set, else the DBN archive")
    w.add_argument("--archive", type=Path, nargs="+", default=None,
                   help="DBN files or directories (default: warmup.archive_dir, <runtime>/market)")
    w.add_argument("--symbols", nargs="+", default=None, help="roots (default: every configured instrument)")
    w.add_argument("--from", dest="since", default=None,
                   help="first trading day (YYYY-MM-DD) or ISO time (default: the archive's start; Databento: "
                        "enough for the longest daily lookback)")
    w.add_argument("--through", default=None,
                   help="last trading day (its session close) or ISO time the caches are complete through "
                        "(default: the end of the data)")
    w.add_argument("--timeframes", nargs="+", choices=["1min", "hourly", "daily"],
                   default=["1min", "hourly", "daily"], help="timeframes to cache (default: all three)")
    w.set_defaults(handler=_cmd_warmup)

    p = sub.add_parser("backtest", parents=[common],
                       help="run a strategy over history with the paper broker, as a live worker would have")
    p.add_argument("--strategy", required=True, help="strategy name from the config")
    p.add_argument("--from", dest="since", required=True, help="first trading day traded (YYYY-MM-DD) or ISO time")
    p.add_argument("--to", required=True, help="last trading day traded (YYYY-MM-DD, to its close) or ISO time")
    p.add_argument("--source", choices=["auto", "cache", "archive"], default="auto",
                   help="auto: the caches when they cover the window, else the DBN archive")
    p.add_argument("--archive", type=Path, nargs="+", default=None, help="DBN files or directories")
    p.add_argument("--json", action="store_true", help="print the trades as JSON lines")
    p.set_defaults(handler=_cmd_backtest)

    p = sub.add_parser("logs", parents=[common], help="the logs of every Pine process, merged by time")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    p.add_argument("--component", nargs="+", default=None,
                   help="only these components: hub, worker (every worker), worker:NAME, demo, warmup")
    p.add_argument("--strategy", default=None, help="only lines of this strategy")
    p.add_argument("--symbol", default=None, help="only lines about this symbol")
    p.add_argument("--level", default="DEBUG", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                   help="lowest level shown")
    p.add_argument("--lines", "-n", type=int, default=None, help="only the last N lines (before following)")
    p.add_argument("--json", action="store_true", help="print the records as JSON lines")
    p.set_defaults(handler=_cmd_logs)

    p = sub.add_parser("killswitch", parents=[common], help="set or show the portfolio killswitch")
    p.add_argument("action", choices=["halt", "reduce-only", "flatten", "off", "status"],
                   help="halt: send nothing; reduce-only: exits only; flatten: close everything at market, then halt; "
                        "off: trade; status: show state, slots and recent risk events")
    p.add_argument("--reason", default="", help="why (stored with the state, shown by status)")
    p.set_defaults(handler=_cmd_killswitch)

    p = sub.add_parser("notify", parents=[common], help="Discord notifications: send the status now, show the outbox")
    nsub = p.add_subparsers(dest="notify_command", required=True, metavar="SUBCOMMAND")
    n = nsub.add_parser("status", parents=[common],
                        help="send the system's status (killswitch, positions, P&L, processes) to Discord now")
    n.set_defaults(handler=_cmd_notify)
    n = nsub.add_parser("outbox", parents=[common], help="messages waiting in the outbox and why")
    n.set_defaults(handler=_cmd_notify)

    p = sub.add_parser("dashboard", parents=[common], help="serve the operations dashboard (web page + JSON API)")
    p.add_argument("--host", default=None, help="address to bind (default: dashboard.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: dashboard.port, 8050; 0: any free port)")
    p.set_defaults(handler=_cmd_dashboard)

    p = sub.add_parser("ml", parents=[common], help="ML veto models: train, promote, roll back, status (MLflow)")
    msub = p.add_subparsers(dest="ml_command", required=True, metavar="SUBCOMMAND")
    m = msub.add_parser("train", parents=[common], help="train and register a model per ML-enabled symbol")
    m.add_argument("--strategy", default=None, help="strategy name (default: every enabled ibs strategy)")
    m.add_argument("--symbols", nargs="+", default=None, help="roots (default: the strategy's ml_enabled ones)")
    m.set_defaults(handler=_cmd_ml)
    m = msub.add_parser("promote", parents=[common],
                        help="make the latest version champion if it beats the champion on its held-out window")
    m.add_argument("--strategy", default=None, help="strategy name (default: every enabled ibs strategy)")
    m.add_argument("--symbols", nargs="+", default=None, help="roots (default: the strategy's ml_enabled ones)")
    m.set_defaults(handler=_cmd_ml)
    m = msub.add_parser("rollback", parents=[common], help="make the previous champion champion again")
    m.add_argument("--strategy", required=True, help="strategy name")
    m.add_argument("--symbol", required=True, help="root symbol")
    m.set_defaults(handler=_cmd_ml)
    m = msub.add_parser("status", parents=[common], help="registered versions, champions and their held-out figures")
    m.add_argument("--strategy", default=None, help="strategy name (default: every enabled ibs strategy)")
    m.add_argument("--symbols", nargs="+", default=None, help="roots (default: the strategy's ml_enabled ones)")
    m.set_defaults(handler=_cmd_ml)
    return parser


# Long-running commands also log to ``<runtime>/logs/{component}.jsonl`` (read together by ``pine logs``).
_FILE_LOGGED = frozenset({"hub", "worker", "demo", "warmup"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pine.logs import add_log_file, setup_logging

    strategy = args.strategy if args.command == "worker" else None
    component = f"worker:{strategy}" if strategy else args.command
    setup_logging(component, args.log_level, strategy=strategy)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"pine: configuration error in {exc}", file=sys.stderr)
        return 1
    if cfg.logging.format != "text":
        setup_logging(component, args.log_level, strategy=strategy, fmt=cfg.logging.format)
    if args.command in _FILE_LOGGED:
        add_log_file(cfg.runtime_path(cfg.logging.dir), max_bytes=cfg.logging.max_bytes,
                     backup_count=cfg.logging.backup_count)
    try:
        return int(args.handler(args, cfg))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
