// This gateway, from /dashboard/state (polled): whether the service is up, its own cameras, the
// served model and the latency of the last minute.

import { $, el, setBadge } from "./dom.js";
import { renderCameras } from "./cameras.js";
import { toLogin } from "./session.js";
import { view } from "./state.js";
import { renderLegend } from "./timeline.js";

const POLL_MS = 2000;

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

export async function poll() {
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
