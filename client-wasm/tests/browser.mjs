// Browser test of the wasm MQTT client: a real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core) loads client-wasm/pkg/ exactly as a web page would, and talks to
// a real bridge that this script starts on 127.0.0.1:0.
//
// Usage: node client-wasm/tests/browser.mjs   (after `cargo build -p bridge` and
// `client-wasm/build.sh`). Exits non-zero, naming the failed check, on any failure.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqttjs from "mqtt";
import { allowOrigin, cleanup, fail, launchChromium, onCleanup, root, serveStatic, setup, spawnBridge } from "../../tests/support/harness.mjs";

const pkgDir = join(root, "client-wasm", "pkg");
const TEST_TIMEOUT_MS = 60_000;
setup("browser test", TEST_TIMEOUT_MS);

const PAGE = `<!doctype html><meta charset="utf-8"><title>client-wasm test</title>
<script type="module">
import init, * as mqtt from "/pkg/client_wasm.js";
try { await init(); window.mqtt = mqtt; window.ready = "ok"; }
catch (e) { window.ready = "init failed: " + e; }
</script>`;

// Runs inside the page. Each check throws with a message naming it.
async function scenarios(ws) {
  const { connect } = window.mqtt;
  const log = [];
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const within = (p, ms, what) =>
    Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`timeout: ${what}`)))]);
  const check = (cond, what) => {
    if (!cond) throw new Error(what);
  };
  const text = (b) => new TextDecoder().decode(b);
  // Collects messages; wait(n) resolves when n have arrived.
  const inbox = (client) => {
    const msgs = [];
    let wake = () => {};
    client.on("message", (topic, payload, packet) => {
      msgs.push({ topic, payload, text: text(payload), qos: packet.qos, retain: packet.retain });
      wake();
    });
    msgs.wait = async (n, ms, what) => {
      const deadline = Date.now() + ms;
      while (msgs.length < n) {
        if (Date.now() > deadline) throw new Error(`timeout: ${what} (got ${msgs.length} of ${n})`);
        await new Promise((r) => {
          wake = r;
          setTimeout(r, 50);
        });
      }
      return msgs;
    };
    return msgs;
  };

  // Bad URL and refused connection: clear rejections.
  for (const [url, what] of [
    ["ftp://127.0.0.1/mqtt", "bad URL"],
    ["ws://127.0.0.1:1/mqtt", "refused connection"],
  ]) {
    let err;
    try {
      await within(connect(url, { reconnect: false }), 10000, what);
    } catch (e) {
      err = e;
    }
    check(err instanceof Error && !err.message.startsWith("timeout"), `${what}: expected a rejection, got ${err}`);
    log.push(`${what} rejected: ${err.message}`);
  }

  for (const v of [4, 5]) {
    const tag = `v${v}`;
    // Connect, subscribe, publish QoS 0/1/2 and receive each.
    const c = await within(connect(ws, { clientId: `basic-${v}`, protocolVersion: v, keepalive: 30 }), 5000, `${tag} connect`);
    check(c.connected, `${tag}: connected`);
    const inb = inbox(c);
    const granted = await within(c.subscribe(`t/${tag}/#`, { qos: 2 }), 5000, `${tag} subscribe`);
    check(JSON.stringify(granted) === "[2]", `${tag}: granted ${JSON.stringify(granted)}, expected [2]`);
    const s = c.session();
    check(s.subscriptions.length === 1 && s.subscriptions[0].topic === `t/${tag}/#` && s.subscriptions[0].qos === 2, `${tag}: session() subscriptions ${JSON.stringify(s.subscriptions)}`);
    for (const qos of [0, 1, 2]) {
      const code = await within(c.publish(`t/${tag}/q${qos}`, `hello ${qos}`, { qos }), 5000, `${tag} publish QoS ${qos}`);
      check(code === 0 || code === 0x10, `${tag}: publish QoS ${qos} resolved with ${code}`);
    }
    await within(c.publish(`t/${tag}/bin`, new Uint8Array([0, 1, 255]), { qos: 1 }), 5000, `${tag} binary publish`);
    const got = await inb.wait(4, 5000, `${tag} receive QoS 0/1/2 + binary`);
    for (const qos of [0, 1, 2]) {
      const m = got.find((m) => m.topic === `t/${tag}/q${qos}`);
      check(m && m.text === `hello ${qos}` && m.qos === qos, `${tag}: QoS ${qos} message ${JSON.stringify(m)}`);
    }
    const bin = got.find((m) => m.topic === `t/${tag}/bin`);
    check(bin && bin.payload instanceof Uint8Array && bin.payload.join() === "0,1,255", `${tag}: binary payload`);
    const unsub = await within(c.unsubscribe(`t/${tag}/#`), 5000, `${tag} unsubscribe`);
    check(Array.isArray(unsub), `${tag}: unsubscribe resolved with ${unsub}`);
    check(c.session().subscriptions.length === 0, `${tag}: no subscription after unsubscribe`);
    let bad;
    try {
      await c.publish("bad/#", "x");
    } catch (e) {
      bad = e;
    }
    check(bad instanceof Error, `${tag}: publish to a wildcard topic must reject`);
    await within(c.end(), 5000, `${tag} end`);
    check(!c.connected, `${tag}: not connected after end`);
    log.push(`${tag}: connect/subscribe/publish QoS 0,1,2/unsubscribe ok`);

    // Keep-alive: with keepalive 1 s the broker drops a silent client after 1.5 s; PINGREQ
    // from the timer keeps it connected.
    const k = await within(connect(ws, { clientId: `ka-${v}`, protocolVersion: v, keepalive: 1, reconnect: false }), 5000, `${tag} keepalive connect`);
    let closed = false;
    k.on("close", () => (closed = true));
    await sleep(3500);
    check(!closed && k.connected, `${tag}: keep-alive: the connection was dropped`);
    await k.end();
    log.push(`${tag}: keep-alive ok`);

    // The seed scenario: clean = false keeps what was published while away.
    const persistent = { clientId: `seed-${v}`, protocolVersion: v, clean: false, sessionExpiryInterval: v === 5 ? 300 : undefined };
    const a = await within(connect(ws, persistent), 5000, `${tag} seed connect`);
    await within(a.subscribe(`seed/${tag}/#`, { qos: 1 }), 5000, `${tag} seed subscribe`);
    await within(a.end(), 5000, `${tag} seed end`);
    const pub = await within(connect(ws, { clientId: `seedpub-${v}`, protocolVersion: v }), 5000, `${tag} publisher connect`);
    for (let i = 0; i < 3; i++) await within(pub.publish(`seed/${tag}/x`, `away ${i}`, { qos: 1 }), 5000, `${tag} publish while away`);
    const a2 = await within(connect(ws, persistent), 5000, `${tag} seed reconnect`);
    check(a2.session().sessionPresent === true, `${tag}: clean=false: session present expected`);
    const away = await inbox(a2).wait(3, 5000, `${tag}: clean=false: messages published while away`);
    check(away.map((m) => m.text).join() === "away 0,away 1,away 2", `${tag}: clean=false got ${away.map((m) => m.text)}`);
    await a2.end();
    log.push(`${tag}: seed clean=false: session present, 3 queued messages delivered`);

    // clean = true: nothing kept.
    const fresh = { clientId: `seedc-${v}`, protocolVersion: v, clean: true };
    const b = await within(connect(ws, fresh), 5000, `${tag} clean connect`);
    await within(b.subscribe(`seedc/${tag}/#`, { qos: 1 }), 5000, `${tag} clean subscribe`);
    await within(b.end(), 5000, `${tag} clean end`);
    for (let i = 0; i < 3; i++) await within(pub.publish(`seedc/${tag}/x`, `lost ${i}`, { qos: 1 }), 5000, `${tag} publish while away (clean)`);
    const b2 = await within(connect(ws, fresh), 5000, `${tag} clean reconnect`);
    check(b2.session().sessionPresent === false, `${tag}: clean=true: no session expected`);
    const none = inbox(b2);
    await sleep(500);
    check(none.length === 0, `${tag}: clean=true: got ${none.length} messages`);
    await b2.end();
    log.push(`${tag}: seed clean=true: no session, no messages`);

    // Auto-reconnect: another connection with the same client id takes the session over and
    // the broker drops this one; it comes back by itself after the backoff, session present.
    const rc = await within(connect(ws, { clientId: `rc-${v}`, protocolVersion: v, clean: false, sessionExpiryInterval: v === 5 ? 300 : undefined, reconnect: { initialDelay: 300, maxDelay: 1000, jitter: 0 } }), 5000, `${tag} reconnect-client connect`);
    const rcIn = inbox(rc);
    const events = [];
    for (const e of ["offline", "close", "reconnect", "connect"]) rc.on(e, () => events.push(e));
    await within(rc.subscribe(`rc/${tag}/#`, { qos: 1 }), 5000, `${tag} reconnect subscribe`);
    const thief = await within(connect(ws, { clientId: `rc-${v}`, protocolVersion: v, clean: false, sessionExpiryInterval: v === 5 ? 300 : undefined, reconnect: false }), 5000, `${tag} takeover`);
    await thief.end();
    const deadline = Date.now() + 5000;
    while (!(events.includes("connect") && rc.connected) && Date.now() < deadline) await sleep(50);
    check(events.includes("offline") && events.includes("reconnect") && events.includes("connect") && rc.connected, `${tag}: auto-reconnect events ${events}`);
    await within(pub.publish(`rc/${tag}/x`, "after", { qos: 1 }), 5000, `${tag} publish after reconnect`);
    await rcIn.wait(1, 5000, `${tag}: message after auto-reconnect`);
    await rc.end();
    await pub.end();
    log.push(`${tag}: auto-reconnect after takeover: events ${events.join(",")}`);
  }
  return log;
}

// 5.0 publish properties both ways, named as in MQTT.js (runs inside the page).
async function properties(ws) {
  const { connect } = window.mqtt;
  const c = await connect(ws, { clientId: "props", protocolVersion: 5 });
  const got = new Promise((resolve) => c.on("message", (topic, payload, packet) => resolve(packet)));
  await c.subscribe("props/#", { qos: 1 });
  const sent = {
    payloadFormatIndicator: true,
    messageExpiryInterval: 600,
    contentType: "text/plain",
    responseTopic: "props/reply",
    correlationData: new Uint8Array([1, 2, 3]),
    // `toString` is a key like any other, not the inherited method.
    userProperties: { a: "1", b: ["2", "3"], toString: "t" },
  };
  await c.publish("props/x", "with properties", { qos: 1, properties: sent });
  const p = (await Promise.race([got, new Promise((r) => setTimeout(r, 5000))]))?.properties;
  await c.end();
  const want = JSON.stringify({ ...sent, correlationData: [1, 2, 3] });
  // The broker lowers Message Expiry by the time the message waited [MQTT-3.3.2-6].
  const seen = p && JSON.stringify({ ...p, correlationData: [...(p.correlationData ?? [])], messageExpiryInterval: p.messageExpiryInterval > 590 ? 600 : p.messageExpiryInterval });
  if (seen !== want) throw new Error(`5.0 properties: sent ${want}, received ${seen}`);
  let err;
  try {
    await connect(ws, { clientId: "", clean: true, persistence: true });
  } catch (e) {
    err = e;
  }
  if (!(err instanceof Error && /persistence/.test(err.message))) throw new Error(`persistence without clientId: ${err}`);
  return ["5.0 publish properties (user properties, correlation data, content type, response topic, expiry, format) both ways", `persistence with clean: true rejected: ${err.message}`];
}

/**
 * IndexedDB writes that fail (runs inside the page): `IDBDatabase.transaction` is made to
 * throw for read-write transactions. One failure: the client rewrites the whole session and
 * goes on; failures that persist: it says persistence is off and goes on without it. In
 * neither case is the connection stuck: the publishes resolve at PUBACK.
 */
async function persistenceFailures(ws) {
  const { connect } = window.mqtt;
  const opts = { clientId: "persist-fail", protocolVersion: 5, clean: false, sessionExpiryInterval: 60, persistence: { name: "persist-fail" }, reconnect: false };
  const c = await connect(ws, opts);
  const errors = [];
  c.on("error", (e) => errors.push(e.message));
  const real = IDBDatabase.prototype.transaction;
  let failures = 1;
  IDBDatabase.prototype.transaction = function (scope, mode, o) {
    if (mode === "readwrite" && failures > 0) {
      failures--;
      throw new DOMException("simulated", "QuotaExceededError");
    }
    return real.call(this, scope, mode, o);
  };
  const timeout = (what) => new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), 5000));
  try {
    await Promise.race([c.publish("persist-fail/1", "a", { qos: 1 }), timeout("publish after one failed write")]);
    if (!errors.some((m) => /rewriting the session/.test(m))) throw new Error(`one failed write: errors ${JSON.stringify(errors)}`);
    // The rewrite left the store right: a second client with the same store finds nothing
    // unfinished once the PUBACK's delete is in.
    failures = 1e9;
    await Promise.race([c.publish("persist-fail/2", "b", { qos: 2 }), timeout("publish while writes keep failing")]);
    if (!errors.some((m) => /persistence is off/.test(m))) throw new Error(`failing writes: errors ${JSON.stringify(errors)}`);
  } finally {
    IDBDatabase.prototype.transaction = real;
  }
  await c.end();
  // Two clients may not share one stored session (a Web Lock), and 5.0 persistence needs a
  // session that outlives the connection.
  const holder = await connect(ws, { ...opts, clientId: "persist-lock", persistence: true });
  let err;
  try {
    await connect(ws, { ...opts, clientId: "persist-lock", persistence: true });
  } catch (e) {
    err = e;
  }
  await holder.end();
  if (!(err instanceof Error && /holds the stored session/.test(err.message))) throw new Error(`second client on one store: ${err}`);
  const again = await connect(ws, { ...opts, clientId: "persist-lock", persistence: true });
  await again.end();
  let noExpiry;
  try {
    await connect(ws, { ...opts, sessionExpiryInterval: 0 });
  } catch (e) {
    noExpiry = e;
  }
  if (!(noExpiry instanceof Error && /sessionExpiryInterval/.test(noExpiry.message))) throw new Error(`5.0 persistence without expiry: ${noExpiry}`);
  return [
    "persistence: one failed IndexedDB write -> session rewritten, publish resolved; failures that persist -> persistence off with an error event, publish resolved",
    `persistence: a second client on the same stored session rejected (${err.message}); free again after end()`,
    `persistence: 5.0 without session expiry rejected (${noExpiry.message})`,
  ];
}

/**
 * A bad option rejects with an Error saying which and why: the messages users see, listed
 * here so that they stay the same whichever side of the wasm boundary checks them.
 */
async function badOptions(ws) {
  const { connect } = window.mqtt;
  const A = "invalid argument: ";
  const message = async (p) => {
    try {
      await p;
    } catch (e) {
      return e instanceof Error ? e.message : `not an Error: ${e}`;
    }
    return "resolved";
  };
  const cases = [
    [{ protocolVersion: 3 }, A + "protocolVersion must be 4 or 5"],
    [{ clientId: 5 }, A + "clientId must be a string"],
    [{ keepalive: 70000 }, A + "keepalive must be 0..=65535 seconds"],
    [{ sessionExpiryInterval: -1 }, A + "sessionExpiryInterval must be 0..=4294967295 seconds"],
    [{ queueLimit: 1.5 }, A + "queueLimit must be a non-negative integer"],
    [{ connectTimeout: "1" }, A + "connectTimeout must be milliseconds"],
    [{ will: { payload: "x" } }, A + "will.topic is required"],
    [{ will: { topic: "w", payload: 5 } }, A + "will.payload must be a string or a Uint8Array"],
    [{ will: { topic: "w", payload: "x", qos: 3 } }, A + "qos must be 0, 1 or 2"],
    [{ will: { topic: "w/#", payload: "x" } }, "invalid topic: topic name contains a wildcard ('+' or '#'); wildcards are only allowed in filters"],
    [{ reconnect: { initialDelay: "x" } }, A + "reconnect.initialDelay must be milliseconds"],
    [{ reconnect: { maxDelay: "x" } }, A + "reconnect.maxDelay must be milliseconds"],
    [{ reconnect: { jitter: true } }, A + "reconnect.jitter must be 0..1"],
    [{ clientId: "p", clean: false, persistence: { name: 1 } }, A + "persistence.name must be a string"],
  ];
  const out = [];
  for (const [opts, expected] of cases) {
    const got = await message(connect(ws, { reconnect: false, ...opts }));
    if (got !== expected) throw new Error(`bad options: connect(${JSON.stringify(opts)}) gave "${got}", expected "${expected}"`);
  }
  out.push(`${cases.length} bad connect options rejected with their messages`);
  const c = await connect(ws, { clientId: "bad-options", protocolVersion: 5 });
  const P = A + "properties.";
  const calls = [
    [() => c.publish("t", "x", { qos: 3 }), A + "qos must be 0, 1 or 2"],
    [() => c.publish("t", 5), A + "payload must be a string or a Uint8Array"],
    [() => c.publish("t/+", "x"), "invalid topic: topic name contains a wildcard ('+' or '#'); wildcards are only allowed in filters"],
    [() => c.publish("t", "x", { properties: { messageExpiryInterval: -1 } }), P + "messageExpiryInterval must be 0..=4294967295 seconds"],
    [() => c.publish("t", "x", { properties: { contentType: 1 } }), P + "contentType must be a string"],
    [() => c.publish("t", "x", { properties: { responseTopic: 1 } }), P + "responseTopic must be a string"],
    [() => c.publish("t", "x", { properties: { correlationData: 5 } }), P + "correlationData must be a string or a Uint8Array"],
    [() => c.publish("t", "x", { properties: { userProperties: { a: ["b", 1] } } }), P + "userProperties values must be strings or arrays of strings"],
    [() => c.subscribe("t", { qos: 5 }), A + "qos must be 0, 1 or 2"],
    [() => c.subscribe("t", { rh: 3 }), A + "rh must be 0, 1 or 2"],
    [() => c.subscribe(5), A + "filters must be a string or an array of strings"],
  ];
  for (const [call, expected] of calls) {
    const got = await message(call());
    if (got !== expected) throw new Error(`bad options: ${call} gave "${got}", expected "${expected}"`);
  }
  await c.end();
  out.push(`${calls.length} bad publish / subscribe arguments rejected with their messages`);
  return out;
}

/**
 * Publishes made in a row leave in few WebSocket frames, each holding many packets
 * [MQTT-6.0.0-2], and at most 64 KiB plus one packet: counted by wrapping the page's
 * `WebSocket.prototype.send`. 200 QoS 1 publishes (under the bridge's Receive Maximum of
 * 256, which a 3.1.1 client cannot be told) are all acknowledged with 0, and their messages
 * come back once each, in order [MQTT-4.6.0-6] (at QoS 0: the client sends nothing else).
 */
async function batching(ws) {
  const frames = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    frames.push(data.byteLength ?? data.length);
    return send.call(this, data);
  };
  try {
    const c = await window.mqtt.connect(ws, { clientId: "batching", protocolVersion: 4 });
    const got = [];
    c.on("message", (topic, payload) => got.push(new DataView(payload.buffer, payload.byteOffset).getUint32(0)));
    await c.subscribe("batch/#", { qos: 0 });
    const out = [];
    for (const [size, n] of [[64, 200], [1024, 200]]) {
      frames.length = 0;
      const acks = [];
      for (let i = 0; i < n; i++) {
        const p = new Uint8Array(size);
        new DataView(p.buffer).setUint32(0, got.length + i);
        acks.push(c.publish(`batch/${size}`, p, { qos: 1 }));
      }
      const codes = await Promise.all(acks);
      const sent = [...frames];
      if (codes.some((x) => x !== 0)) throw new Error(`batching: reason codes ${codes}`);
      const bytes = sent.reduce((a, b) => a + b, 0);
      // One frame per 64 KiB started (a packet may cross it), and never one per packet.
      const most = Math.ceil(bytes / 65536);
      if (sent.length > most || sent.some((f) => f > 65536 + size + 64)) {
        throw new Error(`batching: ${n} publishes of ${size} B went out in frames of [${sent}] B, expected at most ${most}`);
      }
      out.push(`${n} QoS 1 publishes of ${size} B in a row: ${sent.length} frame(s) of [${sent}] B, all acknowledged`);
    }
    const deadline = Date.now() + 5000;
    while (got.length < 400 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (got.join() !== [...Array(400).keys()].join()) throw new Error(`batching: received ${got.length} messages, not 0..399 in order`);
    await c.end();
    return [...out, "the 400 messages came back once each, in order"];
  } finally {
    WebSocket.prototype.send = send;
  }
}

/**
 * Persistence across a page reload (issue: "a new client instance over the same IndexedDB"):
 * messages published while the broker is down wait in IndexedDB; the page reloads; the
 * broker comes back (same ports, same data); a new client with the same id sends them, and
 * a subscriber gets each exactly once. The bridge runs on the embedded store so the
 * sessions survive its kill -9.
 */
async function persistence(page, allowed) {
  const data = await mkdtemp(join(tmpdir(), "client-wasm-persist-"));
  onCleanup(() => rm(data, { recursive: true, force: true }));
  const b1 = await spawnBridge(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", data, ...allowed]);
  // The subscriber: MQTT.js over TCP, its own persistent session.
  const sub = mqttjs.connect(`mqtt://${b1.mqtt}`, { clientId: "persist-sub", clean: false, protocolVersion: 4, reconnectPeriod: 200 });
  onCleanup(() => sub.end(true));
  const received = [];
  sub.on("message", (topic, payload) => received.push(`${topic}=${payload}`));
  await new Promise((resolve, reject) => {
    sub.once("connect", () => sub.subscribe("persist/#", { qos: 2 }, (e) => (e ? reject(e) : resolve())));
    sub.once("error", reject);
  });
  const opts = { clientId: "persist-pub", protocolVersion: 5, clean: false, sessionExpiryInterval: 300, persistence: true, reconnect: { initialDelay: 200, maxDelay: 500, jitter: 0 } };
  const dbName = `mqtt-bridge-client ${b1.ws} persist-pub`;
  await page.evaluate(async ([ws, opts]) => {
    window.pc = await window.mqtt.connect(ws, opts);
  }, [b1.ws, opts]);

  b1.child.kill("SIGKILL");
  await new Promise((r) => b1.child.once("exit", r));
  const records = (name) =>
    page.evaluate(
      (name) =>
        new Promise((resolve, reject) => {
          const open = indexedDB.open(name);
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            const db = open.result;
            const count = db.transaction("r").objectStore("r").count();
            count.onsuccess = () => {
              db.close();
              resolve(count.result);
            };
          };
        }),
      name,
    );
  await page.waitForFunction(() => !window.pc.connected, null, { timeout: 10000 });
  await page.evaluate(() => {
    // Not awaited: the page goes away before they could resolve.
    window.pc.publish("persist/1", "one", { qos: 1 }).catch(() => {});
    window.pc.publish("persist/2", "two", { qos: 2 }).catch(() => {});
  });
  const deadline = Date.now() + 10000;
  while ((await records(dbName)) !== 2) {
    if (Date.now() > deadline) throw new Error(`persistence: expected 2 stored records, have ${await records(dbName)}`);
    await new Promise((r) => setTimeout(r, 50));
  }

  await page.reload();
  await page.waitForFunction(() => window.ready !== undefined, null, { timeout: 15000 });
  const b2 = await spawnBridge(["--http", b1.httpAddr, "--mqtt", b1.mqtt, "--data", data, ...allowed]);
  const resumed = await page.evaluate(async ([ws, opts]) => {
    window.pc = await window.mqtt.connect(ws, opts);
    return window.pc.session().sessionPresent;
  }, [b2.ws, opts]);
  if (resumed !== true) throw new Error("persistence: the broker should have kept persist-pub's session (session present)");
  const until = Date.now() + 10000;
  while (received.length < 2 || (await records(dbName)) !== 0) {
    if (Date.now() > until) throw new Error(`persistence: subscriber got [${received}], ${await records(dbName)} records left`);
    await new Promise((r) => setTimeout(r, 50));
  }
  // Nothing more arrives: each message exactly once (QoS 2: [MQTT-4.3.3-...] no duplicate).
  await new Promise((r) => setTimeout(r, 500));
  const s = await page.evaluate(() => window.pc.session());
  await page.evaluate(() => window.pc.end());
  if (received.join() !== "persist/1=one,persist/2=two") throw new Error(`persistence: subscriber got [${received}]`);
  if (s.queued !== 0 || s.outgoingInflight.length !== 0) throw new Error(`persistence: session after resume ${JSON.stringify(s)}`);
  sub.end(true);
  b2.child.kill("SIGKILL");
  return ["persistence: 2 messages published offline survived a page reload and a broker kill -9, delivered once each, IndexedDB emptied after PUBACK/PUBCOMP"];
}

try {
  // The test page at /, the package at /pkg/; the bridge lets that origin connect.
  const base = await serveStatic([["/pkg/", pkgDir]], { pages: { "/": PAGE } });
  const allowed = await allowOrigin(base);
  const { ws } = await spawnBridge(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", "none", ...allowed]);
  const browser = await launchChromium();
  const page = await browser.newPage();
  page.on("console", (m) => process.env.VERBOSE && console.log(`[page] ${m.text()}`));
  page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
  await page.goto(base);
  await page.waitForFunction(() => window.ready !== undefined, null, { timeout: 15000 });
  const ready = await page.evaluate(() => window.ready);
  if (ready !== "ok") throw new Error(ready);
  const log = await page.evaluate(scenarios, ws);
  for (const line of log) console.log(`ok: ${line}`);
  for (const line of await page.evaluate(properties, ws)) console.log(`ok: ${line}`);
  for (const line of await page.evaluate(batching, ws)) console.log(`ok: ${line}`);
  for (const line of await page.evaluate(badOptions, ws)) console.log(`ok: ${line}`);
  for (const line of await page.evaluate(persistenceFailures, ws)) console.log(`ok: ${line}`);
  for (const line of await persistence(page, allowed)) console.log(`ok: ${line}`);
  console.log("browser test passed");
  await cleanup();
  process.exit(0);
} catch (e) {
  fail(e?.message ?? String(e));
}
