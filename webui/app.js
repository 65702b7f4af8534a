// Lockstep's lock screens page: polls GET /api/dashboard and draws every simulated iPhone as a
// lock screen, beside the server's view (delivery status per device, the push timeline).
// Plain JavaScript, no framework, no build step; the API key (needed on `lockstep serve`, not on
// the simulator's control port) lives in sessionStorage only and goes out as a bearer token.
"use strict";

const POLL_MS = 1000; // a new view every second
const TICK_MS = 250; // timers and "ago" labels move between polls
const KEY_ITEM = "lockstep.apiKey";
const PUSHES_PER_DEVICE = 12;
const COLORS = {
  lime: "#a3e635", green: "#34c759", cyan: "#32ade6", blue: "#0a84ff", purple: "#af52de",
  magenta: "#ff2d92", red: "#ff3b30", orange: "#ff9500", yellow: "#ffcc00", gray: "#8e8e93",
};
const DEFAULT_ACCENT = "#e5e5ea";
// A few SF Symbols as look-alike glyphs (plain Unicode: no emoji font needed); any other symbol
// shows its first letter.
const SYMBOLS = [
  ["server", "▤"], ["checkmark", "✓"], ["exclamationmark", "!"], ["xmark", "✕"], ["bolt", "ϟ"],
  ["clock", "◷"], ["timer", "◷"], ["hourglass", "⧗"], ["cart", "⊕"], ["shippingbox", "▣"],
  ["box", "▣"], ["flame", "▲"], ["chart", "▥"], ["cpu", "▦"], ["gear", "✲"], ["bell", "◉"],
  ["car", "▭"], ["airplane", "✈"], ["arrow", "➜"], ["hammer", "⚒"], ["person", "◍"],
  ["heart", "♥"], ["star", "★"], ["cloud", "☁"], ["globe", "◎"], ["play", "▶"], ["pause", "❚❚"],
];

let offset = 0; // server clock minus this browser's, in seconds
let drawn = ""; // the last view drawn, without its clock: an unchanged view is not redrawn
let polling = false; // a poll loop is running (it stops while the page asks for a key)
const openFolds = new Set(); // devices whose "ended" fold the user opened

// -- small helpers ------------------------------------------------------------------------------

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function num(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

function str(v) {
  return typeof v === "string" && v ? v : null;
}

function color(name, fallback) {
  return (typeof name === "string" && COLORS[name]) || fallback;
}

function scalar(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Math.round(v * 100) / 100);
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

function nowSeconds() {
  return Date.now() / 1000 + offset;
}

function clock(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  const mm = String(m).padStart(2, "0"), ss = String(s).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function span(seconds) {
  const t = Math.max(0, Math.round(seconds));
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m ${t % 60}s`;
  return `${Math.floor(t / 3600)}h ${Math.floor((t % 3600) / 60)}m`;
}

function when(at, now) {
  const d = at - now;
  return d > 0 ? `in ${span(d)}` : `${span(-d)} ago`;
}

function timeOfDay(at) {
  return new Date(at * 1000).toLocaleTimeString([], { hour12: false });
}

// The timer of a `timer` activity as shown at `until` (the same rule as `lockstep devices`):
// it runs from the activity's start; a countdown shows what is left of duration_seconds.
function timerReading(state, startedAt, until) {
  const duration = num(state.duration_seconds);
  const down = state.counts_down !== false;
  const running = state.is_running !== false;
  const elapsed = running ? Math.max(0, until - startedAt) : 0;
  if (down && duration !== null) {
    const left = Math.max(0, duration - elapsed);
    return `${clock(Math.ceil(left))} ${!running ? "paused" : left === 0 ? "done" : "left"}`;
  }
  return `${clock(elapsed)} ${running ? "elapsed" : "paused"}`;
}

function tickTimers() {
  const now = nowSeconds();
  for (const node of document.querySelectorAll("[data-timer]")) {
    const frozen = num(Number(node.dataset.until));
    const state = JSON.parse(node.dataset.timer);
    node.textContent = timerReading(state, Number(node.dataset.started), frozen ?? now);
  }
  for (const node of document.querySelectorAll("[data-at]")) {
    node.textContent = (node.dataset.prefix || "") + when(Number(node.dataset.at), now);
  }
  const c = document.querySelectorAll(".lock-clock");
  const t = new Date(now * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  for (const node of c) node.textContent = t;
}

function relative(at, prefix) {
  const node = el("span", "when", (prefix || "") + when(at, nowSeconds()));
  node.dataset.at = String(at);
  if (prefix) node.dataset.prefix = prefix;
  return node;
}

// -- activity bodies, one per type --------------------------------------------------------------

function segments(s, accent) {
  const wrap = el("div", "segments");
  const steps = num(s.number_of_steps);
  if (steps === null || steps < 1) return el("div", "muted", "segmented progress without number_of_steps");
  const total = Math.min(steps, 64);
  const done = Math.max(0, Math.min(num(s.current_step) ?? 0, steps));
  const colors = Array.isArray(s.step_colors) ? s.step_colors : [];
  const row = el("div", "segment-row");
  for (let i = 0; i < total; i++) {
    const seg = el("span", i < done ? "segment done" : "segment");
    if (i < done) {
      let c = color(colors[i], accent);
      if (i === done - 1) c = color(s.step_color, c); // the current step (http-api.md)
      seg.style.background = c;
    }
    row.append(seg);
  }
  wrap.append(row, el("div", "steps", `step ${Math.floor(done)}/${Math.floor(steps)}`));
  return wrap;
}

function progress(s) {
  let pct = num(s.percentage);
  let detail = "";
  const value = num(s.value), upper = num(s.upper_limit);
  if (pct === null && value !== null && upper) {
    pct = (value / upper) * 100;
    detail = ` · ${scalar(s.value)} / ${scalar(s.upper_limit)}`;
  }
  if (pct === null) return el("div", "muted", "progress without percentage");
  pct = Math.max(0, Math.min(100, pct));
  const wrap = el("div", "progress");
  const bar = el("div", "bar");
  const fill = el("div", "fill");
  fill.style.width = `${pct}%`;
  bar.append(fill);
  wrap.append(bar, el("span", "pct", `${Math.round(pct)}%${detail}`));
  return wrap;
}

function metricRows(s) {
  return Array.isArray(s.metrics) ? s.metrics.filter((m) => m && typeof m === "object") : [];
}

function metrics(s, accent) {
  const rows = metricRows(s);
  if (!rows.length) return el("div", "muted", "no metrics");
  const table = el("div", "metrics");
  for (const m of rows) {
    const row = el("div", "metric");
    const v = el("span", "metric-value", scalar(m.value) + (str(m.unit) ? ` ${m.unit}` : ""));
    v.style.color = color(m.color, accent);
    row.append(el("span", "metric-label", m.label ?? ""), v);
    table.append(row);
  }
  return table;
}

function stats(s, accent) {
  const rows = metricRows(s);
  if (!rows.length) return el("div", "muted", "no stats");
  const grid = el("div", "stats");
  for (const m of rows) {
    const cell = el("div", "stat");
    const v = el("div", "stat-value", scalar(m.value) + (str(m.unit) ?? ""));
    v.style.color = color(m.color, accent);
    cell.append(v, el("div", "stat-label", m.label ?? ""));
    grid.append(cell);
  }
  return grid;
}

function value(s, accent) {
  if (!("value" in s)) return el("div", "muted", "no value");
  const v = el("div", "big-value", scalar(s.value));
  v.style.color = accent;
  return v;
}

function alertBody(s, accent) {
  const v = el("div", "alert-message", `⚠ ${str(s.message) ?? "(no message)"}`);
  v.style.color = accent;
  return v;
}

function timerBody(s, accent, act, lifecycle) {
  const node = el("div", "timer");
  node.style.color = accent;
  const started = num(act.started_at) ?? nowSeconds();
  const ended = num(act.ended_at);
  node.dataset.timer = JSON.stringify({
    duration_seconds: s.duration_seconds, counts_down: s.counts_down, is_running: s.is_running,
  });
  node.dataset.started = String(started);
  if (ended !== null && (lifecycle === "ended" || lifecycle === "dismissed")) {
    node.dataset.until = String(ended); // its timer froze when it ended
  }
  node.textContent = timerReading(s, started, ended ?? nowSeconds());
  return node;
}

const BODIES = {
  segmented_progress: segments, progress, metrics, stats, value, alert: alertBody, timer: timerBody,
};

// -- one activity, one phone ---------------------------------------------------------------------

function icon(s, accent) {
  if (!s.icon || !str(s.icon.symbol)) return null;
  const sym = s.icon.symbol;
  const found = SYMBOLS.find(([prefix]) => sym.startsWith(prefix));
  const node = el("span", "icon", found ? found[1] : sym[0].toUpperCase());
  node.title = sym;
  node.style.color = color(s.icon.color, accent);
  return node;
}

function actions(s) {
  const list = [s.action, s.secondary_action].filter((a) => a && str(a.title));
  if (!list.length) return null;
  const row = el("div", "actions");
  for (const a of list) {
    const b = el("button", `action action-${a.type === "webhook" ? "webhook" : "url"}`, a.title);
    b.type = "button";
    b.disabled = true; // read-only page: the button is drawn as the phone shows it
    b.title = `${a.type}: ${a.url ?? ""}`;
    row.append(b);
  }
  return row;
}

const STATE_LABELS = { active: "live", stale: "stale", ended: "ended", dismissed: "dismissed" };

function lifecycleLine(act, now) {
  const state = String(act.state ?? "?");
  const line = el("div", "lifecycle");
  line.append(el("span", `state-label state-${state}`, STATE_LABELS[state] ?? state));
  const stale = num(act.stale_date), ended = num(act.ended_at), dismissal = num(act.dismissal_at);
  if ((state === "active" || state === "stale") && stale !== null) {
    line.append(" · ", relative(stale, state === "stale" ? "stale since " : "stale "));
  }
  if ((state === "ended" || state === "dismissed") && ended !== null) {
    line.append(" · ", relative(ended, "ended "));
  }
  if (dismissal !== null && state !== "dismissed") line.append(" · ", relative(dismissal, "leaves "));
  return line;
}

function waiting(act) {
  if (act.awaiting_allow) return el("div", "banner awaiting", "⏸ awaiting Allow: no update token yet");
  const held = act.held;
  if (!held || typeof held !== "object") return null;
  const throttled = held.reason === "throttled";
  const node = el("div", `banner ${throttled ? "throttled" : "delayed"}`,
    throttled ? "⏳ throttled: a newer update waits for budget" : "⏳ delayed: a priority-5 update waits");
  return node;
}

function serverLine(status, deviceName) {
  if (!status) return null;
  const rec = (status.devices || []).find((d) => d.device_id === deviceName);
  if (!rec) return null;
  const node = el("div", `server-line rstate-${rec.state}`,
    `server: ${rec.state} · v${rec.confirmed_version}/${status.version}${rec.current ? " ✓" : ""}`);
  return node;
}

function activityCard(act, now, device, statuses) {
  const s = act.content_state && typeof act.content_state === "object" ? act.content_state : {};
  const lifecycle = String(act.state ?? "");
  const accent = color(s.color, DEFAULT_ACCENT);
  const type = String(s.type ?? "activity");
  const card = el("article", `activity type-${type} state-${lifecycle}`);
  card.dataset.activity = String(act.activity_id ?? "");
  card.dataset.state = lifecycle;
  card.dataset.type = type;
  const serverId = act.attributes && str(act.attributes.activity_id);
  if (serverId) card.dataset.serverActivity = serverId;
  if (act.awaiting_allow) card.classList.add("awaiting");
  if (act.held && act.held.reason === "throttled") card.classList.add("throttled");
  card.style.setProperty("--accent", accent);

  const head = el("header", "card-head");
  const ic = icon(s, accent);
  if (ic) head.append(ic);
  head.append(el("span", "title", str(s.title) ?? "(untitled)"));
  if (s.badge && str(s.badge.title)) {
    const badge = el("span", "badge", s.badge.title);
    badge.style.background = color(s.badge.color, accent);
    head.append(badge);
  }
  card.append(head);
  if (str(s.subtitle)) card.append(el("div", "subtitle", s.subtitle));
  const body = BODIES[type];
  card.append(body ? body(s, accent, act, lifecycle) : el("pre", "raw", JSON.stringify(s)));
  const buttons = actions(s);
  if (buttons) card.append(buttons);
  const alert = act.last_alert; // the alert that came with the start or an update
  const alertText = alert ? [str(alert.title), str(alert.body)].filter(Boolean).join(" — ") : "";
  if (alertText && alertText !== str(s.title)) card.append(el("div", "last-alert", `alert: ${alertText}`));
  const w = waiting(act);
  if (w) card.append(w);
  card.append(lifecycleLine(act, now));
  const sl = serverLine(serverId ? statuses.get(serverId) : null, device.name);
  if (sl) card.append(sl);
  return card;
}

function notificationList(device) {
  const notes = Array.isArray(device.notifications) ? device.notifications.slice(-5).reverse() : [];
  if (!notes.length) return null;
  const list = el("ul", "notifications");
  for (const n of notes) {
    const item = el("li", `notification level-${n.interruption_level ?? "active"}`);
    const text = (v) => (v && typeof v === "object" ? `${v["loc-key"]}` : str(v));
    item.append(el("span", "note-title", text(n.title) ?? "(no title)"));
    const body = [text(n.subtitle), text(n.body)].filter(Boolean).join(" — ");
    if (body) item.append(el("span", "note-body", body));
    if (num(n.at) !== null) item.append(relative(n.at, ""));
    list.append(item);
  }
  return list;
}

function phone(device, now, statuses) {
  const name = String(device.name ?? "?");
  const node = el("section", "phone");
  node.dataset.device = name;
  const offline = device.online === false;
  if (offline) node.classList.add("offline");
  const screen = el("div", "screen");
  const bar = el("div", "status-bar");
  bar.append(el("span", "device-name", name), el("span", "network", offline ? "offline" : "online"));
  screen.append(bar, el("div", "lock-clock", ""), el("div", "lock-date",
    new Date(now * 1000).toLocaleDateString([], { weekday: "long", day: "numeric", month: "long" })));
  if (offline) {
    const stored = Array.isArray(device.stored) ? device.stored.length : device.stored_count ?? 0;
    screen.append(el("div", "banner offline-banner", `offline · APNs keeps ${stored} push(es)`));
  }
  const acts = (Array.isArray(device.activities) ? device.activities : [])
    .slice()
    .sort((a, b) => (num(b.started_at) ?? 0) - (num(a.started_at) ?? 0)); // newest first
  const live = acts.filter((a) => a.state === "active" || a.state === "stale");
  const gone = acts.filter((a) => !(a.state === "active" || a.state === "stale"));
  const list = el("div", "activities");
  if (!live.length) list.append(el("div", "muted empty", "no Live Activities"));
  for (const a of live) list.append(activityCard(a, now, device, statuses));
  screen.append(list);
  if (gone.length) {
    const fold = el("details", "ended-fold");
    fold.open = openFolds.has(name);
    fold.addEventListener("toggle", () => (fold.open ? openFolds.add(name) : openFolds.delete(name)));
    fold.append(el("summary", "", `${gone.length} ended`));
    for (const a of gone) fold.append(activityCard(a, now, device, statuses));
    screen.append(fold);
  }
  const notes = notificationList(device);
  if (notes) screen.append(notes);
  const dock = el("div", "dock");
  const app = el("div", "app-icon", "App");
  const badge = num(device.badge) ?? 0;
  if (badge > 0) app.append(el("span", "app-badge", badge));
  dock.append(app);
  const budget = device.budget;
  if (budget && num(budget.updates_left) !== null) {
    dock.append(el("span", "budget", `budget ${budget.updates_left}/${budget.updates_per_hour ?? "?"} per h`));
  }
  screen.append(dock);
  node.append(screen);
  return node;
}

// -- the server's view ---------------------------------------------------------------------------

function serverView(data, now) {
  const out = [];
  if (data.activities === null) {
    out.push(el("h2", "", "Server"),
      el("p", "muted", "This is the simulator's own page: the delivery status is on the page of " +
        "lockstep serve. The push timeline below is the simulator's."));
  } else {
    out.push(el("h2", "", `Activities (${data.activities.length} most recent)`));
    if (!data.activities.length) out.push(el("p", "muted empty", "no activities yet"));
    for (const a of data.activities) {
      const item = el("div", `astatus ${a.ended ? "ended" : "live"}`);
      item.dataset.activity = a.activity_id;
      if (a.stream_key) item.dataset.stream = a.stream_key;
      const head = el("div", "status-head");
      head.append(el("span", "status-key", a.stream_key ? `stream ${a.stream_key}` : a.activity_id),
        el("span", "muted", ` v${a.version}${a.ended ? " · ended" : ""} · ${a.updated_at}`));
      item.append(head);
      const chips = el("div", "chips");
      for (const d of a.devices || []) {
        const chip = el("span", `chip rstate-${d.state}`,
          `${d.device_id}: ${d.state} v${d.confirmed_version}${d.current ? " ✓" : ""}` +
          (d.last_status ? ` · ${d.last_status}${d.last_reason ? " " + d.last_reason : ""}` : ""));
        chip.dataset.device = d.device_id;
        chips.append(chip);
      }
      item.append(chips);
      out.push(item);
    }
  }
  out.push(el("h2", "", "Pushes received"));
  const byDevice = new Map();
  for (const p of (data.pushes || []).slice().reverse()) {
    const key = p.device ?? "(no device)";
    if (!byDevice.has(key)) byDevice.set(key, []);
    byDevice.get(key).push(p);
  }
  if (!byDevice.size) out.push(el("p", "muted empty", "no pushes yet"));
  for (const [device, pushes] of byDevice) {
    const box = el("div", "timeline");
    box.dataset.device = device;
    box.append(el("h3", "", device));
    const list = el("ol", "pushes");
    for (const p of pushes.slice(0, PUSHES_PER_DEVICE)) {
      const ok = p.status === 200;
      const item = el("li", `push ${ok ? "ok" : "refused"} outcome-${p.outcome ?? "none"}`);
      item.append(el("span", "push-time", timeOfDay(p.at)),
        el("span", "push-event", p.event ?? "app"),
        el("span", "push-status", ok ? (p.outcome ?? "200") : `${p.status} ${p.reason ?? ""}`));
      if (p.detail) item.append(el("span", "muted", p.detail));
      list.append(item);
    }
    box.append(list);
    out.push(box);
  }
  return out;
}

// -- polling -------------------------------------------------------------------------------------

function setStatus(text, state) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.dataset.status = state;
}

function render(data) {
  const now = data.now;
  const view = JSON.stringify({ ...data, now: 0 });
  if (view === drawn) return; // timers and "ago" labels still move (tickTimers)
  drawn = view;
  const statuses = new Map((data.activities || []).map((a) => [a.activity_id, a]));
  const phones = document.getElementById("phones");
  const devices = Array.isArray(data.devices) ? data.devices : [];
  phones.replaceChildren(...(devices.length
    ? devices.map((d) => phone(d, now, statuses))
    : [el("p", "muted empty", "no simulated iPhones (the server sends to Apple's APNs)")]));
  document.getElementById("server").replaceChildren(...serverView(data, now));
  document.getElementById("source").textContent =
    data.source === "simulator" ? "simulator control API" : "lockstep serve";
  tickTimers();
}

function showLogin(message) {
  drawn = "";
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("login-error").textContent = message;
  document.getElementById("logout").hidden = true;
  setStatus("API key needed", "login");
  document.getElementById("key").focus();
}

async function poll() {
  if (document.hidden) { // a background tab asks nothing; it catches up when shown again
    setTimeout(poll, POLL_MS);
    return;
  }
  const key = sessionStorage.getItem(KEY_ITEM);
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  let again = true;
  try {
    const answer = await fetch("api/dashboard", { headers, cache: "no-store" });
    if (answer.status === 401 || answer.status === 403) {
      if (key) sessionStorage.removeItem(KEY_ITEM);
      showLogin(key ? "That key was refused." : "");
      again = false;
    } else if (!answer.ok) {
      setStatus(`the server answered ${answer.status}`, "error");
    } else {
      const data = await answer.json();
      offset = data.now - Date.now() / 1000;
      render(data);
      document.getElementById("login").hidden = true;
      document.getElementById("logout").hidden = !key;
      setStatus(`live · ${timeOfDay(data.now)}`, "live");
    }
  } catch (err) {
    setStatus("cannot reach the server; retrying", "error");
  }
  if (again) setTimeout(poll, POLL_MS);
  else polling = false;
}

function ensurePolling() {
  if (!polling) {
    polling = true;
    poll();
  }
}

function start() {
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("key");
    sessionStorage.setItem(KEY_ITEM, input.value.trim());
    input.value = "";
    ensurePolling();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_ITEM); // the next poll is refused and asks again
    showLogin("");
  });
  setInterval(tickTimers, TICK_MS);
  ensurePolling();
}

start();
