// fer-edge dashboard: this gateway's state from /dashboard/state (polled), every gateway's MQTT
// messages from /dashboard/stream (server-sent events). Native ES modules, one per part of the
// page: no build step, and the page's content security policy (default-src 'self') lets them load
// from this origin and nothing else.

import { $ } from "./dom.js";
import { poll } from "./gateway.js";
import { loadSession, logout } from "./session.js";
import { connectStream, renderBroker } from "./stream.js";
import { renderLegend, renderTimeline, scheduleTimeline, showTip } from "./timeline.js";

const TIMELINE_REDRAW_MS = 5000;

async function start() {
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
}

// A module runs once the document is parsed, before DOMContentLoaded: every element is there.
start();
