// The camera table: every camera on the broker (retained status, expression and switch state),
// with this gateway's own figures where it has them.

import { $, el, fmtScore } from "./dom.js";
import { toggle } from "./session.js";
import { cameraIds, retainedFor, timelineIds, view } from "./state.js";
import { scheduleTimeline } from "./timeline.js";

function switched(id, state) {
  const local = view.local.get(id);
  if (local) local.analysis = state;
  renderCameras();
}

function switchButton(id, state) {
  const button = el("button", state, { class: "switch", "data-state": state, type: "button" });
  const how = view.csrf ? "" : " (admin token)";
  button.title = view.admin ? `switch analysis ${state === "ON" ? "off" : "on"}${how}` :
    "set api.token (FER_API__TOKEN) to switch analysis from here";
  button.disabled = !view.admin;
  button.addEventListener("click", () => toggle(id, state === "ON" ? "OFF" : "ON", button, (s) => switched(id, s)));
  return button;
}

export function renderCameras() {
  const body = $("cameras").tBodies[0];
  body.replaceChildren();
  const ids = cameraIds();
  $("cameras-empty").hidden = ids.length > 0;
  for (const id of ids) {
    const local = view.local.get(id);
    const status = retainedFor(id, "status");
    const expr = retainedFor(id, "expression");
    const analysis = retainedFor(id, "analysis/state");
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
