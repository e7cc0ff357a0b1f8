// The playground: two MQTT clients in this page, a "device" and a "sender", built on the
// WebAssembly client the bridge serves at /pkg/ (client-wasm/pkg). A visitor connects the
// device, sends it away, publishes, and brings it back, and sees in the session view (app.js)
// what the clean session flag decides:
//
// - clean session off: the broker keeps the session while the device is away and stores the
//   QoS 1 messages for it (MQTT 3.1.1 [MQTT-3.1.2-4], [MQTT-3.1.2-5]; 5.0 Clean Start 0 with
//   a Session Expiry Interval); they arrive on reconnect, with session present = 1.
// - clean session on: the session lasts as long as the connection ([MQTT-3.1.2-6]; 5.0
//   Clean Start 1 with Session Expiry Interval 0); what is published meanwhile is gone.
//
// Why MQTT 5.0 for both: a 3.1.1 clean-session-0 session never ends, so every visitor who
// leaves the page would leave a session (and its queue, in the store) behind for good. With
// 5.0 the device asks for a Session Expiry Interval of DEVICE_EXPIRY_S, the broker ends the
// session that long after the device leaves, and the session view shows the countdown.
// Clean Start 1 with expiry 0 is exactly 3.1.1's clean session 1 (MQTT 5.0 §3.1.2.11.2).
//
// The package is imported dynamically inside try/catch: when it is not built (or fails to
// load), the playground says so and the rest of the dashboard is unaffected.
// All data goes into the DOM through textContent (never innerHTML).

const PKG = "./pkg/client_wasm.js";
/** Seconds the broker keeps the device's session after it leaves, with clean session off. */
const DEVICE_EXPIRY_S = 300;
const CONNECT_TIMEOUT_MS = 10_000;
/** Both lists are bounded: a visitor may keep publishing. */
const MAX_LIST = 200;

const $ = (id) => document.getElementById(id);

/** The reason codes a QoS 1 PUBACK can carry here, in words. */
const PUBACK_REASONS = {
  0x00: "stored or delivered (0x00)",
  0x10: "no matching subscribers (0x10): nobody gets it",
};

/** Per tab, so a reload keeps the same device and can find its session again. */
function playgroundSuffix() {
  const key = "mqtt-bridge-playground-id";
  let id = null;
  try {
    id = sessionStorage.getItem(key);
  } catch {
    // Storage can be disabled; a fresh id per load is fine then.
  }
  if (!id || !/^[0-9a-f]{6}$/.test(id)) {
    const bytes = crypto.getRandomValues(new Uint8Array(3));
    id = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    try {
      sessionStorage.setItem(key, id);
    } catch {}
  }
  return id;
}

const suffix = playgroundSuffix();
const ids = {
  device: `pg-device-${suffix}`,
  sender: `pg-sender-${suffix}`,
  topic: `playground/${suffix}/inbox`,
};
const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/mqtt`;

let mqtt = null; // the package, once loaded
const device = { client: null, busy: false, ending: false };
const sender = { client: null, busy: false, ending: false };

function li(cls, ...parts) {
  const item = document.createElement("li");
  item.className = cls;
  for (const p of parts) item.append(p);
  return item;
}

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

const clock = () => new Date().toLocaleTimeString();
const errText = (e) => (e && e.message ? e.message : String(e));

/** Appends to a bounded list, newest last, keeping its count and empty note right. */
function append(listId, item) {
  const list = $(listId);
  list.append(item);
  while (list.children.length > MAX_LIST) list.firstElementChild.remove();
  updateList(listId);
  keepNewestInSight(listId);
}

/** Scrolls a list to its newest item, inside the list only: the page does not move under the
 * visitor. Called again when an item grows (a PUBACK's answer). */
function keepNewestInSight(listId) {
  const list = $(listId);
  list.scrollTop = list.scrollHeight;
}

function updateList(listId) {
  const list = $(listId);
  const n = list.querySelectorAll("li.msg").length;
  const name = listId === "pg-received" ? "received" : "sent";
  $(`pg-${name}-count`).textContent = `(${n})`;
  $(`pg-${name}-empty`).hidden = list.children.length > 0;
  if (listId === "pg-received") $("pg-received-clear").disabled = list.children.length === 0;
}

function setStatus(which, state, text) {
  const s = $(`pg-${which}-status`);
  s.dataset.state = state;
  s.textContent = text;
}

/** Enables what makes sense in the current state. */
function render() {
  const ready = mqtt !== null;
  const dOn = device.client !== null;
  const sOn = sender.client !== null;
  $("pg-clean").disabled = !ready || dOn || device.busy;
  $("pg-device-connect").disabled = !ready || dOn || device.busy;
  $("pg-device-disconnect").disabled = !ready || !dOn || device.busy;
  $("pg-device-show").disabled = !ready;
  $("pg-sender-connect").disabled = !ready || sOn || sender.busy;
  $("pg-sender-disconnect").disabled = !ready || !sOn || sender.busy;
  $("pg-message").disabled = !ready;
  $("pg-publish").disabled = !ready || !sOn;
  $("pg-publish").title = sOn ? "" : "Connect the sender first";
  const clean = $("pg-clean").checked;
  $("pg-clean-hint").textContent = clean
    ? "On: Clean Start 1, Session Expiry 0 s: the session ends with the connection."
    : `Off: Clean Start 0, Session Expiry ${DEVICE_EXPIRY_S} s: the broker keeps the session.`;
}

/** The device's row of the session view (app.js), repeated in the device's card. */
function showBrokerView(sessions) {
  const s = sessions.get(ids.device);
  const p = $("pg-broker");
  let text;
  if (!s) {
    p.dataset.state = "none";
    text = "no session";
  } else {
    p.dataset.state = s.connected ? "online" : "offline";
    text =
      `session ${s.connected ? "online" : "offline"}, ${s.persistent ? "persistent" : "clean"}, ` +
      `${s.subscriptions} subscription${s.subscriptions === 1 ? "" : "s"}, ${s.queued} queued, ${s.inflight} in flight`;
  }
  $("pg-broker-text").textContent = text;
}

// ---------------------------------------------------------------------------------------
// Device

async function connectDevice() {
  const clean = $("pg-clean").checked;
  device.busy = true;
  render();
  setStatus("device", "busy", "Connecting…");
  let client;
  try {
    client = await mqtt.connect(wsUrl, {
      clientId: ids.device,
      protocolVersion: 5,
      clean,
      sessionExpiryInterval: clean ? 0 : DEVICE_EXPIRY_S,
      keepalive: 30,
      // The visitor decides when the device comes back: no automatic reconnection.
      reconnect: false,
      connectTimeout: CONNECT_TIMEOUT_MS,
    });
  } catch (e) {
    device.busy = false;
    setStatus("device", "error", `Could not connect: ${errText(e)}`);
    render();
    return;
  }
  // The separator first: the queued messages that follow belong under it. The message
  // listener goes on at once after it: messages the broker sent right after CONNACK (the queue
  // of a kept session) are held by the client until the first listener, then given to it.
  const present = client.session().sessionPresent;
  append(
    "pg-received",
    li(
      "sep",
      `Connected at ${clock()}: clean ${clean ? "on" : "off"}, session present = ${present ? 1 : 0}` +
        (present ? " (the broker kept the session)" : ""),
    ),
  );
  client.on("message", (topic, payload, packet) => {
    const text = new TextDecoder().decode(payload);
    append(
      "pg-received",
      li("msg", span("pg-payload", text), span("pg-meta", ` ${topic} · QoS ${packet.qos}${packet.dup ? " · DUP" : ""} · ${clock()}`)),
    );
  });
  client.on("close", () => {
    if (device.client !== client) return;
    device.client = null;
    if (!device.ending) setStatus("device", "error", "The connection was closed by the broker (kicked or discarded?).");
    render();
  });
  device.client = client;
  let what;
  if (present) {
    // The subscription is part of the kept session: subscribing again is not needed.
    what = `Session present = 1: the broker kept the session and its subscription; queued messages follow.`;
  } else {
    try {
      const granted = await client.subscribe(ids.topic, { qos: 1 });
      if (!(granted[0] <= 2)) throw new Error(`subscription refused (reason 0x${granted[0].toString(16)})`);
      what = `Session present = 0: a new session. Subscribed to ${ids.topic} at QoS ${granted[0]}.`;
    } catch (e) {
      what = `Connected, but subscribing failed: ${errText(e)}`;
    }
  }
  device.busy = false;
  if (device.client === client) setStatus("device", "on", `Online. ${what}`);
  render();
}

/** Ends the client of `state` (the device or the sender); false if it had none. */
async function endClient(state, name) {
  const client = state.client;
  if (!client) return false;
  state.busy = true;
  state.ending = true;
  render();
  try {
    await client.end();
  } catch (e) {
    console.warn(`${name} end`, e);
  }
  state.client = null;
  state.ending = false;
  state.busy = false;
  return true;
}

async function disconnectDevice() {
  if (!device.client) return;
  setStatus("device", "busy", "Disconnecting…");
  await endClient(device, "device");
  const clean = $("pg-clean").checked;
  setStatus(
    "device",
    "off",
    clean
      ? "Away. Clean session on: its session ended with the connection; nothing is kept for it."
      : `Away. Clean session off: the broker keeps its session for ${DEVICE_EXPIRY_S} s and queues its messages.`,
  );
  append("pg-received", li("sep", `Disconnected at ${clock()}`));
  render();
}

// ---------------------------------------------------------------------------------------
// Sender

async function connectSender() {
  sender.busy = true;
  render();
  setStatus("sender", "busy", "Connecting…");
  try {
    const client = await mqtt.connect(wsUrl, {
      clientId: ids.sender,
      protocolVersion: 5,
      clean: true,
      keepalive: 30,
      reconnect: false,
      connectTimeout: CONNECT_TIMEOUT_MS,
    });
    client.on("close", () => {
      if (sender.client !== client) return;
      sender.client = null;
      if (!sender.ending) setStatus("sender", "error", "The connection was closed by the broker.");
      render();
    });
    sender.client = client;
    setStatus("sender", "on", "Online. Publish to the device's topic.");
  } catch (e) {
    setStatus("sender", "error", `Could not connect: ${errText(e)}`);
  }
  sender.busy = false;
  render();
}

async function disconnectSender() {
  if (!(await endClient(sender, "sender"))) return;
  setStatus("sender", "off", "Disconnected.");
  render();
}

async function publish() {
  const client = sender.client;
  const input = $("pg-message");
  const text = input.value.trim();
  if (!client || !text) return;
  // The next default: "message 3" is followed by "message 4"; anything else is kept.
  const m = /^message (\d+)$/.exec(text);
  if (m) input.value = `message ${Number(m[1]) + 1}`;
  const meta = span("pg-meta", ` → ${ids.topic} · QoS 1 · ${clock()} · waiting for PUBACK…`);
  const item = li("msg", span("pg-payload", text), meta);
  append("pg-sent", item);
  try {
    // Resolves with the PUBACK's reason code.
    const code = await client.publish(ids.topic, text, { qos: 1 });
    meta.textContent = ` → ${ids.topic} · QoS 1 · ${clock()} · PUBACK: ${PUBACK_REASONS[code] ?? `0x${code.toString(16)}`}`;
    item.dataset.reason = String(code);
    keepNewestInSight("pg-sent");
    setStatus("sender", "on", `Published "${text}": PUBACK ${PUBACK_REASONS[code] ?? `0x${code.toString(16)}`}.`);
  } catch (e) {
    meta.textContent = ` → ${ids.topic} · not acknowledged: ${errText(e)}`;
    item.dataset.reason = "error";
    keepNewestInSight("pg-sent");
    setStatus("sender", "error", `Publish failed: ${errText(e)}`);
  }
}

// ---------------------------------------------------------------------------------------
// Start

/** Runs an action from a button; an exception becomes the client's status, never a crash. */
function action(which, f) {
  return () =>
    f().catch((e) => {
      setStatus(which, "error", errText(e));
      render();
    });
}

async function start() {
  $("pg-device-id").textContent = ids.device;
  $("pg-sender-id").textContent = ids.sender;
  $("pg-topic").textContent = ids.topic;
  $("pg-clean").addEventListener("change", render);
  document.addEventListener("dashboard:sessions", (e) => showBrokerView(e.detail));
  $("pg-device-connect").addEventListener("click", action("device", connectDevice));
  $("pg-device-disconnect").addEventListener("click", action("device", disconnectDevice));
  $("pg-device-show").addEventListener("click", () =>
    // app.js opens the session's detail (subscriptions, queue, in flight).
    document.dispatchEvent(new CustomEvent("dashboard:select", { detail: { clientId: ids.device } })),
  );
  $("pg-received-clear").addEventListener("click", () => {
    $("pg-received").replaceChildren();
    updateList("pg-received");
  });
  $("pg-sender-connect").addEventListener("click", action("sender", connectSender));
  $("pg-sender-disconnect").addEventListener("click", action("sender", disconnectSender));
  $("pg-publish-form").addEventListener("submit", (e) => {
    e.preventDefault();
    action("sender", publish)();
  });
  render();
  try {
    const pkg = await import(PKG);
    await pkg.default();
    mqtt = pkg;
  } catch (e) {
    const note = $("pg-unavailable");
    note.textContent =
      "The playground is unavailable: the browser client package could not be loaded from " +
      "/pkg/ (is client-wasm/pkg built? Run client-wasm/build.sh, or start the bridge with " +
      `--pkg DIR). The rest of the dashboard works without it. (${errText(e)})`;
    note.hidden = false;
    $("pg-clients").classList.add("unavailable");
    $("playground").dataset.ready = "no";
    return;
  }
  $("playground").dataset.ready = "yes";
  render();
}

start();
