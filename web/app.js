// The operator dashboard: sessions live from the SSE stream /api/v1/events, totals from
// /api/v1/stats every 2 s, the retained messages, and a session's detail with kick / discard.
// No framework, nothing fetched from anywhere but this origin. All data goes into the DOM
// through textContent (never innerHTML). The playground is playground.js; the two talk through
// two document events: `dashboard:sessions` (the session map after each change, from here) and
// `dashboard:select` (open a session's detail, from there).

const API = "/api/v1";
const STATS_EVERY_MS = 2000;
const PAGE = 1000;

const $ = (id) => document.getElementById(id);

/** client id -> summary (the shape of GET /sessions items). */
const sessions = new Map();
/** client id -> its <tr>. */
const rows = new Map();
/** Per client id: a refresh in progress, and whether another is due after it. */
const refreshing = new Map();
/** Bumped when a session ends, so an older refresh cannot bring it back. */
const generation = new Map();
/** Per client id: how many `queue` events have come, to tell a stale re-read from a new one. */
const queueEvents = new Map();
/** Events seen while the full list loads: refreshed again once it is in. */
let loadingList = null;
let selected = null;

// ---------------------------------------------------------------------------------------
// Helpers

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

async function getJson(path) {
  const r = await fetch(API + path, { headers: { accept: "application/json" } });
  if (r.status === 404) return null;
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${await errorText(r)}`);
  return r.json();
}

async function errorText(r) {
  try {
    const body = await r.json();
    return body.error ?? "";
  } catch {
    return "";
  }
}

const enc = encodeURIComponent;
const fmtInt = (n) => (n == null ? "–" : Number(n).toLocaleString("en"));
const fmtRate = (n) => (n == null ? "–" : n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString("en"));
const fmtTime = (ms) => (ms == null ? "–" : new Date(ms).toLocaleString());
const protoName = (v) => (v === 5 ? "MQTT 5.0" : v === 4 ? "MQTT 3.1.1" : `v${v}`);

/** "4m 05s", "2h 03m", "3d 4h". */
function fmtDuration(ms) {
  if (ms <= 0) return "ending…";
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const p2 = (n) => String(n).padStart(2, "0");
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${p2(m)}m`;
  if (m > 0) return `${m}m ${p2(sec)}s`;
  return `${sec}s`;
}

function toast(msg) {
  const t = $("toast");
  t.textContent = msg;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 6000);
}

/** A summary (list item shape) from a detail. */
function summaryOf(d) {
  return {
    client_id: d.client_id,
    protocol_version: d.protocol_version,
    connected: d.connected,
    clean_start: d.clean_start,
    persistent: d.session_expiry_interval > 0,
    queued: d.queue.length,
    inflight: d.inflight.count,
    subscriptions: d.subscriptions.length,
    connected_at_ms: d.connected_at_ms,
    disconnected_at_ms: d.disconnected_at_ms,
    expires_at_ms: d.expires_at_ms,
  };
}

// ---------------------------------------------------------------------------------------
// The session table

function countdownText(s) {
  if (s.connected) return { text: "online", title: "The session's end is counted from its disconnect" };
  if (!s.persistent) return { text: "–", title: "" };
  if (s.expires_at_ms == null) return { text: "never", title: "The session does not expire" };
  return { text: fmtDuration(s.expires_at_ms - Date.now()), title: `Ends at ${fmtTime(s.expires_at_ms)}` };
}

function renderRow(s) {
  let tr = rows.get(s.client_id);
  if (!tr) {
    tr = el("tr", { "data-client-id": s.client_id });
    const btn = el("button", { type: "button", class: "link", text: s.client_id });
    btn.addEventListener("click", () => select(s.client_id));
    tr.append(
      el("th", { scope: "row" }, btn),
      el("td", { class: "c-state" }),
      el("td", { class: "c-kind" }),
      el("td", { class: "c-proto" }),
      el("td", { class: "num c-subs" }),
      el("td", { class: "num c-queued" }),
      el("td", { class: "num c-inflight" }),
      el("td", { class: "c-ends" }),
    );
    rows.set(s.client_id, tr);
  }
  const cell = (cls) => tr.querySelector("." + cls);
  const state = cell("c-state");
  state.replaceChildren(
    el("span", { class: `badge ${s.connected ? "online" : "offline"}`, text: s.connected ? "online" : "offline" }),
  );
  cell("c-kind").replaceChildren(
    el("span", { class: `tag ${s.persistent ? "persistent" : "clean"}`, text: s.persistent ? "persistent" : "clean" }),
  );
  cell("c-proto").textContent = protoName(s.protocol_version);
  cell("c-subs").textContent = fmtInt(s.subscriptions);
  const q = cell("c-queued");
  q.textContent = fmtInt(s.queued);
  q.classList.toggle("hot", s.queued > 0);
  cell("c-inflight").textContent = fmtInt(s.inflight);
  updateCountdown(tr, s);
  tr.classList.toggle("selected", selected === s.client_id);
  return tr;
}

function updateCountdown(tr, s) {
  const c = tr.querySelector(".c-ends");
  const { text, title } = countdownText(s);
  if (c.textContent !== text) c.textContent = text;
  c.title = title;
  c.classList.toggle("muted", s.connected || !s.persistent);
}

function matchesFilters(s) {
  const prefix = $("f-prefix").value;
  const state = $("f-state").value;
  const kind = $("f-kind").value;
  if (prefix && !s.client_id.startsWith(prefix)) return false;
  if (state === "online" && !s.connected) return false;
  if (state === "offline" && s.connected) return false;
  if (kind === "persistent" && !s.persistent) return false;
  if (kind === "clean" && s.persistent) return false;
  return true;
}

/** Puts the rows in client id order (as the API sorts), filtered. */
function layoutTable() {
  const ids = [...sessions.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const body = $("sessions-body");
  const shown = [];
  for (const id of ids) {
    const s = sessions.get(id);
    if (matchesFilters(s)) shown.push(renderRow(s));
  }
  // Only touch the DOM when the order or membership changed (keeps focus and selection).
  const current = [...body.children];
  if (current.length !== shown.length || current.some((tr, i) => tr !== shown[i])) {
    body.replaceChildren(...shown);
  }
  for (const [id, tr] of rows) if (!sessions.has(id)) rows.delete(id);
  $("sessions-empty").hidden = sessions.size > 0;
  $("session-count").textContent =
    shown.length === sessions.size ? `(${sessions.size})` : `(${shown.length} of ${sessions.size})`;
  // The playground (playground.js) mirrors its device's row from here.
  document.dispatchEvent(new CustomEvent("dashboard:sessions", { detail: sessions }));
}

function upsert(s) {
  const had = sessions.has(s.client_id);
  sessions.set(s.client_id, s);
  if (had) renderRow(s);
  layoutTable();
}

function remove(id) {
  sessions.delete(id);
  rows.delete(id);
  layoutTable();
}

async function loadAll() {
  const touched = new Set();
  touched.ended = new Set(); // ended (and not created again) while the list loaded
  loadingList = touched;
  try {
    const all = [];
    for (let offset = 0; ; offset += PAGE) {
      const page = await getJson(`/sessions?offset=${offset}&limit=${PAGE}`);
      all.push(...page.sessions);
      if (all.length >= page.total || page.sessions.length === 0) break;
    }
    sessions.clear();
    for (const s of all) sessions.set(s.client_id, s);
    for (const tr of rows.values()) tr.remove();
    rows.clear();
    layoutTable();
  } finally {
    if (loadingList === touched) loadingList = null;
  }
  // Changes seen while the list was loading may be older or newer than it: ask again.
  for (const id of touched) if (!touched.ended.has(id)) refresh(id);
  if (selected) refreshDetail();
}

/** Per client id: a refresh waiting for the rest of its engine batch. */
const pending = new Map();
/** How long a change waits before its session is re-read: a short-lived client (a
 * mosquitto_pub) is created, connected and ended within a few ms, and is then never fetched. */
const SETTLE_MS = 120;

/** Re-reads one session soon; changes that come together are read once. */
function refresh(id) {
  if (loadingList) loadingList.add(id);
  if (pending.has(id)) return;
  pending.set(
    id,
    setTimeout(() => {
      pending.delete(id);
      refreshNow(id);
    }, SETTLE_MS),
  );
}

function cancelRefresh(id) {
  clearTimeout(pending.get(id));
  pending.delete(id);
}

/** Re-reads one session; coalesced, so at most one request per id is in flight. */
function refreshNow(id) {
  if (loadingList) loadingList.add(id);
  const st = refreshing.get(id);
  if (st) {
    st.again = true;
    return;
  }
  const entry = { again: false };
  refreshing.set(id, entry);
  (async () => {
    do {
      entry.again = false;
      const gen = generation.get(id) ?? 0;
      const queueSeen = queueEvents.get(id) ?? 0;
      try {
        const d = await getJson(`/sessions/${enc(id)}`);
        if ((generation.get(id) ?? 0) !== gen) continue;
        if (d) {
          const s = summaryOf(d);
          // A queue event that came in meanwhile may be newer than this answer (the event
          // stream and this request are separate connections): keep its counts rather than
          // let the count flicker back; the refresh that event asked for follows.
          const cur = sessions.get(id);
          if (cur && (queueEvents.get(id) ?? 0) !== queueSeen) {
            s.queued = cur.queued;
            s.inflight = cur.inflight;
          }
          upsert(s);
        } else remove(id);
        if (selected === id) {
          showDetail(d);
          if (d) scheduleDetailMessages();
        }
      } catch (e) {
        console.warn("refresh", id, e);
      }
    } while (entry.again);
    refreshing.delete(id);
  })();
}

// ---------------------------------------------------------------------------------------
// Live events

let source = null;

function setLive(state, text) {
  $("live").dataset.state = state;
  $("live-text").textContent = text;
}

function connectEvents() {
  source = new EventSource(`${API}/events`);
  source.addEventListener("open", () => {
    setLive("live", "Live");
    loadAll().catch((e) => toast(`Could not load the sessions: ${e.message}`));
  });
  source.addEventListener("error", () => {
    setLive("down", "Reconnecting…");
  });
  source.addEventListener("resync", () => {
    loadAll().catch((e) => toast(`Could not reload the sessions: ${e.message}`));
  });
  const onChange = (ev) => {
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      return;
    }
    const id = data.client_id;
    if (typeof id !== "string") return;
    scheduleStats();
    if (ev.type === "ended") {
      generation.set(id, (generation.get(id) ?? 0) + 1);
      cancelRefresh(id);
      if (loadingList) loadingList.ended.add(id);
      remove(id);
      if (selected === id) showDetail(null);
      return;
    }
    if (ev.type === "created" && loadingList) loadingList.ended.delete(id);
    if (ev.type === "queue") {
      queueEvents.set(id, (queueEvents.get(id) ?? 0) + 1);
      // Show the counts at once; the refresh below brings the rest.
      const s = sessions.get(id);
      if (s) upsert({ ...s, queued: data.queued, inflight: data.inflight });
    }
    refresh(id);
  };
  for (const t of ["created", "connected", "disconnected", "ended", "subscribed", "unsubscribed", "queue"]) {
    source.addEventListener(t, onChange);
  }
}

// ---------------------------------------------------------------------------------------
// Detail

function select(id) {
  selected = id;
  for (const [rid, tr] of rows) tr.classList.toggle("selected", rid === id);
  $("detail-placeholder").hidden = true;
  $("detail-body").hidden = false;
  $("detail-actions").hidden = false;
  $("detail-gone").hidden = true;
  $("detail-heading").textContent = `Session ${id}`;
  $("detail-heading").focus();
  refreshDetail();
}

function closeDetail() {
  const id = selected;
  selected = null;
  for (const tr of rows.values()) tr.classList.remove("selected");
  $("detail-placeholder").hidden = false;
  $("detail-body").hidden = true;
  $("detail-actions").hidden = true;
  $("detail-heading").textContent = "Session detail";
  const btn = id && rows.get(id)?.querySelector("button");
  if (btn) btn.focus();
}

async function refreshDetail() {
  const id = selected;
  if (!id) return;
  try {
    const d = await getJson(`/sessions/${enc(id)}`);
    if (selected !== id) return;
    showDetail(d);
    if (d) await loadDetailMessages();
  } catch (e) {
    toast(`Could not load ${id}: ${e.message}`);
  }
}

let messagesTimer = null;
function scheduleDetailMessages() {
  if (messagesTimer) return;
  messagesTimer = setTimeout(() => {
    messagesTimer = null;
    loadDetailMessages().catch((e) => console.warn(e));
  }, 150);
}

function showDetail(d) {
  if (!selected) return;
  if (!d) {
    const gone = $("detail-gone");
    gone.textContent = `Session ${selected} has ended.`;
    gone.hidden = false;
    // What was shown belongs to a session that no longer exists (or to another one).
    $("detail-body").dataset.gone = "";
    $("btn-kick").disabled = true;
    $("btn-discard").disabled = true;
    return;
  }
  $("detail-gone").hidden = true;
  delete $("detail-body").dataset.gone;
  $("btn-kick").disabled = !d.connected;
  $("btn-kick").title = d.connected ? "Close the connection, keep the session" : "The client is not connected";
  $("btn-discard").disabled = false;
  const facts = [
    ["State", d.connected ? "online" : "offline"],
    ["Protocol", protoName(d.protocol_version)],
    ["Clean start", d.clean_start ? "yes" : "no"],
    ["Username", d.username ?? "–"],
    ["Peer", d.peer ?? "–"],
    ["Keep-alive", d.keep_alive == null ? "–" : `${d.keep_alive} s`],
    ["Connected at", fmtTime(d.connected_at_ms)],
    ["Disconnected at", fmtTime(d.disconnected_at_ms)],
    [
      "Session expiry",
      d.session_expiry_interval === 4294967295 ? "never" : `${fmtInt(d.session_expiry_interval)} s`,
    ],
    ["Session ends", d.expires_at_ms == null ? "–" : fmtTime(d.expires_at_ms)],
    ["In flight", `${fmtInt(d.inflight.count)} / ${fmtInt(d.inflight.max)}`],
    ["Queue", `${fmtInt(d.queue.length)} / ${fmtInt(d.queue.max)}`],
    ["Dropped", fmtInt(d.queue.dropped)],
    ["Awaiting PUBREL", fmtInt(d.awaiting_pubrel)],
    ["Messages in / out", `${fmtInt(d.msgs_in)} / ${fmtInt(d.msgs_out)}`],
    ["Bytes in / out", `${fmtInt(d.bytes_in)} / ${fmtInt(d.bytes_out)}`],
  ];
  $("detail-facts").replaceChildren(
    ...facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: String(v) }))),
  );
  const subs = d.subscriptions.map((s) =>
    el(
      "tr",
      {},
      el("td", {}, el("code", { text: s.filter })),
      el("td", { class: "num", text: String(s.qos) }),
      el("td", { text: s.no_local ? "yes" : "no" }),
      el("td", { text: s.retain_as_published ? "yes" : "no" }),
      el("td", { class: "num", text: String(s.retain_handling) }),
      el("td", { class: "num", text: s.subscription_identifier == null ? "–" : String(s.subscription_identifier) }),
    ),
  );
  $("detail-subs").replaceChildren(...(subs.length ? subs : [emptyRow(6, "No subscriptions.")]));
}

function emptyRow(cols, text) {
  return el("tr", { class: "none" }, el("td", { colSpan: cols, text }));
}

function payloadCell(m) {
  const td = el("td", { class: "payload" });
  td.append(el("code", { text: m.payload_preview }));
  if (m.size > new TextEncoder().encode(m.payload_preview).length) td.append(el("span", { class: "muted", text: " …" }));
  return td;
}

async function loadDetailMessages() {
  const id = selected;
  if (!id) return;
  const [q, inf] = await Promise.all([
    getJson(`/sessions/${enc(id)}/queue?limit=100`),
    getJson(`/sessions/${enc(id)}/inflight?limit=100`),
  ]);
  if (selected !== id || !q || !inf) return;
  const qRows = q.messages.map((m) =>
    el(
      "tr",
      {},
      el("td", {}, el("code", { text: m.topic })),
      el("td", { class: "num", text: String(m.qos) }),
      el("td", { class: "num", text: fmtInt(m.size) }),
      payloadCell(m),
      el("td", { text: m.from ?? "–" }),
      el("td", { text: new Date(m.enqueued_at_ms).toLocaleTimeString() }),
    ),
  );
  $("detail-queue").replaceChildren(...(qRows.length ? qRows : [emptyRow(6, "The queue is empty.")]));
  $("detail-queue-count").textContent = `(${q.messages.length}${q.messages.length === 100 ? "+" : ""})`;
  const iRows = inf.messages.map((m) =>
    el(
      "tr",
      {},
      el("td", { class: "num", text: String(m.packet_id ?? "–") }),
      el("td", { text: m.stage === "awaiting_comp" ? "awaiting PUBCOMP" : "awaiting ack" }),
      el("td", {}, el("code", { text: m.topic })),
      el("td", { class: "num", text: String(m.qos) }),
      payloadCell(m),
      el("td", { text: m.from ?? "–" }),
    ),
  );
  $("detail-inflight").replaceChildren(...(iRows.length ? iRows : [emptyRow(6, "Nothing in flight.")]));
  $("detail-inflight-count").textContent = `(${inf.messages.length})`;
}

/** Resolves true when the operator confirms. */
function confirmAction(title, text, okLabel) {
  const dlg = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  dlg.returnValue = "";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.showModal();
    $("confirm-cancel").focus();
  });
}

async function kick() {
  const id = selected;
  if (!id) return;
  const ok = await confirmAction(
    "Kick this client?",
    `The connection of ${id} is closed; its session is kept and queues messages until it returns or expires.`,
    "Kick",
  );
  if (!ok) return;
  const r = await fetch(`${API}/sessions/${enc(id)}/kick`, { method: "POST" });
  if (r.status !== 204) toast(`Kick ${id} failed: HTTP ${r.status} ${await errorText(r)}`);
  refresh(id);
}

async function discard() {
  const id = selected;
  if (!id) return;
  const ok = await confirmAction(
    "Discard this session?",
    `The session of ${id} ends now: its subscriptions and queued messages are gone, and its connection (if any) is closed.`,
    "Discard",
  );
  if (!ok) return;
  const r = await fetch(`${API}/sessions/${enc(id)}`, { method: "DELETE" });
  if (r.status !== 204 && r.status !== 404) {
    toast(`Discard ${id} failed: HTTP ${r.status} ${await errorText(r)}`);
    return;
  }
  generation.set(id, (generation.get(id) ?? 0) + 1);
  remove(id);
  closeDetail();
  $("sessions-heading").focus();
}

// ---------------------------------------------------------------------------------------
// Totals and retained messages

let lastStats = null;
let statsTimer = null;

/** The totals change with the sessions: read them soon after an event, not only every 2 s. */
function scheduleStats() {
  if (statsTimer) return;
  statsTimer = setTimeout(() => {
    statsTimer = null;
    loadStats();
  }, 300);
}

async function loadStats() {
  try {
    const s = await getJson("/stats");
    $("st-connections").textContent = fmtInt(s.connections);
    $("st-online").textContent = fmtInt(s.sessions_online);
    $("st-offline").textContent = fmtInt(s.sessions_offline);
    $("st-in-rate").textContent = fmtRate(s.messages_in_per_sec);
    $("st-out-rate").textContent = fmtRate(s.messages_out_per_sec);
    $("st-queued").textContent = fmtInt(s.queued);
    $("st-inflight").textContent = fmtInt(s.inflight);
    $("st-dropped").textContent = fmtInt(s.dropped);
    $("st-dropped").classList.toggle("bad", s.dropped > 0);
    // The retained set can only change with an incoming message: reload it then.
    if (!lastStats || lastStats.retained !== s.retained || lastStats.msgs_in !== s.msgs_in) {
      loadRetained().catch((e) => console.warn(e));
    }
    lastStats = s;
  } catch (e) {
    console.warn("stats", e);
  }
}

async function loadRetained() {
  const r = await getJson("/retained?limit=200");
  const trs = r.messages.map((m) =>
    el(
      "tr",
      {},
      el("th", { scope: "row" }, el("code", { text: m.topic })),
      el("td", { class: "num", text: String(m.qos) }),
      el("td", { class: "num", text: fmtInt(m.size) }),
      payloadCell(m),
      el("td", { text: m.from ?? "–" }),
      el("td", { text: fmtTime(m.enqueued_at_ms) }),
    ),
  );
  $("retained-body").replaceChildren(...trs);
  $("retained-empty").hidden = trs.length > 0;
  $("retained-count").textContent = r.total > r.messages.length ? `(${r.messages.length} of ${r.total})` : `(${r.total})`;
}

// ---------------------------------------------------------------------------------------
// Start

function start() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  $("ws-url").textContent = `${scheme}//${location.host}/mqtt`;
  $("btn-kick").addEventListener("click", () => kick().catch((e) => toast(e.message)));
  $("btn-discard").addEventListener("click", () => discard().catch((e) => toast(e.message)));
  $("btn-close").addEventListener("click", closeDetail);
  $("btn-retained").addEventListener("click", () => loadRetained().catch((e) => toast(e.message)));
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  for (const f of ["f-prefix", "f-state", "f-kind"]) $(f).addEventListener("input", layoutTable);
  // The playground (playground.js) asks for its device's session this way.
  document.addEventListener("dashboard:select", (e) => {
    const id = e.detail?.clientId;
    if (typeof id === "string") select(id);
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && selected && !$("confirm").open) closeDetail();
  });
  connectEvents();
  loadStats();
  setInterval(loadStats, STATS_EVERY_MS);
  setInterval(() => {
    for (const [id, tr] of rows) {
      const s = sessions.get(id);
      if (s && !s.connected && s.persistent && s.expires_at_ms != null) updateCountdown(tr, s);
    }
  }, 1000);
}

start();
