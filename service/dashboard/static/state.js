// What the page knows, shared by its parts: this gateway's rows (polled) and what the broker said
// through the stream. Every part renders from here rather than keeping a copy of its own.

export const view = {
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

// <prefix>/<camera>/status|expression|events and <prefix>/<camera>/analysis/state
export function parseTopic(topic) {
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

export function retainedFor(camera, kind) {
  for (const [topic, payload] of view.retained) {
    const t = parseTopic(topic);
    if (t.camera === camera && t.kind === kind) return payload;
  }
  return null;
}

export function cameraIds() {
  const ids = new Set(view.local.keys());
  for (const topic of view.retained.keys()) {
    const t = parseTopic(topic);
    if (t.camera && t.kind !== "events") ids.add(t.camera);
  }
  return [...ids].sort();
}

export function timelineIds() {
  return [...new Set([...cameraIds(), ...view.timeline.keys()])].sort();
}
