"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright's Python client).

Playwright rather than Selenium or raw DevTools: one pip package (its driver ships in the wheel; its own
browser download is never used, the system Chromium is launched by path), auto-waiting locators instead of
hand-written polling, and screenshots built in. ``make test`` installs Chromium as root; without one the
test is skipped and says why. Screenshots are saved in ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis

from pine import redis_names
from pine.killswitch import Killswitch, KillswitchState
from tests.dashboard_support import FEATURES, TOKEN, DashboardProc, trading_state
from tests.scenario import query

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags this machine needs: no sandbox as root, and no background calls to Google's hosts (no network here).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: `make test` installs Debian's chromium as "
                                                "root (apt-get install chromium)"),
]


def _cells(page: Any, table: str) -> list[list[str]]:
    return page.eval_on_selector_all(f"#{table} tbody tr",
                                     "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def test_the_page_shows_what_the_db_and_redis_hold_and_the_killswitch_needs_the_token(redis_url: str,
                                                                                        tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    state = trading_state(redis_url, tmp_path)
    board = DashboardProc(state, env={"PINE_DASHBOARD_TOKEN": TOKEN})
    open_board = DashboardProc(state)  # no token configured: the buttons are refused
    client = redis.Redis.from_url(redis_url)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{board.url}/#token={TOKEN}")
            expect(page.locator("#positions tbody tr td").first).not_to_have_text("none")
            assert TOKEN not in page.url  # taken from the fragment, kept for the tab only

            # Open positions: the DB's, valued at the latest minute bar in Redis.
            (pos,) = query(state.runtime, "SELECT strategy, symbol, contract, direction, size, entry_price "
                                          "FROM positions")
            latest = json.loads(client.get(redis_names.latest(pos[1], "1min")) or b"{}")
            (row,) = _cells(page, "positions")
            assert row[:6] == [pos[0], pos[1], pos[2], pos[3], str(pos[4]), str(pos[5])]
            unrealized = (latest["close"] - pos[5]) * pos[4] * 1000 * (1 if pos[3] == "long" else -1)
            assert row[7] == f"{'-' if unrealized < 0 else '+'}${abs(unrealized):,.2f}"
            # Recent trades and per-strategy figures: the DB's.
            trades = query(state.runtime, "SELECT strategy, symbol, net_pnl FROM trades ORDER BY exit_time DESC")
            shown = _cells(page, "trades")
            assert [(r[1], r[2]) for r in shown] == [(s, sym) for s, sym, _ in trades]
            assert [r[7] for r in shown] == [f"{'-' if n < 0 else '+'}${abs(n):,.2f}" for _, _, n in trades]
            per = query(state.runtime, "SELECT strategy, COUNT(*), SUM(net_pnl) FROM trades GROUP BY strategy "
                                       "ORDER BY strategy")
            assert [(r[0], r[1], r[2]) for r in _cells(page, "strategies")] == [
                (s, str(n), f"{'-' if net < 0 else '+'}${abs(net):,.2f}") for s, n, net in per]
            total = sum(n for _, _, n in trades)
            expect(page.locator("#metrics-all")).to_have_text(f"{'-' if total < 0 else '+'}${abs(total):,.2f}")
            assert page.locator("#equity-line").count() == 1
            # Health: what the heartbeats in Redis say.
            beats = {c: json.loads(client.get(redis_names.heartbeat(c)) or b"{}")["status"]
                     for c in ("hub", "worker:s1", "worker:s2")}
            assert {r[0]: r[1] for r in _cells(page, "health")} == beats
            expect(page.locator("#health-badge")).to_have_text("healthy")
            # ML veto decisions: the audit rows, a taken and a vetoed one in different colours, features folded.
            ml = _cells(page, "ml")
            assert [r[:8] for r in ml] == [
                ["2024-02-15 23:00", "s1", "CL", "taken", "0.731", "0.550", "s1_CL", "3"],
                ["2024-02-13 23:00", "s2", "GC", "vetoed", "0.210", "0.550", "s2_GC", "1"],
                ["2024-02-12 23:00", "s2", "GC", "features not ready", "–", "–", "s2_GC", "1"],
                ["2024-02-08 23:00", "s1", "CL", "taken (shadow: model said veto)", "0.402", "0.550", "s1_CL", "3"]]
            assert all(r[8].startswith(f"{len(FEATURES)} values") for r in ml)
            expect(page.locator("#ml-summary")).to_have_text(
                "2 taken · 1 vetoed · 1 not ready (all recorded decisions)")
            colours = page.eval_on_selector_all("#ml td.decision", "cs => cs.map(c => getComputedStyle(c).color)")
            assert colours[:2] == ["rgb(46, 204, 113)", "rgb(231, 76, 60)"]  # --good, --bad
            assert page.locator("#ml details.features[open]").count() == 0
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # The killswitch button works with the token ...
            page.click("#killswitch button[data-state=halt]")
            expect(page.locator("#ks-message")).to_have_text("killswitch set to halt")
            expect(page.locator("#killswitch-state")).to_have_text("halt")
            ks = Killswitch(client, mirror_dir=state.runtime)
            assert ks.stored().state is KillswitchState.HALT

            # ... and is refused without it: a wrong token sees nothing; no configured token, no change.
            stranger = browser.new_page()
            stranger.goto(board.url + "/")
            expect(stranger.locator("#login")).to_be_visible()
            stranger.fill("#token-input", "not-the-token")
            stranger.click("#login-form button")
            expect(stranger.locator("#login-error")).to_have_text("wrong token")
            assert stranger.locator("#content").is_hidden()
            unguarded = browser.new_page()
            unguarded.goto(open_board.url + "/")
            unguarded.click("#killswitch button[data-state=off]")
            expect(unguarded.locator("#ks-message")).to_have_text(
                "refused: write actions need dashboard.token to be configured")
            assert ks.stored().state is KillswitchState.HALT
            # Auto-refresh without a reload: the change made elsewhere appears on the open page.
            ks.set(KillswitchState.REDUCE_ONLY, reason="from the CLI", source="test")
            expect(page.locator("#killswitch-state")).to_have_text("reduce_only", timeout=15_000)

            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            phone.goto(f"{board.url}/#token={TOKEN}")
            expect(phone.locator("#health-badge")).to_have_text("healthy")
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways page
            # Unfolded feature values wrap inside their cell: the ML table scrolls in its card, the page does not.
            phone.click("#ml tbody tr:first-child details.features summary")
            expect(phone.locator("#ml tbody tr:first-child details.features")).to_have_attribute("open", "")
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            width = phone.eval_on_selector("#ml tbody tr:first-child details.features",
                                           "d => d.getBoundingClientRect().width")
            assert width <= 390 * 0.85  # 28rem, at most 85% of the phone's width
            phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
            rendered = page.content() + phone.content()
            browser.close()
        assert TOKEN not in rendered
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    finally:
        board.stop()
        open_board.stop()
        state.stop()
