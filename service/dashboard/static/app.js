// fer-edge dashboard: this gateway's state from /dashboard/state (polled), every gateway's MQTT
// messages from /dashboard/stream (server-sent events). Everything shown comes from a broker or
// the service, so it is written with textContent only, never parsed as HTML.
"use strict";

const MAX_EVENTS = 100;
const POLL_MS = 2000;
const TIMELINE_REDRAW_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";
// The seven FER2013 expressions; a model with other labels gets the spare colours in turn.
const LABEL_COLOURS = {
  angry: "#d64545", disgust: "#6b8e23", fear: "#8e5cc2", happy: "#f2b705", sad: "#3f7fd1",
  surprise: "#f07f2a", neutral: "#9aa4b2",
};
const SPARE_COLOURS = ["#1b9e77", "#e7298a", "#66a61e", "#a6761d", "#7570b3", "#17becf"];

const view = {
  local: new Map(),      // camera id -> row of /dashboard/state (this gateway)
  retained: new Map(),   // MQTT topic -> payload (status, expression, analysis/state, available)
  events: new Map(),     // event id -> {payload, types: [], at}; anomalies merge new/update/end
  seen: new Set(),       // one key per message, so a snapshot after a reconnect adds only what is new
  timeline: new Map(),   // camera -> {labels: [], analysis: [], anomalies: Map(id -> span)}
  windowS: 900,          // the service's timeline window, from the snapshot
  clockOffset: 0,        // service clock minus this browser's, so the timeline ends at the service's now
  labels: [],            // the served model's, for the legend
  drawnIds: "",          // the cameras the timeline has rows for
  admin: false,
  csrf: null,            // the CSRF token of the page's session (a login off loopback), else null
  streamOpen: false,
  brokerConnected: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function fmtScore(x) { return typeof x === "number" ? x.toFixed(2) : "–"; }
function fmtTime(ts) {
  return typeof ts === "number" ? new Date(ts * 1000).toLocaleTimeString([], { hour12: false }) : "–";
}
function say(text) { $("message").textContent = text || ""; }

function setBadge(id, prefix, state) {
  const b = $(id);
  b.dataset.state = state;
  b.textContent = `${prefix}: ${state}`;
}

// -- topics ----------------------------------------------------------------------------------

// <prefix>/<camera>/status|expression|events and <prefix>/<camera>/analysis/state
function parseTopic(topic) {
  const parts = topic.split("/");
  const last = parts[parts.length - 1];
  if (last === "state" && parts[parts.length - 2] === "analysis") {
    return { camera: parts[parts.length - 3], kind: "analysis" };
  }
  if (["status", "expression", "events"].includes(last) && parts.length >= 3) {
    return { camera: parts[parts.length - 2], kind: last };
  }
  return { camera: null, kind: last };
}

function retainedFor(camera, kind) {
  for (const [topic, payload] of view.retained) {
    const t = parseTopic(topic);
    if (t.camera === camera && t.kind === kind) return payload;
  }
  return null;
}

// -- cameras ---------------------------------------------------------------------------------

function cameraIds() {
  const ids = new Set(view.local.keys());
  for (const topic of view.retained.keys()) {
    const t = parseTopic(topic);
    if (t.camera && t.kind !== "events") ids.add(t.camera);
  }
  return [...ids].sort();
}

function timelineIds() {
  return [...new Set([...cameraIds(), ...view.timeline.keys()])].sort();
}

function switchButton(id, state) {
  const button = el("button", state, { class: "switch", "data-state": state, type: "button" });
  const how = view.csrf ? "" : " (admin token)";
  button.title = view.admin ? `switch analysis ${state === "ON" ? "off" : "on"}${how}` :
    "set api.token (FER_API__TOKEN) to switch analysis from here";
  button.disabled = !view.admin;
  button.addEventListener("click", () => toggle(id, state === "ON" ? "OFF" : "ON", button));
  return button;
}

function renderCameras() {
  const body = $("cameras").tBodies[0];
  body.replaceChildren();
  const ids = cameraIds();
  $("cameras-empty").hidden = ids.length > 0;
  for (const id of ids) {
    const local = view.local.get(id);
    const status = retainedFor(id, "status");
    const expr = retainedFor(id, "expression");
    const analysis = retainedFor(id, "analysis");
    const row = el("tr", null, { "data-camera": id });
    const name = el("td", local && local.name && local.name !== id ? `${id} (${local.name})` : id, { class: "name" });
    // In a fleet every payload names its gateway: one page, every gateway on the broker.
    const gateway = (status && status.gateway) || (expr && expr.gateway);
    if (gateway) name.append(el("span", ` @ ${gateway}`, { class: "muted" }));
    row.append(name);
    const state = status ? status.state : (local ? local.status : "unknown");
    const reason = status ? status.reason : (local ? local.reason : null);
    const statusCell = el("td");
    statusCell.append(el("span", state, { class: "badge", "data-state": state }));
    if (reason) statusCell.append(el("span", ` ${reason}`, { class: "muted" }));
    row.append(statusCell);
    // data-th names a cell where a narrow screen shows the rows as cards, without the header.
    row.append(el("td", local ? local.fps.toFixed(1) : "–", { class: "num", "data-th": "fps" }));
    const label = expr ? expr.label : (local ? local.expression : null);
    row.append(el("td", label || "no face", { class: label ? "label expression" : "muted expression" }));
    row.append(el("td", expr ? fmtScore(expr.score) : "–", { class: "num", "data-th": "score" }));
    row.append(el("td", expr ? expr.faces : (local ? local.faces : "–"), { class: "num", "data-th": "faces" }));
    const version = expr && expr.model_version != null ? expr.model_version : (local ? local.model_version : null);
    row.append(el("td", version != null ? `v${version}` : "–", { "data-th": "model" }));
    const switchState = analysis ? analysis.state : (local && local.analysis ? local.analysis : null);
    const cell = el("td", null, { class: "analysis" });
    if (local && switchState) cell.append(switchButton(id, switchState));
    else cell.append(el("span", switchState || "–", { class: "badge", "data-state": switchState || "" }));
    row.append(cell);
    body.append(row);
  }
  if (timelineIds().join() !== view.drawnIds) scheduleTimeline();  // a camera came or went
}

async function toggle(id, state, button) {
  // Logged in, the session cookie goes by itself and the CSRF token with it; else the admin token.
  const headers = { "Content-Type": "application/json" };
  const token = view.csrf ? "" : $("token").value.trim() || sessionStorage.getItem("fer-token") || "";
  if (view.csrf) headers["X-CSRF-Token"] = view.csrf;
  else if (token) headers.Authorization = `Bearer ${token}`;
  else { say("Enter the admin token (FER_API__TOKEN) to switch a camera."); $("token").focus(); return; }
  button.disabled = true;
  try {
    const r = await fetch(`/cameras/${encodeURIComponent(id)}/analysis`, {
      method: "PUT", headers, body: JSON.stringify({ state }),
    });
    if (r.status === 401 && view.csrf) { toLogin(); return; }
    const body = await r.json();
    if (!r.ok) { say(`${id}: ${body.error ? body.error.message : r.status}`); return; }
    if (token) sessionStorage.setItem("fer-token", token);
    say("");
    const local = view.local.get(id);
    if (local) local.analysis = body.state;
    renderCameras();
  } catch (err) {
    say(`${id}: the service did not answer (${err.message})`);
  } finally {
    button.disabled = !view.admin;
  }
}

// -- events ----------------------------------------------------------------------------------

function addEvent(item) {
  const p = item.payload;
  if (!p || typeof p.id !== "string") return;
  const key = [p.id, p.type, p.score, p.end_time, p.timestamp].join("|");
  if (view.seen.has(key)) return;
  view.seen.add(key);
  if (view.seen.size > 20 * MAX_EVENTS) view.seen = new Set([...view.seen].slice(-10 * MAX_EVENTS));
  const known = view.events.get(p.id);
  const type = p.kind === "anomaly" ? p.type : "change";
  if (known) {
    known.payload = p;
    known.types.push(type);
    known.at = item.received_at;
    view.events.delete(p.id);  // re-inserted below: the map's order is newest last
    view.events.set(p.id, known);
  } else {
    view.events.set(p.id, { payload: p, types: [type], at: item.received_at, fresh: true });
  }
  while (view.events.size > MAX_EVENTS) view.events.delete(view.events.keys().next().value);
}

function renderEvents() {
  const body = $("events").tBodies[0];
  body.replaceChildren();
  const rows = [...view.events.values()].sort((a, b) => b.at - a.at);
  $("events-empty").hidden = rows.length > 0;
  for (const e of rows) {
    const p = e.payload;
    const anomaly = p.kind === "anomaly";
    const row = el("tr", null, { class: e.fresh ? "event fresh" : "event", "data-kind": p.kind || "" });
    e.fresh = false;
    row.append(el("td", fmtTime(anomaly ? p.start_time : p.timestamp), { class: "num" }));
    row.append(el("td", p.gateway ? `${p.camera} @ ${p.gateway}` : p.camera));
    row.append(el("td", p.event_type));
    const label = p.previous_label ? `${p.previous_label} → ${p.label}` : p.label;
    row.append(el("td", label, { class: "label" }));
    row.append(el("td", anomaly ? `${fmtScore(p.score)} (top ${fmtScore(p.top_score)})` : fmtScore(p.score),
      { class: "num", "data-th": "score" }));
    const life = el("td");
    if (anomaly) {
      for (const t of e.types) life.append(el("span", t, { class: "chip", "data-type": t }));
    } else {
      life.append(el("span", "change", { class: "chip" }));
    }
    row.append(life);
    row.append(el("td", p.track_id != null ? `#${p.track_id}` : "–", { "data-th": "track" }));
    row.append(el("td", p.model_version != null ? `v${p.model_version}` : "–", { "data-th": "model" }));
    body.append(row);
  }
}

// -- the timeline (the service keeps its last minutes, so a reload draws the same) -------------

function serverNow() { return Date.now() / 1000 + view.clockOffset; }

function timelineOf(camera) {
  let tl = view.timeline.get(camera);
  if (!tl) {
    tl = { labels: [], analysis: [], anomalies: new Map() };
    view.timeline.set(camera, tl);
  }
  return tl;
}

// Points stay in time order; one already there (a snapshot after a reconnect) is not added twice.
function mergePoint(points, point) {
  let i = points.length;
  while (i > 0 && points[i - 1].t > point.t) i -= 1;
  for (let j = i - 1; j >= 0 && points[j].t === point.t; j -= 1) {
    if (JSON.stringify(points[j]) === JSON.stringify(point)) return;
  }
  points.splice(i, 0, point);
}

function mergeSpan(spans, span) {
  const known = spans.get(span.id);
  if (known && known.end != null && span.end == null) return;  // an update again after its end
  spans.set(span.id, span);
}

function onTimeline(camera, series, item) {
  const tl = timelineOf(camera);
  if (series === "anomalies") mergeSpan(tl.anomalies, item);
  else if (series === "labels" || series === "analysis") mergePoint(tl[series], item);
}

// What lasts from each point to the next one (the last: to now), within the window.
function segments(points, from, now) {
  const out = [];
  for (let i = 0; i < points.length; i += 1) {
    const start = points[i].t;
    const end = i + 1 < points.length ? points[i + 1].t : now;
    if (end > from && end > start) out.push({ start, end, point: points[i], open: i + 1 === points.length });
  }
  return out;
}

// The last point before the window stays: its state lasts into it.
function prune(points, from) {
  let first = 0;
  while (first + 1 < points.length && points[first + 1].t <= from) first += 1;
  points.splice(0, first);
}

function colourOf(label) {
  if (LABEL_COLOURS[label]) return LABEL_COLOURS[label];
  let h = 0;
  for (const c of String(label)) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return SPARE_COLOURS[h % SPARE_COLOURS.length];
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function span(start, end, open) { return `${fmtTime(start)}–${open ? "now" : fmtTime(end)}`; }

const LANE = { height: 34, band: [6, 18], anomaly: [27, 5] };

function drawCamera(tl, from, now, pxPerS) {
  const w = view.windowS;
  const x = (t) => Math.min(w, Math.max(0, t - from));
  const node = svg("svg", { class: "tl", viewBox: `0 0 ${w} ${LANE.height}`, preserveAspectRatio: "none" });
  // The view box is in seconds and stretched to the width, so thin marks are sized in pixels.
  const px = (n) => n / Math.max(pxPerS, 1e-6);
  node.append(svg("rect", { class: "tl-bg", x: 0, y: 0, width: w, height: LANE.height }));
  prune(tl.analysis, from);
  for (const s of segments(tl.analysis, from, now)) {
    if (s.point.state !== "OFF") continue;
    node.append(svg("rect", {
      class: "off", x: x(s.start), y: 0, width: x(s.end) - x(s.start), height: LANE.height,
      "data-tip": `analysis OFF · ${span(s.start, s.end, s.open)}`,
    }));
  }
  prune(tl.labels, from);
  for (const s of segments(tl.labels, from, now)) {
    const p = s.point;
    if (!p.label) continue;
    node.append(svg("rect", {
      class: "band", x: x(s.start), y: LANE.band[0], width: Math.max(x(s.end) - x(s.start), px(1)),
      height: LANE.band[1], fill: colourOf(p.label), "data-label": p.label,
      "data-tip": `${p.label} · score ${fmtScore(p.score)} · ${span(s.start, s.end, s.open)}`,
    }));
  }
  for (const [id, a] of tl.anomalies) {
    const end = a.end == null ? now : a.end;
    if (end < from) { tl.anomalies.delete(id); continue; }
    const tip = `${a.event_type} (${a.label}) · top ${fmtScore(a.score)} · ${span(a.start, end, a.end == null)}`;
    const g = svg("g", { class: "anomaly", "data-tip": tip, "data-event-type": a.event_type });
    g.append(svg("rect", { class: "anomaly-span", x: x(a.start), y: LANE.anomaly[0],
      width: Math.max(x(end) - x(a.start), px(2)), height: LANE.anomaly[1] }));
    if (a.start >= from) {
      g.append(svg("rect", { class: "anomaly-start", x: x(a.start), y: 0, width: px(2), height: LANE.height }));
    }
    if (a.end != null) {
      g.append(svg("rect", { class: "anomaly-end", x: x(a.end) - px(2), y: 0, width: px(2), height: LANE.height }));
    }
    node.append(g);
  }
  return node;
}

function renderAxis(from, now) {
  const axis = $("timeline-axis");
  axis.replaceChildren();
  const step = 5 * 60;
  // The window's first instant gets no tick: its text would hang off the left edge.
  for (let t = now; t > from + step / 5; t -= step) {
    const tick = el("span", t === now ? "now" : fmtTime(t), { class: t === now ? "tick now" : "tick" });
    tick.style.left = `${(100 * (t - from)) / view.windowS}%`;
    axis.append(tick);
  }
}

function renderLegend() {
  const legend = $("timeline-legend");
  legend.replaceChildren();
  const labels = view.labels.length ? view.labels : Object.keys(LABEL_COLOURS);
  for (const label of labels) {
    const item = el("li", label);
    const swatch = el("span", null, { class: "swatch" });
    swatch.style.background = colourOf(label);
    item.prepend(swatch);
    legend.append(item);
  }
  for (const [cls, text] of [["swatch off", "analysis OFF"], ["swatch anomaly", "anomaly (start, end)"]]) {
    const item = el("li", text);
    item.prepend(el("span", null, { class: cls }));
    legend.append(item);
  }
}

function renderTimeline() {
  const box = $("timeline");
  const now = serverNow();
  const from = now - view.windowS;
  const ids = timelineIds();
  view.drawnIds = ids.join();
  $("timeline-empty").hidden = ids.length > 0;
  box.replaceChildren();
  for (const id of ids) {
    const row = el("div", null, { class: "tl-row", "data-camera": id });
    const name = el("div", id, { class: "tl-name" });
    const lane = el("div", null, { class: "tl-lane" });
    row.append(name, lane);
    box.append(row);
    const pxPerS = (lane.clientWidth || 600) / view.windowS;
    lane.append(drawCamera(timelineOf(id), from, now, pxPerS));
  }
  renderAxis(from, now);
}

let timelinePending = false;
function scheduleTimeline() {
  if (timelinePending) return;
  timelinePending = true;
  requestAnimationFrame(() => { timelinePending = false; renderTimeline(); });
}

function showTip(ev) {
  const tip = $("tip");
  const target = ev.target.closest ? ev.target.closest("[data-tip]") : null;
  if (!target) { tip.hidden = true; return; }
  tip.textContent = target.getAttribute("data-tip");
  tip.hidden = false;
  const left = Math.min(ev.clientX + 12, window.innerWidth - tip.offsetWidth - 4);
  tip.style.left = `${Math.max(4, left)}px`;
  tip.style.top = `${ev.clientY + 16}px`;
}

// -- the stream (every gateway on the broker) -------------------------------------------------

function renderBroker() {
  if (!view.streamOpen) setBadge("broker-state", "broker", "unknown");
  else setBadge("broker-state", "broker", view.brokerConnected ? "connected" : "disconnected");
}

function onItem(item) {
  if (item.type === "snapshot") {
    // Retained state is replaced (the broker's view now); events and the timeline are merged, so a
    // reconnect or a service restart keeps what the page already has.
    view.retained = new Map(Object.entries(item.retained || {}));
    for (const e of item.events || []) addEvent(e);
    if (typeof item.now === "number") view.clockOffset = item.now - Date.now() / 1000;
    if (typeof item.window_s === "number") view.windowS = item.window_s;
    for (const [camera, tl] of Object.entries(item.timeline || {})) {
      for (const series of ["labels", "analysis"]) for (const p of tl[series] || []) onTimeline(camera, series, p);
      for (const a of tl.anomalies || []) onTimeline(camera, "anomalies", a);
    }
    view.brokerConnected = item.broker && item.broker.connected;
    if (item.broker && item.broker.disabled) setBadge("broker-state", "broker", "disabled");
    else renderBroker();
    renderCameras();
    renderEvents();
    scheduleTimeline();
  } else if (item.type === "timeline") {
    onTimeline(item.camera, item.series, item.item);
    scheduleTimeline();
  } else if (item.type === "broker") {
    view.brokerConnected = item.connected;
    renderBroker();
  } else if (item.type === "cleared") {
    view.retained.delete(item.topic);
    renderCameras();
  } else if (item.type === "message") {
    if (parseTopic(item.topic).kind === "events") {
      addEvent(item);
      renderEvents();
    } else {
      view.retained.set(item.topic, item.payload);
      renderCameras();
    }
  }
}

function connectStream() {
  // EventSource reconnects by itself (after the server's `retry`), across a service restart too.
  const source = new EventSource("/dashboard/stream");
  source.onopen = () => { view.streamOpen = true; renderBroker(); };
  source.onerror = () => { view.streamOpen = false; renderBroker(); };
  source.onmessage = (msg) => {
    try { onItem(JSON.parse(msg.data)); } catch (err) { say(`bad message from the service: ${err.message}`); }
  };
}

// -- the login (required off loopback) ---------------------------------------------------------

function toLogin() {
  location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
}

// Logged in, the page needs the session's CSRF token for its changes, and offers a log-out.
// False when the page is on its way to the login.
async function loadSession() {
  try {
    const r = await fetch("/session", { cache: "no-store" });
    if (r.status === 401) { toLogin(); return false; }
    if (r.ok) {
      const s = await r.json();
      view.csrf = s.credentials === "session" ? s.csrf_token : null;
    }
  } catch (err) {
    // The poll says when the service does not answer.
  }
  $("token-form").hidden = view.csrf !== null;
  $("logout").hidden = view.csrf === null;
  return true;
}

async function logout() {
  try {
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": view.csrf || "" } });
  } finally {
    location.assign("/login");
  }
}

// -- this gateway (polled) --------------------------------------------------------------------

// The figure of the graph as served (one pass); a manifest scored with flip TTA says so, and no more.
function accuracyText(acc) {
  const pct = (x) => `${(x * 100).toFixed(1)}%`;
  if (acc && typeof acc.served === "number") return `${pct(acc.served)} served (val, one pass)`;
  if (acc && typeof acc.flip_tta === "number") {
    return `served: not in the manifest (its ${pct(acc.flip_tta)} is flip TTA, which the service does not run)`;
  }
  return "served: not in the manifest";
}

function renderModel(model) {
  const dl = $("model");
  dl.replaceChildren();
  if (!model) { dl.append(el("dt", "served"), el("dd", "none")); return; }
  const acc = accuracyText(model.accuracy);
  const rows = [
    ["name", model.name], ["version", `v${model.version}${model.variant ? ` (${model.variant})` : ""}`],
    ["accuracy", acc], ["labels", model.labels.join(", ")], ["sha256", model.sha256.slice(0, 16) + "…"],
  ];
  for (const [k, v] of rows) dl.append(el("dt", k), el("dd", v));
}

function renderLatency(latency) {
  const body = $("latency").tBodies[0];
  body.replaceChildren();
  for (const [camera, stages] of Object.entries(latency || {})) {
    if (Object.keys(stages).length === 0) {
      const row = el("tr", null, { "data-camera": camera, class: "idle" });
      row.append(el("td", camera), el("td", "no frame analysed yet", { class: "muted", colspan: "4" }));
      body.append(row);
      continue;
    }
    for (const [stage, q] of Object.entries(stages)) {
      const row = el("tr", null, { "data-camera": camera, "data-stage": stage });
      row.append(el("td", camera), el("td", stage),
        el("td", q.p50_ms != null ? q.p50_ms.toFixed(2) : "–", { class: "num" }),
        el("td", q.p95_ms != null ? q.p95_ms.toFixed(2) : "–", { class: "num" }),
        el("td", q.count, { class: "num" }));
      body.append(row);
    }
  }
}

async function poll() {
  try {
    const r = await fetch("/dashboard/state", { cache: "no-store" });
    if (r.status === 401) { toLogin(); return; }  // the session ended
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const s = await r.json();
    setBadge("service-state", "service", s.ready ? "connected" : "starting");
    view.admin = s.admin;
    view.local = new Map(s.cameras.filter((c) => c.status !== "disabled").map((c) => [c.id, c]));
    if (s.model && s.model.labels.join() !== view.labels.join()) {
      view.labels = s.model.labels;
      renderLegend();
    }
    renderModel(s.model);
    renderLatency(s.latency);
    renderCameras();
  } catch (err) {
    setBadge("service-state", "service", "disconnected");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  const saved = sessionStorage.getItem("fer-token");
  if (saved) $("token").value = saved;
  $("token-form").addEventListener("submit", (ev) => ev.preventDefault());
  $("logout").addEventListener("click", logout);
  if (!(await loadSession())) return;
  renderBroker();
  renderLegend();
  renderTimeline();
  const timeline = $("timeline");
  timeline.addEventListener("mousemove", showTip);
  timeline.addEventListener("mouseleave", () => { $("tip").hidden = true; });
  // The window slides even when nothing is said; a resize changes what a pixel is.
  setInterval(scheduleTimeline, TIMELINE_REDRAW_MS);
  window.addEventListener("resize", scheduleTimeline);
  connectStream();
  poll();
});
