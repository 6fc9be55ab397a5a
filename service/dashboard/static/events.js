// The event feed of <prefix>/+/events, newest first: expression changes, and each anomaly as one
// row whose lifecycle grows new → update → end.

import { $, el, fmtScore, fmtTime } from "./dom.js";
import { view } from "./state.js";

const MAX_EVENTS = 100;

export function addEvent(item) {
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

export function renderEvents() {
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
