// Every gateway on the broker, through the service's /dashboard/stream (server-sent events): a
// snapshot at each (re)connect, then each message as it comes.

import { setBadge, say } from "./dom.js";
import { renderCameras } from "./cameras.js";
import { addEvent, renderEvents } from "./events.js";
import { view } from "./state.js";
import { onTimeline, scheduleTimeline } from "./timeline.js";

export function renderBroker() {
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
    if (item.kind === "events") {
      addEvent(item);
      renderEvents();
    } else {
      view.retained.set(item.topic, { camera: item.camera, kind: item.kind, payload: item.payload });
      renderCameras();
    }
  }
}

export function connectStream() {
  // EventSource reconnects by itself (after the server's `retry`), across a service restart too.
  const source = new EventSource("/dashboard/stream");
  source.onopen = () => { view.streamOpen = true; renderBroker(); };
  source.onerror = () => { view.streamOpen = false; renderBroker(); };
  source.onmessage = (msg) => {
    try { onItem(JSON.parse(msg.data)); } catch (err) { say(`bad message from the service: ${err.message}`); }
  };
}
