// The live topic tree (what MQTT Explorer shows desktop users): the dashboard's own MQTT
// client, the WebAssembly client of /pkg/ (as in playground.js), subscribes to `#` and
// `$SYS/#` (`#` never matches `$` topics [MQTT-4.7.2-1]) and shows every topic as a
// collapsible tree with its last payload, QoS, retained flag, message count and rate; a click
// shows the topic's history; the form under it publishes to any topic.
//
// Off until the operator presses Watch: a tab subscribed to `#` receives every message the
// broker routes, and is one more subscriber of every topic (the playground's lesson about
// "no matching subscribers" needs none). The client is MQTT 5.0 with a clean session, so
// nothing stays on the broker after the tab; its id is `dashboard-tree-` and 6 random hex
// digits, easy to tell in the session list; it subscribes at QoS 2 with Retain As Published,
// so the QoS and retained flag shown are the publisher's (capped at the granted QoS). With
// `[auth]` on, the optional user name and password beside the button are sent in CONNECT.
//
// Thousands of topics stay responsive: a message only updates the data (topics-model.js,
// O(levels)); the drawing happens at most once per animation frame and only for the rows in
// view (the list is virtualized: a fixed row height, a spacer as tall as all rows, and a small
// pool of row elements moved over it); the data kept is capped (see topics-model.js).
// All data goes into the DOM through textContent (never innerHTML).

import { TopicTree, formatPayload } from "./topics-model.js";

const PKG = "./pkg/client_wasm.js";
const CONNECT_TIMEOUT_MS = 10_000;
/** Height of a row in px; the CSS (.tt-row) says the same. */
const ROW_H = 26;
/** Rows drawn above and below the visible ones, so a scroll shows no gap. */
const OVERSCAN = 8;
/** Rates decay while nothing arrives: the visible rows are redrawn this often. */
const TICK_MS = 1000;
/** Characters of payload in a row and in a history entry. */
const ROW_CHARS = 120;
const HISTORY_CHARS = 400;

const $ = (id) => document.getElementById(id);
const fmtInt = (n) => Number(n).toLocaleString("en");
const fmtRate = (r) => (r < 0.005 ? "0" : r < 10 ? r.toFixed(2) : Math.round(r).toLocaleString("en"));
const errText = (e) => (e && e.message ? e.message : String(e));
const clock = (ms) => new Date(ms).toLocaleTimeString();

let mqtt = null;
let tree = new TopicTree();
const state = {
  client: null,
  busy: false,
  ending: false,
  /** The rows in order (TopicTree.flatten), made again when the structure or filter changes. */
  flat: [],
  layoutDirty: true,
  filter: "",
  selected: null,
  /** The row the keyboard is on. */
  active: null,
  framePending: false,
  tick: 0,
  /** The selected node's version last drawn in the detail. */
  detailVer: -1,
  /** Pool of row elements: each remembers what it shows. */
  pool: [],
};

// ---------------------------------------------------------------------------------------
// Connection

function setStatus(kind, text) {
  const s = $("tt-status");
  s.dataset.state = kind;
  s.textContent = text;
}

function renderControls() {
  const on = state.client !== null;
  $("tt-watch").disabled = !mqtt || on || state.busy;
  $("tt-stop").disabled = !on || state.busy;
  $("tt-user").disabled = on || state.busy;
  $("tt-pass").disabled = on || state.busy;
  $("tt-pub-send").disabled = !on;
  $("tt-pub-send").title = on ? "" : "Watch first: the tree's connection publishes";
}

function clientId() {
  const b = crypto.getRandomValues(new Uint8Array(3));
  return `dashboard-tree-${[...b].map((x) => x.toString(16).padStart(2, "0")).join("")}`;
}

async function subscribeAll(client) {
  const codes = await client.subscribe(["#", "$SYS/#"], { qos: 2, rap: true });
  const refused = ["#", "$SYS/#"].filter((_, i) => !(codes[i] <= 2));
  return refused.length ? `; not allowed to read ${refused.join(" and ")} (reason 0x${codes.find((c) => c > 2).toString(16)})` : "";
}

async function watch() {
  if (state.client || state.busy) return;
  state.busy = true;
  renderControls();
  setStatus("busy", "Connecting…");
  const user = $("tt-user").value;
  const pass = $("tt-pass").value;
  const id = clientId();
  let client;
  try {
    client = await mqtt.connect(`${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/mqtt`, {
      clientId: id,
      protocolVersion: 5,
      clean: true,
      keepalive: 30,
      connectTimeout: CONNECT_TIMEOUT_MS,
      username: user || undefined,
      password: pass || undefined,
    });
  } catch (e) {
    state.busy = false;
    setStatus("error", `Could not connect: ${errText(e)}`);
    renderControls();
    return;
  }
  state.client = client;
  client.on("message", onMessage);
  // A clean session loses its subscriptions with the connection: subscribe after each reconnect.
  client.on("connect", () => {
    if (state.client !== client) return;
    subscribeAll(client)
      .then((note) => setStatus("on", `Watching as ${id}${note}.`))
      .catch((e) => setStatus("error", `Subscribing failed: ${errText(e)}`));
  });
  client.on("error", (e) => state.client === client && !state.ending && setStatus("error", `Connection: ${errText(e)}; retrying…`));
  client.on("offline", () => state.client === client && !state.ending && setStatus("busy", "Connection lost; reconnecting…"));
  try {
    const note = await subscribeAll(client);
    setStatus(note ? "error" : "on", `Watching as ${id}${note}.`);
  } catch (e) {
    setStatus("error", `Connected, but subscribing failed: ${errText(e)}`);
  }
  state.busy = false;
  renderControls();
}

async function stop() {
  const client = state.client;
  if (!client) return;
  state.busy = true;
  state.ending = true;
  renderControls();
  try {
    await client.end();
  } catch (e) {
    console.warn("topic tree end", e);
  }
  state.client = null;
  state.ending = false;
  state.busy = false;
  setStatus("off", "Stopped. The tree keeps what it saw; Watch again to go on.");
  renderControls();
}

function onMessage(topic, payload, packet) {
  tree.add(topic, payload, packet.qos, packet.retain);
  schedule();
}

// ---------------------------------------------------------------------------------------
// Drawing, once per frame

function schedule() {
  if (state.framePending) return;
  state.framePending = true;
  requestAnimationFrame(frame);
}

function frame() {
  state.framePending = false;
  const box = $("tt-tree");
  if (tree.structureChanged || state.layoutDirty) {
    tree.structureChanged = false;
    state.layoutDirty = false;
    state.flat = tree.flatten(state.filter);
    $("tt-spacer").style.height = `${state.flat.length * ROW_H}px`;
    box.setAttribute("aria-rowcount", String(state.flat.length));
  }
  drawRows(box);
  if (state.selected && state.selected.ver !== state.detailVer) drawDetail();
  const full = tree.refused ? ` · tree full: ${fmtInt(tree.refused)} messages to new topics not shown` : "";
  $("tt-count").textContent = `(${fmtInt(tree.topicCount)} topics, ${fmtInt(tree.messages)} messages${full})`;
  $("tt-empty").hidden = state.flat.length > 0;
  $("tt-empty").textContent = state.filter ? "No topic contains this text." : "No messages yet.";
}

function drawRows(box) {
  const first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - OVERSCAN);
  const want = Math.ceil(box.clientHeight / ROW_H) + 2 * OVERSCAN;
  const last = Math.min(state.flat.length, first + want);
  while (state.pool.length < want) state.pool.push(makeRow(state.pool.length));
  const now = Date.now();
  for (let i = 0; i < state.pool.length; i++) {
    const row = state.pool[i];
    const idx = first + i;
    const node = idx < last ? state.flat[idx] : null;
    if (!node) {
      if (!row.el.hidden) row.el.hidden = true;
      row.node = null;
      continue;
    }
    row.el.hidden = false;
    const sel = node === state.selected;
    const act = node === state.active;
    if (row.node === node && row.ver === node.ver && row.idx === idx && row.tick === state.tick && row.sel === sel && row.act === act) continue;
    fillRow(row, node, idx, now, sel, act);
  }
  const activeRow = state.pool.find((r) => r.node !== null && r.node === state.active);
  const id = activeRow ? activeRow.el.id : "";
  if (box.getAttribute("aria-activedescendant") !== id) box.setAttribute("aria-activedescendant", id);
}

function makeRow(i) {
  const el = document.createElement("div");
  el.className = "tt-row";
  el.id = `tt-row-${i}`;
  el.setAttribute("role", "treeitem");
  const cell = (cls) => {
    const s = document.createElement("span");
    s.className = cls;
    el.append(s);
    return s;
  };
  const name = cell("tt-name");
  const twisty = document.createElement("span");
  twisty.className = "tt-twisty";
  const label = document.createElement("span");
  label.className = "tt-label";
  name.append(twisty, label);
  const row = {
    el,
    twisty,
    name,
    label,
    payload: cell("tt-payload"),
    qos: cell("tt-qos"),
    retain: cell("tt-retain"),
    count: cell("tt-msgs"),
    rate: cell("tt-rate"),
    node: null,
  };
  row.twisty.setAttribute("aria-hidden", "true");
  $("tt-tree").append(el);
  return row;
}

function fillRow(row, node, idx, now, sel, act) {
  row.node = node;
  row.ver = node.ver;
  row.idx = idx;
  row.tick = state.tick;
  row.sel = sel;
  row.act = act;
  const el = row.el;
  el.style.transform = `translateY(${idx * ROW_H}px)`;
  el.dataset.index = String(idx);
  el.classList.toggle("selected", sel);
  el.classList.toggle("active", act);
  el.setAttribute("aria-level", String(node.depth + 1));
  el.setAttribute("aria-selected", sel ? "true" : "false");
  const branch = node.children !== null;
  const open = branch && (node.expanded || state.filter !== "");
  if (branch) el.setAttribute("aria-expanded", open ? "true" : "false");
  else el.removeAttribute("aria-expanded");
  row.twisty.textContent = branch ? (open ? "▾" : "▸") : "";
  row.name.style.paddingLeft = `${Math.min(node.depth, 24) * 1.1}rem`;
  row.label.textContent = node.name === "" ? "∅" : node.name;
  row.name.title = node.path();
  row.label.classList.toggle("tt-blank", node.name === "");
  const t = node.topic;
  if (t) {
    const f = payloadOf(t.last, true);
    row.payload.textContent = f.text;
    row.payload.dataset.kind = f.kind;
    row.qos.textContent = String(t.last.qos);
    row.retain.textContent = t.last.retain ? "R" : "";
    row.count.textContent = fmtInt(t.count);
    row.rate.textContent = fmtRate(TopicTree.rate(t, now));
  } else {
    row.payload.textContent = "";
    row.qos.textContent = "";
    row.retain.textContent = "";
    row.count.textContent = "";
    row.rate.textContent = "";
  }
  if (branch && !open) {
    // A closed branch tells what it holds.
    row.payload.textContent = `${fmtInt(node.topics - (t ? 1 : 0))} topics, ${fmtInt(node.messages - (t ? t.count : 0))} msgs below${t ? ` · ${row.payload.textContent}` : ""}`;
    row.payload.dataset.kind = "branch";
  }
  el.setAttribute("aria-label", `${node.name || "(empty level)"}${t ? `: ${row.payload.textContent}` : ""}`);
}

/** An entry's payload as text (of what was kept of it). */
function payloadOf(e, oneLine, chars = ROW_CHARS) {
  return formatPayload(e.bytes, oneLine, chars);
}

// ---------------------------------------------------------------------------------------
// Detail: the selected topic and its history

function select(node) {
  state.selected = node;
  state.active = node;
  drawDetail();
  if (node.topic) $("tt-pub-topic").value = node.topic.name;
  else $("tt-pub-topic").value = `${node.path()}/`;
  // The rows' highlight follows in the next frame.
  schedule();
}

/** The selected node's numbers (the rate decays: drawn again every tick). */
function drawFacts(node) {
  const t = node.topic;
  const facts = t
    ? [
        ["Messages", fmtInt(t.count)],
        ["Rate", `${fmtRate(TopicTree.rate(t))} / s`],
        ["QoS", String(t.last.qos)],
        ["Retained", t.last.retain ? "yes" : "no"],
        ["Size", `${fmtInt(t.last.size)} B`],
        ["Last at", clock(t.last.at)],
      ]
    : [
        ["Topics below", fmtInt(node.topics)],
        ["Messages below", fmtInt(node.messages)],
      ];
  $("tt-facts").replaceChildren(
    ...facts.map(([k, v]) => {
      const d = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = v;
      d.append(dt, dd);
      return d;
    }),
  );
}

function drawDetail() {
  const node = state.selected;
  if (!node) return;
  state.detailVer = node.ver;
  const t = node.topic;
  $("tt-detail-placeholder").hidden = true;
  $("tt-detail-body").hidden = false;
  $("tt-detail-topic").textContent = node.path() || "∅";
  drawFacts(node);
  const last = $("tt-last");
  const hist = $("tt-history");
  if (!t) {
    last.hidden = true;
    $("tt-last-note").textContent = "No message to this exact topic: it is a level of longer topics.";
    hist.replaceChildren();
    $("tt-history-count").textContent = "";
    return;
  }
  last.hidden = false;
  const f = payloadOf(t.last, false);
  last.textContent = f.text;
  last.dataset.kind = f.kind;
  $("tt-last-note").textContent = `${kindName(f.kind)}${cutNote(t.last)}`;
  const items = [];
  for (let i = t.history.length - 1; i >= 0; i--) {
    const e = t.history[i];
    const li = document.createElement("li");
    const meta = document.createElement("span");
    meta.className = "tt-hmeta";
    meta.textContent = `${clock(e.at)} · QoS ${e.qos}${e.retain ? " · retained" : ""} · ${fmtInt(e.size)} B`;
    const code = document.createElement("code");
    const hf = payloadOf(e, true, HISTORY_CHARS);
    code.textContent = hf.text;
    code.dataset.kind = hf.kind;
    li.append(meta, code);
    items.push(li);
  }
  hist.replaceChildren(...items);
  $("tt-history-count").textContent =
    t.count > t.history.length ? `(last ${t.history.length} of ${fmtInt(t.count)})` : `(${t.history.length})`;
}

function kindName(kind) {
  return { json: "JSON, indented", text: "text", hex: "not UTF-8 text: hex", empty: "empty payload" }[kind] ?? kind;
}

function cutNote(e) {
  return e.bytes.length < e.size ? ` · first ${fmtInt(e.bytes.length)} of ${fmtInt(e.size)} bytes kept` : "";
}

// ---------------------------------------------------------------------------------------
// Interaction

function toggle(node) {
  if (!node.children || state.filter) return;
  node.expanded = !node.expanded;
  node.ver++;
  state.layoutDirty = true;
  schedule();
}

function setAll(expanded) {
  const stack = [tree.root];
  while (stack.length) {
    const n = stack.pop();
    if (!n.children) continue;
    if (n !== tree.root && n.expanded !== expanded) {
      n.expanded = expanded;
      n.ver++;
    }
    for (const c of n.children.values()) stack.push(c);
  }
  state.layoutDirty = true;
  schedule();
}

function onTreeClick(e) {
  const rowEl = e.target.closest(".tt-row");
  if (!rowEl) return;
  const node = state.flat[Number(rowEl.dataset.index)];
  if (!node) return;
  if (e.target.classList.contains("tt-twisty") || !node.topic) toggle(node);
  if (!e.target.classList.contains("tt-twisty") || !node.children) select(node);
  $("tt-tree").focus({ preventScroll: true });
}

function onTreeKey(e) {
  const flat = state.flat;
  if (!flat.length) return;
  let idx = state.active ? flat.indexOf(state.active) : -1;
  const node = idx >= 0 ? flat[idx] : null;
  switch (e.key) {
    case "ArrowDown":
      idx = Math.min(flat.length - 1, idx + 1);
      break;
    case "ArrowUp":
      idx = Math.max(0, idx - 1);
      break;
    case "Home":
      idx = 0;
      break;
    case "End":
      idx = flat.length - 1;
      break;
    case "ArrowRight":
      if (node?.children && !node.expanded && !state.filter) toggle(node);
      else if (node?.children) idx += 1;
      break;
    case "ArrowLeft":
      if (node?.children && node.expanded && !state.filter) toggle(node);
      else if (node?.parent && node.parent !== tree.root) idx = flat.indexOf(node.parent);
      break;
    case "Enter":
    case " ":
      if (node) select(node);
      break;
    default:
      return;
  }
  e.preventDefault();
  idx = Math.max(0, Math.min(flat.length - 1, idx));
  state.active = flat[idx];
  scrollIntoView(idx);
  // The next frame draws the active row and points aria-activedescendant at it.
  schedule();
}

function scrollIntoView(idx) {
  const box = $("tt-tree");
  const top = idx * ROW_H;
  if (top < box.scrollTop) box.scrollTop = top;
  else if (top + ROW_H > box.scrollTop + box.clientHeight) box.scrollTop = top + ROW_H - box.clientHeight;
}

async function publish() {
  const client = state.client;
  const topic = $("tt-pub-topic").value;
  if (!client) return;
  if (!topic || /[+#]/.test(topic)) {
    setPubStatus("error", "A topic name is needed, without the wildcards + and #.");
    return;
  }
  const qos = Number($("tt-pub-qos").value);
  const retain = $("tt-pub-retain").checked;
  setPubStatus("busy", `Publishing to ${topic}…`);
  try {
    const code = await client.publish(topic, $("tt-pub-payload").value, { qos, retain });
    const ack = qos === 0 ? "sent (QoS 0: no acknowledgement)" : `acknowledged, reason 0x${code.toString(16).padStart(2, "0")}`;
    setPubStatus(code < 0x80 ? "on" : "error", `Published to ${topic} at QoS ${qos}${retain ? ", retained" : ""}: ${ack}.`);
  } catch (e) {
    setPubStatus("error", `Publish to ${topic} failed: ${errText(e)}`);
  }
}

function setPubStatus(kind, text) {
  const s = $("tt-pub-status");
  s.dataset.state = kind;
  s.textContent = text;
}

// ---------------------------------------------------------------------------------------
// Start

/** Wires the section; loads the client package. Never throws (the rest of the page goes on). */
export function startTopicTree() {
  if (!$("tt-tree")) return;
  try {
    $("tt-connect").addEventListener("submit", (e) => {
      e.preventDefault();
      watch().catch((err) => setStatus("error", errText(err)));
    });
    $("tt-stop").addEventListener("click", () => stop().catch((err) => setStatus("error", errText(err))));
    $("tt-tree").addEventListener("click", onTreeClick);
    $("tt-tree").addEventListener("keydown", onTreeKey);
    $("tt-tree").addEventListener("scroll", schedule, { passive: true });
    $("tt-filter").addEventListener("input", () => {
      state.filter = $("tt-filter").value;
      state.layoutDirty = true;
      $("tt-tree").scrollTop = 0;
      schedule();
    });
    $("tt-filters").addEventListener("submit", (e) => e.preventDefault());
    $("tt-expand").addEventListener("click", () => setAll(true));
    $("tt-collapse").addEventListener("click", () => setAll(false));
    $("tt-clear").addEventListener("click", () => {
      tree = new TopicTree();
      state.selected = null;
      state.active = null;
      state.layoutDirty = true;
      $("tt-detail-placeholder").hidden = false;
      $("tt-detail-body").hidden = true;
      schedule();
    });
    $("tt-publish").addEventListener("submit", (e) => {
      e.preventDefault();
      publish();
    });
    new ResizeObserver(schedule).observe($("tt-tree"));
    setInterval(() => {
      state.tick++;
      if (state.selected) drawFacts(state.selected);
      schedule();
    }, TICK_MS);
    renderControls();
    schedule();
  } catch (e) {
    console.error("topic tree", e);
    return;
  }
  import(PKG)
    .then(async (pkg) => {
      await pkg.default();
      mqtt = pkg;
      $("topics").dataset.ready = "yes";
      setStatus("off", "Not watching. Watch subscribes this tab to # and $SYS/#.");
      renderControls();
    })
    .catch((e) => {
      const note = $("tt-unavailable");
      note.textContent = `The topic tree is unavailable: the browser client package could not be loaded from /pkg/ (${errText(e)}).`;
      note.hidden = false;
      $("topics").dataset.ready = "no";
    });
}
