// The scenarios, written against the package's public API only. They run on the page and
// inside a dedicated Worker alike (no `window`, no `document`). Each throws an Error naming
// the check that failed, and returns lines for the log.
import { onTime } from "./throttle.js";

export const sleep = (ms) => new Promise((r) => onTime(r, ms));

export const within = (promise, ms, what) =>
  Promise.race([promise, sleep(ms).then(() => Promise.reject(new Error(`timeout: ${what}`)))]);

export const check = (cond, what) => {
  if (!cond) throw new Error(what);
};

const text = (bytes) => new TextDecoder().decode(bytes);

/** Collects the messages of `client`; `wait(n)` resolves once n have arrived. */
export function inbox(client) {
  const msgs = [];
  let wake = () => {};
  client.on("message", (topic, payload, packet) => {
    msgs.push({ topic, text: text(payload), qos: packet.qos });
    wake();
  });
  msgs.wait = async (n, ms, what) => {
    const deadline = Date.now() + ms;
    while (msgs.length < n) {
      if (Date.now() > deadline) throw new Error(`timeout: ${what} (got ${msgs.length} of ${n})`);
      await new Promise((r) => {
        wake = r;
        onTime(r, 50);
      });
    }
    return msgs;
  };
  return msgs;
}

/**
 * Waits until every message the broker had for `client` before this call has arrived: the
 * broker delivers to one client in order, so a message the client sends itself comes after
 * them. A barrier, where a sleep would only guess.
 */
async function barrier(client, msgs, topic) {
  await within(client.subscribe(topic, { qos: 1 }), 5000, `subscribe ${topic}`);
  await within(client.publish(topic, "barrier", { qos: 1 }), 5000, `publish ${topic}`);
  const deadline = Date.now() + 5000;
  while (!msgs.some((m) => m.topic === topic)) {
    if (Date.now() > deadline) throw new Error(`timeout: own message on ${topic}`);
    await sleep(20);
  }
  return msgs.filter((m) => m.topic !== topic);
}

/**
 * The seed scenario for one protocol version. A device subscribes at QoS 1 with
 * clean = false and leaves with end(); another client publishes 3 messages; the device comes
 * back with the same client id, is told session present and gets the 3, in order. Then the
 * same again with clean = true: no session, nothing delivered.
 */
export async function seed(connect, ws, v, tag) {
  const log = [];
  const id = `${tag}-device-v${v}`;
  const topic = `${tag}/seed/v${v}`;
  const expiry = v === 5 ? { sessionExpiryInterval: 300 } : {};
  const device = { clientId: id, protocolVersion: v, clean: false, keepalive: 30, ...expiry };

  const d1 = await within(connect(ws, device), 5000, `v${v}: device connect`);
  const granted = await within(d1.subscribe(`${topic}/#`, { qos: 1 }), 5000, `v${v}: device subscribe`);
  check(granted.join() === "1", `v${v}: subscription granted ${granted}, expected QoS 1`);
  await within(d1.end(), 5000, `v${v}: device end`);

  const publisher = await within(connect(ws, { clientId: `${tag}-pub-v${v}`, protocolVersion: v }), 5000, `v${v}: publisher connect`);
  for (let i = 0; i < 3; i++) {
    await within(publisher.publish(`${topic}/x`, `away ${i}`, { qos: 1 }), 5000, `v${v}: publish ${i} while away`);
  }

  const d2 = await within(connect(ws, device), 5000, `v${v}: device reconnect`);
  const back = inbox(d2);
  check(d2.session().sessionPresent === true, `v${v}: clean=false: CONNACK session present = 1 expected [MQTT-3.2.2-2]`);
  const away = await back.wait(3, 5000, `v${v}: clean=false: the 3 messages published while away [MQTT-3.1.2-5]`);
  const texts = away.map((m) => m.text).join();
  check(texts === "away 0,away 1,away 2", `v${v}: clean=false: got [${texts}], expected away 0..2 in order [MQTT-3.1.2-4]`);
  check(away.every((m) => m.qos === 1), `v${v}: clean=false: QoS ${away.map((m) => m.qos)}, expected 1`);
  await within(d2.end(), 5000, `v${v}: device end again`);
  log.push(`v${v} clean=false: session present = 1, the 3 messages published while away arrived in order`);

  for (let i = 0; i < 3; i++) {
    await within(publisher.publish(`${topic}/x`, `lost ${i}`, { qos: 1 }), 5000, `v${v}: publish ${i} before the clean reconnect`);
  }
  const d3 = await within(connect(ws, { ...device, clean: true }), 5000, `v${v}: device clean reconnect`);
  const none = inbox(d3);
  check(d3.session().sessionPresent === false, `v${v}: clean=true: session present = 0 expected [MQTT-3.2.2-1]`);
  const stale = await barrier(d3, none, `${tag}/barrier/v${v}`);
  check(stale.length === 0, `v${v}: clean=true: ${stale.length} old messages arrived, expected none [MQTT-3.1.2-6]`);
  await within(d3.end(), 5000, `v${v}: device clean end`);
  await within(publisher.end(), 5000, `v${v}: publisher end`);
  log.push(`v${v} clean=true: session present = 0, none of the 3 messages arrived`);
  return log;
}

/**
 * Connect, subscribe, publish QoS 1 and 2 and receive both back; keep-alive 1 s held for
 * 2.5 s (the broker drops a silent client after 1.5 s). Answers the messages and the
 * client's session() for the caller to check.
 */
export async function roundtrip(connect, ws, tag) {
  const client = await within(
    connect(ws, { clientId: `${tag}-rt`, protocolVersion: 5, keepalive: 1, reconnect: false }),
    5000,
    "round trip: connect",
  );
  const events = [];
  for (const e of ["close", "offline", "error"]) client.on(e, () => events.push(e));
  const msgs = inbox(client);
  const granted = await within(client.subscribe(`${tag}/rt/#`, { qos: 2 }), 5000, "round trip: subscribe");
  const acks = [];
  for (const qos of [1, 2]) {
    acks.push(await within(client.publish(`${tag}/rt/q${qos}`, `qos ${qos}`, { qos }), 5000, `round trip: publish QoS ${qos}`));
  }
  await msgs.wait(2, 5000, "round trip: both messages back");
  await sleep(2500);
  const result = {
    granted,
    acks,
    events: [...events],
    connected: client.connected,
    messages: msgs.map(({ topic, text, qos }) => ({ topic, text, qos })),
    session: client.session(),
  };
  await within(client.end(), 5000, "round trip: end");
  return result;
}

/**
 * Connects with keep-alive 2 s (protocol 5, so that the broker says why it drops us) and
 * watches until `stop` resolves or the connection is lost. `onConnected(clientId)` lets the
 * driver start watching the broker's side.
 */
export async function hold(connect, ws, clientId, stop, onConnected) {
  const events = [];
  // Event times count from before CONNECT goes out: the broker's keep-alive counts from it
  // [MQTT-3.1.2-24], and a busy page may resolve connect() well after the CONNACK arrived.
  const begun = Date.now();
  const client = await within(
    connect(ws, { clientId, protocolVersion: 5, keepalive: 2 }),
    5000,
    "keep-alive: connect",
  );
  const started = Date.now();
  let lost;
  const gone = new Promise((r) => (lost = r));
  for (const e of ["offline", "reconnect", "close", "connect"]) {
    client.on(e, () => {
      events.push({ event: e, at: Date.now() - begun });
      if (e === "close") lost();
    });
  }
  client.on("error", (err) => events.push({ event: "error", at: Date.now() - begun, message: err.message, reasonCode: err.reasonCode }));
  onConnected(clientId);
  await Promise.race([stop, gone]);
  const result = { clientId, held: Date.now() - started, connected: client.connected, events: [...events] };
  await within(client.end(), 5000, "keep-alive: end");
  return result;
}
