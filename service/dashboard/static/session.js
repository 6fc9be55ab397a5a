// The page's credentials: a session (a login, required off loopback) or the admin token typed in,
// and the one change the page makes with them, a camera's privacy switch.

import { $, say } from "./dom.js";
import { view } from "./state.js";

export function toLogin() {
  location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
}

// Logged in, the page needs the session's CSRF token for its changes, and offers a log-out.
// False when the page is on its way to the login.
export async function loadSession() {
  try {
    const r = await fetch("/session", { cache: "no-store" });
    if (r.status === 401) { toLogin(); return false; }
    if (r.ok) {
      const s = await r.json();
      view.csrf = s.credentials === "session" ? s.csrf_token : null;
    }
  } catch (err) {
    // The poll says when the service does not answer.
  }
  $("token-form").hidden = view.csrf !== null;
  $("logout").hidden = view.csrf === null;
  return true;
}

export async function logout() {
  try {
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": view.csrf || "" } });
  } finally {
    location.assign("/login");
  }
}

// `switched` gets the state the service answered; the camera table redraws itself with it, so
// this module needs nothing of the table's.
export async function toggle(id, state, button, switched) {
  // Logged in, the session cookie goes by itself and the CSRF token with it; else the admin token.
  const headers = { "Content-Type": "application/json" };
  const token = view.csrf ? "" : $("token").value.trim() || sessionStorage.getItem("fer-token") || "";
  if (view.csrf) headers["X-CSRF-Token"] = view.csrf;
  else if (token) headers.Authorization = `Bearer ${token}`;
  else { say("Enter the admin token (FER_API__TOKEN) to switch a camera."); $("token").focus(); return; }
  button.disabled = true;
  try {
    const r = await fetch(`/cameras/${encodeURIComponent(id)}/analysis`, {
      method: "PUT", headers, body: JSON.stringify({ state }),
    });
    if (r.status === 401 && view.csrf) { toLogin(); return; }
    const body = await r.json();
    if (!r.ok) { say(`${id}: ${body.error ? body.error.message : r.status}`); return; }
    if (token) sessionStorage.setItem("fer-token", token);
    say("");
    switched(body.state);
  } catch (err) {
    say(`${id}: the service did not answer (${err.message})`);
  } finally {
    button.disabled = !view.admin;
  }
}
