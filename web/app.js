// The operator dashboard: sessions live from the event stream /api/v1/events, totals from
// /api/v1/stats every 2 s, the retained messages, and a session's detail with kick / discard.
// Each event carries its session's summary as it is after the change, in the engine's order,
// so the latest event for a session is its truth: the table is the list read once (and again
// on `resync`) with the events applied on top, and only the selected session is ever re-read.
// The charts (their history, kept in this page) are trends.js's, drawn by charts.js.
// No framework, nothing fetched from anywhere but this origin. All data goes into the DOM
// through textContent (never innerHTML). Every API call, the event stream included, goes
// through api.js, which adds the admin token when the bridge wants one. The playground is playground.js; the two talk through
// two document events: `dashboard:sessions` (the session map after each change, from here) and
// `dashboard:select` (open a session's detail, from there).
// Cluster mode (the list names the bridge that answered, `node`): the list is the whole
// cluster's, each session with the node that holds it (a Node column appears); the events are
// this bridge's sessions only, so the list is read again every CLUSTER_REFRESH_MS for the
// others'. Another node's session shows what its record says; its messages, Kick and Discard
// are on that node's dashboard.

import { apiFetch, errorText, getJson, streamEvents } from "./api.js";
import { forgetSession, mountCharts, recordQueue, recordStats, showSessionQueue } from "./trends.js";
import { startTopicTree } from "./topics.js";

const STATS_EVERY_MS = 2000;
const PAGE = 1000;
/** Cluster mode: how often the list is read again for the sessions of the other nodes. */
const CLUSTER_REFRESH_MS = 5000;

const $ = (id) => document.getElementById(id);

/** client id -> summary (the shape of GET /sessions items), from the list or a later event. */
const sessions = new Map();
/** client id -> its <tr>. */
const rows = new Map();
/** While the list loads: the events that came since its request (they may be newer than the
 * list, which comes on another connection, so they are applied again on top of it), and
 * whether it must be read again (a resync or a reconnect came meanwhile). Null otherwise. */
let loading = null;
let selected = null;
/** In cluster mode, the name of the node (bridge) this page talks to; null on a single bridge. */
let clusterNode = null;

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

const enc = encodeURIComponent;
const fmtInt = (n) => (n == null ? "–" : Number(n).toLocaleString("en"));
const fmtRate = (n) => (n == null ? "–" : n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString("en"));
const fmtTime = (ms) => (ms == null ? "–" : new Date(ms).toLocaleString());
// null: a clean session another node holds (its record keeps no version).
const protoName = (v) => (v === 5 ? "MQTT 5.0" : v === 4 ? "MQTT 3.1.1" : v == null ? "–" : `v${v}`);
/** Whether a session (summary or detail) is held by another node of the cluster. */
const elsewhere = (s) => clusterNode != null && s.node != null && s.node !== clusterNode;

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
      el("td", { class: "c-node" }),
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
  const node = cell("c-node");
  node.textContent = s.node ?? "–";
  node.classList.toggle("here", s.node != null && s.node === clusterNode);
  node.title = s.node == null ? "" : s.node === clusterNode ? "This bridge" : `Held by bridge ${s.node}`;
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
  $("sessions-table").classList.toggle("cluster", clusterNode != null);
  $("sessions-empty").hidden = sessions.size > 0;
  $("session-count").textContent =
    shown.length === sessions.size ? `(${sessions.size})` : `(${shown.length} of ${sessions.size})`;
  // The playground (playground.js) mirrors its device's row from here.
  document.dispatchEvent(new CustomEvent("dashboard:sessions", { detail: sessions }));
}

/** Applies one event to the session map: the session it carries, or none once `ended`. */
function apply({ type, data }) {
  if (type === "ended") sessions.delete(data.client_id);
  else sessions.set(data.client_id, data.session);
}

/** Reads the whole session list, then applies again the events that came while it loaded. */
async function loadAll() {
  if (loading) {
    loading.again = true;
    return;
  }
  loading = { events: [], again: false };
  try {
    let all;
    do {
      // What came before this request is older than its answer.
      loading.events = [];
      loading.again = false;
      all = await readList();
    } while (loading.again);
    sessions.clear();
    for (const s of all) sessions.set(s.client_id, s);
    for (const ev of loading.events) apply(ev);
    layoutTable();
  } finally {
    loading = null;
  }
  if (selected) refreshDetail();
}

async function readList() {
  const all = [];
  for (let offset = 0; ; offset += PAGE) {
    const page = await getJson(`/sessions?offset=${offset}&limit=${PAGE}`);
    clusterNode = page.node ?? null;
    all.push(...page.sessions);
    if (all.length >= page.total || page.sessions.length === 0) return all;
  }
}

// ---------------------------------------------------------------------------------------
// Live events

const CHANGES = new Set(["created", "connected", "disconnected", "ended", "subscribed", "unsubscribed", "queue"]);

function setLive(state, text) {
  $("live").dataset.state = state;
  $("live-text").textContent = text;
}

function connectEvents() {
  streamEvents({
    open() {
      setLive("live", "Live");
      loadAll().catch((e) => toast(`Could not load the sessions: ${e.message}`));
    },
    down() {
      setLive("down", "Reconnecting…");
    },
    event(type, raw) {
      if (type === "resync") loadAll().catch((e) => toast(`Could not reload the sessions: ${e.message}`));
      else if (CHANGES.has(type)) onChange(type, raw);
    },
  });
}

function onChange(type, raw) {
  let data;
  try {
    data = JSON.parse(raw);
  } catch {
    return;
  }
  const id = data.client_id;
  if (typeof id !== "string" || (type !== "ended" && data.session?.client_id !== id)) return;
  const change = { type, data };
  loading?.events.push(change);
  apply(change);
  if (type === "ended") forgetSession(id);
  else recordQueue(id, data.session.queued);
  layoutTable();
  scheduleStats();
  if (id === selected) {
    if (type === "ended") showDetail(null);
    refreshDetailSoon();
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
  showSessionQueue(id);
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
  showSessionQueue(null);
  const btn = id && rows.get(id)?.querySelector("button");
  if (btn) btn.focus();
}

/** How long the selected session's events gather before its detail is read again. */
const DETAIL_SETTLE_MS = 150;
let detailTimer = null;
/** A detail read in progress, and whether another is due after it (for a newer event or
 * another selection: what it answers may be older than they are). */
let detailBusy = false;
let detailAgain = false;

function refreshDetailSoon() {
  if (detailTimer) return;
  detailTimer = setTimeout(() => {
    detailTimer = null;
    refreshDetail();
  }, DETAIL_SETTLE_MS);
}

/** Reads the selected session's detail and messages; one read at a time. */
async function refreshDetail() {
  if (detailBusy) {
    detailAgain = true;
    return;
  }
  detailBusy = true;
  do {
    detailAgain = false;
    const id = selected;
    if (!id) break;
    try {
      const d = await getJson(`/sessions/${enc(id)}`);
      if (selected !== id) continue;
      showDetail(d);
      if (d) await loadDetailMessages(d);
    } catch (e) {
      toast(`Could not load ${id}: ${e.message}`);
    }
  } while (detailAgain);
  detailBusy = false;
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
  recordQueue(selected, d.queue.length);
  const away = elsewhere(d);
  $("btn-kick").disabled = !d.connected || away;
  $("btn-kick").title = away
    ? `Held by bridge ${d.node}: kick it from that bridge`
    : d.connected
      ? "Close the connection, keep the session"
      : "The client is not connected";
  $("btn-discard").disabled = away;
  $("btn-discard").title = away ? `Held by bridge ${d.node}: discard it from that bridge` : "";
  const facts = [
    ...(d.node == null ? [] : [["Node", d.node === clusterNode ? `${d.node} (this bridge)` : d.node]]),
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

/** GET path's messages; for a session this bridge does not hold (409), `{ away: why }`. */
async function readMessages(path) {
  const r = await apiFetch(path, { headers: { accept: "application/json" } });
  if (r.status === 404) return null;
  if (r.status === 409) return { away: await errorText(r) };
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${await errorText(r)}`);
  return r.json();
}

/** Says, in place of the message tables, why they are not shown here. */
function showMessagesAway(text) {
  $("detail-queue").replaceChildren(emptyRow(6, text));
  $("detail-inflight").replaceChildren(emptyRow(6, text));
  $("detail-queue-count").textContent = "";
  $("detail-inflight-count").textContent = "";
}

async function loadDetailMessages(d) {
  const id = selected;
  if (!id) return;
  if (elsewhere(d)) {
    // Only the holder has them: not asked for, the answer is known.
    showMessagesAway(`Held by bridge ${d.node}: its messages are shown on that bridge's dashboard.`);
    return;
  }
  const [q, inf] = await Promise.all([
    readMessages(`/sessions/${enc(id)}/queue?limit=100`),
    readMessages(`/sessions/${enc(id)}/inflight?limit=100`),
  ]);
  if (selected !== id || !q || !inf) return;
  if (q.away || inf.away) {
    showMessagesAway(q.away || inf.away);
    return;
  }
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
  const r = await apiFetch(`/sessions/${enc(id)}/kick`, { method: "POST" });
  // The row and the detail follow from the `disconnected` event.
  if (r.status !== 204) toast(`Kick ${id} failed: HTTP ${r.status} ${await errorText(r)}`);
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
  const r = await apiFetch(`/sessions/${enc(id)}`, { method: "DELETE" });
  if (r.status !== 204 && r.status !== 404) {
    toast(`Discard ${id} failed: HTTP ${r.status} ${await errorText(r)}`);
    return;
  }
  // The row goes with the `ended` event.
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

/** A stats read in progress (one at a time: they wait while the sign-in dialog is open). */
let statsBusy = false;

async function loadStats() {
  if (statsBusy) return;
  statsBusy = true;
  try {
    const s = await getJson("/stats");
    recordStats(s);
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
  } finally {
    statsBusy = false;
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
  mountCharts($("charts"), $("detail-chart"));
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
  startTopicTree();
  loadStats();
  setInterval(loadStats, STATS_EVERY_MS);
  // Cluster mode: the other nodes' sessions change without an event here. One read at a
  // time, none while the page is hidden or the stream is down (it reloads on reconnect).
  setInterval(() => {
    if (clusterNode == null || loading || document.hidden || $("live").dataset.state !== "live") return;
    loadAll().catch((e) => console.warn("sessions", e));
  }, CLUSTER_REFRESH_MS);
  setInterval(() => {
    for (const [id, tr] of rows) {
      const s = sessions.get(id);
      if (s && !s.connected && s.persistent && s.expires_at_ms != null) updateCountdown(tr, s);
    }
  }, 1000);
}

start();
