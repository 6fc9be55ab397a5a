// Everything shown comes from a broker or the service, so it is written with textContent (or an
// attribute) only, never parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

export const $ = (id) => document.getElementById(id);

export function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

export function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

export function fmtScore(x) { return typeof x === "number" ? x.toFixed(2) : "–"; }
export function fmtTime(ts) {
  return typeof ts === "number" ? new Date(ts * 1000).toLocaleTimeString([], { hour12: false }) : "–";
}
export function say(text) { $("message").textContent = text || ""; }

export function setBadge(id, prefix, state) {
  const b = $(id);
  b.dataset.state = state;
  b.textContent = `${prefix}: ${state}`;
}
