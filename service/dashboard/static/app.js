// fer-edge dashboard: this gateway's state from /dashboard/state (polled), every gateway's MQTT
// messages from /dashboard/stream (server-sent events). Everything shown comes from a broker or
// the service, so it is written with textContent only, never parsed as HTML.
"use strict";

const MAX_EVENTS = 100;
const POLL_MS = 2000;

const view = {
  local: new Map(),      // camera id -> row of /dashboard/state (this gateway)
  retained: new Map(),   // MQTT topic -> payload (status, expression, analysis/state, available)
  events: new Map(),     // event id -> {payload, types: [], at}; anomalies merge new/update/end
  seen: new Set(),       // one key per message, so a snapshot after a reconnect adds only what is new
  admin: false,
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

function switchButton(id, state) {
  const button = el("button", state, { class: "switch", "data-state": state, type: "button" });
  button.title = view.admin ? `switch analysis ${state === "ON" ? "off" : "on"} (admin token)` :
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
    const name = el("td", local && local.name && local.name !== id ? `${id} (${local.name})` : id);
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
    row.append(el("td", local ? local.fps.toFixed(1) : "–", { class: "num" }));
    const label = expr ? expr.label : (local ? local.expression : null);
    row.append(el("td", label || "no face", { class: label ? "label" : "muted" }));
    row.append(el("td", expr ? fmtScore(expr.score) : "–", { class: "num" }));
    row.append(el("td", expr ? expr.faces : (local ? local.faces : "–"), { class: "num" }));
    const version = expr && expr.model_version != null ? expr.model_version : (local ? local.model_version : null);
    row.append(el("td", version != null ? `v${version}` : "–"));
    const switchState = analysis ? analysis.state : (local && local.analysis ? local.analysis : null);
    const cell = el("td");
    if (local && switchState) cell.append(switchButton(id, switchState));
    else cell.append(el("span", switchState || "–", { class: "badge", "data-state": switchState || "" }));
    row.append(cell);
    body.append(row);
  }
}

async function toggle(id, state, button) {
  const token = $("token").value.trim() || sessionStorage.getItem("fer-token") || "";
  if (!token) { say("Enter the admin token (FER_API__TOKEN) to switch a camera."); $("token").focus(); return; }
  button.disabled = true;
  try {
    const r = await fetch(`/cameras/${encodeURIComponent(id)}/analysis`, {
      method: "PUT",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ state }),
    });
    const body = await r.json();
    if (!r.ok) { say(`${id}: ${body.error ? body.error.message : r.status}`); return; }
    sessionStorage.setItem("fer-token", token);
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
      { class: "num" }));
    const life = el("td");
    if (anomaly) {
      for (const t of e.types) life.append(el("span", t, { class: "chip", "data-type": t }));
    } else {
      life.append(el("span", "change", { class: "chip" }));
    }
    row.append(life);
    row.append(el("td", p.track_id != null ? `#${p.track_id}` : "–"));
    row.append(el("td", p.model_version != null ? `v${p.model_version}` : "–"));
    body.append(row);
  }
}

// -- the stream (every gateway on the broker) -------------------------------------------------

function renderBroker() {
  if (!view.streamOpen) setBadge("broker-state", "broker", "unknown");
  else setBadge("broker-state", "broker", view.brokerConnected ? "connected" : "disconnected");
}

function onItem(item) {
  if (item.type === "snapshot") {
    // Retained state is replaced (the broker's view now); events are merged, so a reconnect or a
    // service restart keeps the feed the page already has.
    view.retained = new Map(Object.entries(item.retained || {}));
    for (const e of item.events || []) addEvent(e);
    view.brokerConnected = item.broker && item.broker.connected;
    if (item.broker && item.broker.disabled) setBadge("broker-state", "broker", "disabled");
    else renderBroker();
    renderCameras();
    renderEvents();
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

// -- this gateway (polled) --------------------------------------------------------------------

function renderModel(model) {
  const dl = $("model");
  dl.replaceChildren();
  if (!model) { dl.append(el("dt", "served"), el("dd", "none")); return; }
  const acc = typeof model.val_accuracy === "number" ? `${(model.val_accuracy * 100).toFixed(1)}% (val)` : "–";
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
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const s = await r.json();
    setBadge("service-state", "service", s.ready ? "connected" : "starting");
    view.admin = s.admin;
    view.local = new Map(s.cameras.filter((c) => c.status !== "disabled").map((c) => [c.id, c]));
    renderModel(s.model);
    renderLatency(s.latency);
    renderCameras();
  } catch (err) {
    setBadge("service-state", "service", "disconnected");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const saved = sessionStorage.getItem("fer-token");
  if (saved) $("token").value = saved;
  $("token-form").addEventListener("submit", (ev) => ev.preventDefault());
  renderBroker();
  connectStream();
  poll();
});
