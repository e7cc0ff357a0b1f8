// The dashboard's way to the bridge's admin API (/api/v1/): every call goes through apiFetch.
//
// A bridge with `[api] token` answers 401 without `Authorization: Bearer <token>`. The first 401
// opens the sign-in dialog (#login); the token typed there is kept in sessionStorage (this tab
// only, gone when it closes), sent on every call from then on, and asked for again when a call
// with it gets 401 (the token was changed or is wrong). Calls made while the dialog is open wait
// for it and then go again. A bridge without a token answers without asking.
//
// The live events are read with fetch() and a stream reader rather than EventSource, which
// cannot send the header (a token in the URL would end up in logs and the history). What
// EventSource did is kept: `open` once the stream answers, `down` when it ends or fails, and a
// new attempt RETRY_MS later.

const API = "/api/v1";
const TOKEN_KEY = "mqtt-bridge.api-token";
const RETRY_MS = 2000;
/** A longer line than this in the event stream is not the bridge's: the stream is dropped. */
const MAX_LINE = 1 << 20;

let token = sessionStorage.getItem(TOKEN_KEY);
/** The open sign-in dialog's promise, shared by every call that waits for it. */
let asking = null;

const $ = (id) => document.getElementById(id);

/** Opens the sign-in dialog (once, however many calls wait) and resolves with the new token. */
function askToken(refused) {
  asking ??= showLogin(refused).finally(() => (asking = null));
  return asking;
}

function showLogin(refused) {
  const dlg = $("login");
  const input = $("login-token");
  $("login-error").hidden = !refused;
  input.value = "";
  dlg.returnValue = "";
  return new Promise((resolve) => {
    const onClose = () => {
      const value = input.value.trim();
      if (dlg.returnValue !== "ok" || !value) {
        // Closed some other way (Escape): the dashboard cannot work without a token.
        dlg.returnValue = "";
        dlg.showModal();
        return;
      }
      dlg.removeEventListener("close", onClose);
      token = value;
      sessionStorage.setItem(TOKEN_KEY, value);
      resolve(value);
    };
    dlg.addEventListener("close", onClose);
    dlg.showModal();
    input.focus();
  });
}

/** fetch(API + path), with the token; on 401, asks for a token and tries again. */
export async function apiFetch(path, init = {}) {
  for (;;) {
    const sent = token;
    const headers = new Headers(init.headers);
    if (sent) headers.set("authorization", `Bearer ${sent}`);
    const r = await fetch(API + path, { ...init, headers });
    if (r.status !== 401) return r;
    // Another call may have signed in meanwhile: then just go again with its token.
    if (token === sent) {
      if (sent) {
        token = null;
        sessionStorage.removeItem(TOKEN_KEY);
      }
      await askToken(sent !== null);
    }
  }
}

/** The JSON answer of GET path; null for 404. */
export async function getJson(path) {
  const r = await apiFetch(path, { headers: { accept: "application/json" } });
  if (r.status === 404) return null;
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${await errorText(r)}`);
  return r.json();
}

/** The `error` of a JSON error answer, or "". */
export async function errorText(r) {
  try {
    const body = await r.json();
    return body.error ?? "";
  } catch {
    return "";
  }
}

/**
 * Reads /events for as long as the page lives: `open()` when the stream answers, `event(type,
 * data)` for each event, `down()` when it ends or fails (a new attempt follows).
 */
export function streamEvents({ open, event, down }) {
  (async () => {
    for (;;) {
      try {
        const r = await apiFetch("/events", { headers: { accept: "text/event-stream" }, cache: "no-store" });
        if (!r.ok || !r.body) throw new Error(`/events: HTTP ${r.status}`);
        open();
        await readEvents(r.body, event);
      } catch (e) {
        console.debug("event stream", e);
      }
      down();
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  })();
}

/** Parses a text/event-stream body (the fields the bridge sends: event, data, comments). */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let type = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let end;
    while ((end = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, end).replace(/\r$/, "");
      buf = buf.slice(end + 1);
      if (line === "") {
        if (data.length) onEvent(type || "message", data.join("\n"));
        type = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = val;
      else if (field === "data") data.push(val);
    }
    if (buf.length > MAX_LINE) {
      await reader.cancel();
      throw new Error("event stream: line too long");
    }
  }
}
