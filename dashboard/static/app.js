// Pine dashboard: polls /api/overview and redraws in place (no page reload). Text only ever goes in
// through textContent, so nothing the API returns can become markup.
"use strict";

const TOKEN_KEY = "pineToken";
let meta = null;
let timer = null;

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function money(x) {
  if (x === null || x === undefined) return "–";
  const s = Math.abs(x).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  return (x < 0 ? "-$" : "+$") + s;
}
function pct(x) { return x === null || x === undefined ? "–" : (x * 100).toFixed(0) + "%"; }
function num(x, d) { return x === null || x === undefined ? "–" : Number(x).toFixed(d); }
function pnlClass(x) { return x === null || x === undefined ? "" : (x < 0 ? "bad" : "good"); }
function shortTime(iso) { return iso ? String(iso).replace("T", " ").slice(0, 16) : "–"; }
function ago(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return Math.round(s) + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  if (s < 172800) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}
function pf(m) {
  if (!m || !m.trades) return "–";
  if (m.profit_factor === null) return m.gross_profit > 0 ? "∞" : "–";
  return m.profit_factor.toFixed(2);
}
function tradeRef(t, withStrategy) {
  if (!t) return "–";
  return money(t.net_pnl) + " " + t.symbol + (withStrategy ? " (" + t.strategy + ")" : "");
}

function fillRows(tableId, rows, cells) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells(r)) tr.appendChild(el("td", text, cls));
    body.appendChild(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = el("td", "none", "muted");
    td.colSpan = document.querySelectorAll("#" + tableId + " thead th").length;
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

function setBig(id, text, cls) {
  const e = document.getElementById(id);
  e.textContent = text;
  e.className = "big " + (cls || "");
}

function renderEquity(points) {
  const box = document.getElementById("equity");
  box.replaceChildren();
  if (!points.length) { box.appendChild(el("p", "No closed trades yet.", "muted")); return; }
  const NS = "http://www.w3.org/2000/svg", W = 800, H = 220, L = 60, R = 10, T = 10, B = 24;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "equity curve");
  const values = points.map(p => p.value).concat([0]);
  const lo = Math.min(...values), hi = Math.max(...values), span = (hi - lo) || 1;
  const x = i => L + (points.length === 1 ? (W - L - R) / 2 : i * (W - L - R) / (points.length - 1));
  const y = v => T + (hi - v) * (H - T - B) / span;
  const line = (x1, y1, x2, y2, cls) => {
    const l = document.createElementNS(NS, "line");
    l.setAttribute("x1", x1); l.setAttribute("y1", y1); l.setAttribute("x2", x2); l.setAttribute("y2", y2);
    l.setAttribute("class", cls);
    svg.appendChild(l);
  };
  const label = (x0, y0, text, anchor) => {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", x0); t.setAttribute("y", y0); t.setAttribute("text-anchor", anchor || "end");
    t.textContent = text;
    svg.appendChild(t);
  };
  line(L, T, L, H - B, "axis");
  line(L, y(0), W - R, y(0), "zero");
  label(L - 4, y(hi) + 4, money(hi)); label(L - 4, y(lo) + 4, money(lo));
  label(L, H - 6, points[0].day, "start"); label(W - R, H - 6, points[points.length - 1].day, "end");
  const path = document.createElementNS(NS, "polyline");
  path.setAttribute("points", points.map((p, i) => `${x(i).toFixed(1)},${y(p.value).toFixed(1)}`).join(" "));
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", points[points.length - 1].value >= 0 ? "#2ecc71" : "#e74c3c");
  path.setAttribute("stroke-width", "2");
  path.setAttribute("vector-effect", "non-scaling-stroke");
  path.setAttribute("id", "equity-line");
  svg.appendChild(path);
  box.appendChild(svg);
}

// The worker's outcome, and in shadow mode what the model said (a shadow decision is always taken).
function mlDecision(r) {
  if (r.outcome === "not_ready") return ["features not ready", "muted"];
  if (!r.shadow) return [r.outcome, r.outcome === "vetoed" ? "bad" : "good"];
  return ["taken (shadow: model said " + (r.take ? "take" : "veto") + ")", r.take ? "good" : "warn"];
}

// Feature values folded away (a model reads dozens): a count that opens into a wrapped list.
function mlFeatures(features) {
  const td = el("td");
  if (!features) { td.textContent = "–"; return td; }
  const names = Object.keys(features).sort();
  const details = el("details", undefined, "features"), list = el("div");
  details.appendChild(el("summary", names.length + " values"));
  for (const n of names) list.appendChild(el("span", n + " " + (features[n] === null ? "–" : num(features[n], 4))));
  details.appendChild(list);
  td.appendChild(details);
  return td;
}

function renderMl(ml) {
  const summary = document.getElementById("ml-summary");
  const body = document.querySelector("#ml tbody");
  body.replaceChildren();
  if (!ml) { summary.textContent = "The trades DB has no ML decision table yet."; return; }
  const c = ml.counts;
  summary.textContent = `${c.taken} taken · ${c.vetoed} vetoed · ${c.not_ready} not ready (all recorded decisions)`;
  for (const r of ml.rows) {
    const tr = el("tr");
    const [decision, cls] = mlDecision(r);
    tr.className = "ml-" + r.outcome;
    for (const [text, klass] of [[shortTime(r.signal_time)], [r.strategy], [r.symbol], [decision, "decision " + cls],
                              [num(r.score, 3), "num"], [num(r.threshold, 3), "num"], [r.model], [r.version || "–"]]) {
      tr.appendChild(el("td", text, klass));
    }
    tr.appendChild(mlFeatures(r.features));
    body.appendChild(tr);
  }
  if (!ml.rows.length) {
    const tr = el("tr"), td = el("td", "none", "muted");
    td.colSpan = document.querySelectorAll("#ml thead th").length;
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

function render(d) {
  const h = d.health;
  const badge = document.getElementById("health-badge");
  badge.textContent = h.ok ? "healthy" : "degraded: " + h.reasons.length + " issue(s)";
  badge.className = "badge " + (h.ok ? "good" : "bad");
  const ks = d.killswitch;
  const ksBadge = document.getElementById("ks-badge");
  ksBadge.textContent = "killswitch " + (ks ? ks.state : "unknown (Redis unreachable)");
  ksBadge.className = "badge " + (ks && ks.state === "off" ? "good" : "warn");
  setBig("killswitch-state", ks ? ks.state : "unknown", ks && ks.state === "off" ? "good" : "warn");
  document.getElementById("killswitch-detail").textContent = ks
    ? ks.description + (ks.source ? " — set by " + ks.source : "") + (ks.reason ? ": " + ks.reason : "")
    : "Redis unreachable";
  document.getElementById("updated").textContent =
    "updated " + new Date(d.generated_at * 1000).toLocaleTimeString() + " · Redis " + d.redis;

  const today = d.pnl.today;
  setBig("pnl-today", money(today.net_pnl), pnlClass(today.net_pnl));
  document.getElementById("pnl-today-sub").textContent = today.trading_day + " · " + today.trades + " trades";
  const latest = d.pnl.latest_day;
  setBig("pnl-latest", latest ? money(latest.net_pnl) : "–", latest ? pnlClass(latest.net_pnl) : "");
  document.getElementById("pnl-latest-sub").textContent =
    latest ? latest.trading_day + " · " + latest.trades + " trades" : "no trades yet";
  const all = d.metrics.all;
  setBig("metrics-all", all && all.trades ? money(all.net_pnl) : "–", all ? pnlClass(all.net_pnl) : "");
  document.getElementById("metrics-all-sub").textContent = all && all.trades
    ? `${all.trades} trades · win rate ${pct(all.win_rate)} · profit factor ${pf(all)} · best ${tradeRef(all.best, true)}`
      + ` · worst ${tradeRef(all.worst, true)}`
    : "no closed trades";

  renderEquity(d.pnl.equity);
  fillRows("positions", d.positions, p => [
    [p.strategy], [p.symbol], [p.contract], [p.direction], [p.size, "num"], [p.entry_price, "num"],
    [p.last_price === null ? "–" : p.last_price, "num"], [money(p.unrealized_pnl), "num " + pnlClass(p.unrealized_pnl)],
    [num(p.unrealized_ticks, 1), "num"], [shortTime(p.entry_time)], [p.bars_held, "num"]]);
  fillRows("health", h.components, c => [
    [c.component], [c.status || "none", c.fresh ? "good" : "bad"], [c.age_s === undefined ? "–" : ago(c.age_s) + " ago"],
    [shortTime(c.last_bar)], [ago(c.lag_s)], [c.warmup === undefined ? "–" : c.warmup],
    [c.missing_feeds === undefined ? "–" : (c.missing_feeds.length ? c.missing_feeds.join(" ") : "none")],
    [c.component === "hub" ? (c.gaps ? c.gaps.total + " (" + c.gaps.unrecovered + " lost)" : "–")
                           : (c.gaps ? c.gaps.bad_messages + " bad msgs" : "–")]]);
  const reasons = document.getElementById("health-reasons");
  reasons.replaceChildren(...h.reasons.map(r => el("li", r)));
  fillRows("strategies", Object.entries(d.metrics.strategies), ([s, m]) => [
    [s], [m.trades, "num"], [money(m.net_pnl), "num " + pnlClass(m.net_pnl)], [pct(m.win_rate), "num"],
    [pf(m), "num"], [tradeRef(m.best, false)], [tradeRef(m.worst, false)]]);
  fillRows("trades", d.trades, t => [
    [shortTime(t.exit_time)], [t.strategy], [t.symbol], [t.direction], [t.size, "num"], [t.entry_price, "num"],
    [t.exit_price, "num"], [money(t.net_pnl), "num " + pnlClass(t.net_pnl)], [t.exit_reason]]);
  fillRows("days", d.pnl.days.slice().reverse(), r => [
    [r.trading_day], [r.trades, "num"], [r.wins, "num"], [money(r.net_pnl), "num " + pnlClass(r.net_pnl)],
    [money(r.cumulative), "num"],
    [Object.entries(r.strategies || {}).map(([s, v]) => s + " " + money(v)).join(" · ")]]);
  renderMl(d.ml);
}

function showLogin(message) {
  document.getElementById("content").classList.add("hidden");
  document.getElementById("login").classList.remove("hidden");
  document.getElementById("login-error").textContent = message || "";
}

async function refresh() {
  try {
    const r = await fetch("/api/overview", { headers: headers(), cache: "no-store" });
    if (r.status === 401) { showLogin(token() ? "wrong token" : ""); return; }
    if (!r.ok) throw new Error("HTTP " + r.status);
    document.getElementById("login").classList.add("hidden");
    document.getElementById("content").classList.remove("hidden");
    render(await r.json());
  } catch (e) {
    document.getElementById("updated").textContent = "refresh failed (" + e.message + "); retrying";
  }
}

async function setKillswitch(state) {
  const msg = document.getElementById("ks-message");
  if (state === "flatten" && !window.confirm("Close every position at market, then halt?")) return;
  const r = await fetch("/api/killswitch", {
    method: "POST", headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ state: state, reason: "set from the dashboard" }),
  });
  const body = await r.json().catch(() => ({}));
  msg.textContent = r.ok ? "killswitch set to " + body.state : "refused: " + (body.error || "HTTP " + r.status);
  msg.className = r.ok ? "good" : "bad";
  refresh();
}

async function start() {
  const m = /[#&]token=([^&]+)/.exec(location.hash);
  if (m) {  // a link with #token=… (never sent to the server): keep it for this tab, drop it from the URL
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  meta = await (await fetch("/api/meta", { cache: "no-store" })).json();
  for (const b of document.querySelectorAll("#killswitch button")) {
    b.addEventListener("click", () => setKillswitch(b.dataset.state));
  }
  if (!meta.writes_enabled) {
    document.getElementById("ks-message").textContent =
      "Changing the killswitch needs dashboard.token (config or PINE_DASHBOARD_TOKEN).";
  }
  document.getElementById("login-form").addEventListener("submit", ev => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value);
    refresh();
  });
  await refresh();
  timer = setInterval(refresh, meta.refresh_s * 1000);
}

document.addEventListener("DOMContentLoaded", start);
