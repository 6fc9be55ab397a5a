// What the page knows, shared by its parts: this gateway's rows (polled) and what the broker said
// through the stream. Every part renders from here rather than keeping a copy of its own.

export const view = {
  local: new Map(),      // camera id -> row of /dashboard/state (this gateway)
  retained: new Map(),   // MQTT topic -> {camera, kind, payload}; kind: status, expression, analysis/state
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

// The relay names each topic's camera and kind (the service's topics.py parses them), so the page
// never splits a topic itself.
export function retainedFor(camera, kind) {
  for (const r of view.retained.values()) {
    if (r.camera === camera && r.kind === kind) return r.payload;
  }
  return null;
}

export function cameraIds() {
  const ids = new Set(view.local.keys());
  for (const r of view.retained.values()) ids.add(r.camera);
  return [...ids].sort();
}

export function timelineIds() {
  return [...new Set([...cameraIds(), ...view.timeline.keys()])].sort();
}
