// The timeline: each camera's last minutes as one SVG lane (label bands, the switch's OFF shading,
// anomalies). The service keeps those minutes, so a reload draws the same.

import { $, el, fmtScore, fmtTime, svg } from "./dom.js";
import { timelineIds, view } from "./state.js";

// The seven FER2013 expressions; a model with other labels gets the spare colours in turn.
const LABEL_COLOURS = {
  angry: "#d64545", disgust: "#6b8e23", fear: "#8e5cc2", happy: "#f2b705", sad: "#3f7fd1",
  surprise: "#f07f2a", neutral: "#9aa4b2",
};
const SPARE_COLOURS = ["#1b9e77", "#e7298a", "#66a61e", "#a6761d", "#7570b3", "#17becf"];
const LANE = { height: 34, band: [6, 18], anomaly: [27, 5] };

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

export function onTimeline(camera, series, item) {
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

function span(start, end, open) { return `${fmtTime(start)}–${open ? "now" : fmtTime(end)}`; }

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

export function renderLegend() {
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

export function renderTimeline() {
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
export function scheduleTimeline() {
  if (timelinePending) return;
  timelinePending = true;
  requestAnimationFrame(() => { timelinePending = false; renderTimeline(); });
}

export function showTip(ev) {
  const tip = $("tip");
  const target = ev.target.closest ? ev.target.closest("[data-tip]") : null;
  if (!target) { tip.hidden = true; return; }
  tip.textContent = target.getAttribute("data-tip");
  tip.hidden = false;
  const left = Math.min(ev.clientX + 12, window.innerWidth - tip.offsetWidth - 4);
  tip.style.left = `${Math.max(4, left)}px`;
  tip.style.top = `${ev.clientY + 16}px`;
}
