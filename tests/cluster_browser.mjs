// Cluster mode seen from a browser: two bridges joined through a 3-node NATS JetStream
// cluster act as one broker. The wasm client (client-wasm/pkg/) in Debian's headless Chromium
// is on bridge a over WebSocket; MQTT.js (npm `mqtt`) is on bridge b over TCP.
//
// - The browser subscribes to cluster/live at QoS 1 (MQTT 5.0); MQTT.js (MQTT 3.1.1) publishes
//   QoS 1 and QoS 0 messages to it, interleaved, each QoS 1 one waited for (PUBACK). The
//   browser gets each once, with its payload, topic and own QoS (both under the granted 1),
//   not retained, in the publisher's order per QoS [MQTT-4.6.0-6] ("for the same Topic and
//   QoS": the bridges carry QoS 0 and QoS 1 by different NATS paths, the core subject and
//   the JetStream stream, so their relative order is printed, not checked).
// - MQTT.js then publishes a retained QoS 1 message to cluster/kept, and a marker to
//   cluster/live; once the marker is in, the browser subscribes to cluster/kept and gets the
//   retained message at once, retain set [MQTT-3.3.1-6].
// - Nothing arrives twice; the browser ends with DISCONNECT, no error event, and bridge a
//   forgets its clean session.
//
// The NATS servers run on free loopback ports with temporary stores, under a small watchdog
// shell that kills them if this process dies without cleaning up; the bridges each have a
// configuration file with their `[cluster]` table (nodes "a" and "b", one namespace of this
// run) and let the test page's origin open WebSockets.
//
// Usage: node tests/cluster_browser.mjs   (after `cargo build -p bridge` and
// `client-wasm/build.sh`; needs Debian's nats-server, or NATS_SERVER). Exits 1, naming the
// failed check, on any failure.
import { constants } from "node:fs";
import { access, mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqttjs from "mqtt";
import {
  bridgeConfig,
  cleanup,
  fail,
  launchChromium,
  onCleanup,
  root,
  run,
  serveStatic,
  setup,
  spawnBridge,
} from "./support/harness.mjs";

const pkgDir = join(root, "client-wasm", "pkg");
const natsBin = process.env.NATS_SERVER ?? "/usr/sbin/nats-server";
const TEST_TIMEOUT_MS = 30_000;
/** How long the NATS cluster may take to elect its JetStream meta leader. */
const NATS_READY_MS = 15_000;
/** How long a message may take from bridge b to the browser on bridge a. */
const DELIVERY_MS = 5_000;
/** The QoS of each message MQTT.js publishes to cluster/live, in order. */
const LIVE_QOS = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0];
setup("cluster browser test", TEST_TIMEOUT_MS);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const check = (cond, what) => {
  if (!cond) throw new Error(what);
};

const PAGE = `<!doctype html><meta charset="utf-8"><title>cluster browser test</title>
<script type="module">
import init, * as mqtt from "/pkg/client_wasm.js";
try { await init(); window.mqtt = mqtt; window.ready = "ok"; }
catch (e) { window.ready = "init failed: " + e; }
</script>`;

/** `n` distinct free loopback ports (held open together, so none is handed out twice). */
async function freePorts(n) {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise((resolve, reject) => {
      const s = createServer();
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => resolve(s));
    })),
  );
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/**
 * Starts three nats-servers with JetStream, routed to each other, and resolves with their
 * client URLs (a bridge's `nats_url`) once each says it is healthy (a meta leader elected).
 */
async function startNats() {
  await access(natsBin, constants.X_OK).catch(() => {
    throw new Error(`no nats-server at ${natsBin}: install it with scripts/setup.sh, or set NATS_SERVER`);
  });
  const dir = await mkdtemp(join(tmpdir(), "cluster-browser-nats-"));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  const ports = await freePorts(9);
  const nodes = [0, 1, 2].map((i) => ({ name: `n${i}`, port: ports[i], cluster: ports[3 + i], monitor: ports[6 + i] }));
  const servers = nodes.map((n) => {
    const routes = nodes.filter((o) => o !== n).map((o) => `nats://127.0.0.1:${o.cluster}`);
    return run(natsBin, [
      "-a", "127.0.0.1", "-p", `${n.port}`, "-n", n.name,
      "-js", "-sd", join(dir, n.name),
      "--cluster_name", "e2e", "--cluster", `nats://127.0.0.1:${n.cluster}`, "--routes", routes.join(","),
      "-m", `${n.monitor}`,
    ]);
  });
  // Killed and waited for before their stores are removed (clean-up runs last-registered first).
  onCleanup(() => Promise.all(servers.map((s) => (s.kill("SIGKILL"), s.exited))));
  for (const s of servers) s.exited.catch((e) => (s.spawnError = e));
  const pids = servers.map((s) => `${s.pid}`);
  run("sh", ["-c", 'while kill -0 "$0" 2>/dev/null; do sleep 1; done; kill -9 "$@" 2>/dev/null', `${process.pid}`, ...pids]);

  const deadline = Date.now() + NATS_READY_MS;
  for (const [i, n] of nodes.entries()) {
    let body = "";
    while (!body.includes('"ok"')) {
      if (servers[i].spawnError) throw servers[i].spawnError;
      if (servers[i].exitCode !== null) throw new Error(`nats-server ${n.name} exited (${servers[i].exitCode}):\n${servers[i].output}`);
      if (Date.now() > deadline) {
        throw new Error(`nats-server ${n.name} not healthy within ${NATS_READY_MS} ms: ${body}\n${servers[i].output.slice(-2000)}`);
      }
      await sleep(100);
      body = await fetch(`http://127.0.0.1:${n.monitor}/healthz`).then((r) => r.text(), () => "");
    }
  }
  return nodes.map((n) => `nats://127.0.0.1:${n.port}`).join(",");
}

/** Starts bridge `node` of the cluster: no data directory, ephemeral ports, `origin` allowed. */
async function startBridge(natsUrl, namespace, node, origin) {
  const config = await bridgeConfig(
    `[server]\nallowed_origins = ["${origin}"]\n\n` +
      `[cluster]\nnats_url = "${natsUrl}"\nnode = "${node}"\nnamespace = "${namespace}"\nreplicas = 3\n`,
  );
  return spawnBridge(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", "none", ...config]);
}

/** MQTT.js on `mqtt` (host:port) over TCP, MQTT 3.1.1, resolved at its CONNACK. */
async function mqttjsClient(mqtt, clientId) {
  const c = mqttjs.connect(`mqtt://${mqtt}`, { clientId, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 });
  onCleanup(() => c.end(true));
  await new Promise((resolve, reject) => {
    c.once("connect", resolve);
    c.once("error", reject);
    c.once("close", () => reject(new Error("closed before CONNACK")));
  });
  return c;
}

// Runs in the page: connects, subscribes to cluster/live, and records every message and
// every error or close event in window.got / window.events.
async function subscribeLive(ws) {
  const c = await window.mqtt.connect(ws, { clientId: "browser", protocolVersion: 5, keepalive: 30, reconnect: false });
  window.client = c;
  window.got = [];
  window.events = [];
  c.on("message", (topic, payload, packet) =>
    window.got.push({ topic, text: new TextDecoder().decode(payload), qos: packet.qos, retain: packet.retain }));
  c.on("error", (e) => window.events.push(`error: ${e?.message ?? e}`));
  c.on("close", () => window.events.push("close"));
  return c.subscribe("cluster/live", { qos: 1 });
}

/** Waits until the page holds `n` messages; resolves with them (more if more came). */
async function received(page, n, what) {
  const deadline = Date.now() + DELIVERY_MS;
  for (;;) {
    const got = await page.evaluate(() => window.got);
    if (got.length >= n) return got;
    if (Date.now() > deadline) throw new Error(`${what}: ${got.length} of ${n} messages within ${DELIVERY_MS} ms: ${JSON.stringify(got)}`);
    await sleep(20);
  }
}

try {
  const started = Date.now();
  const namespace = `cb-${process.pid}-${Date.now().toString(36)}`;
  const [natsUrl, base] = await Promise.all([startNats(), serveStatic([["/pkg/", pkgDir]], { pages: { "/": PAGE } })]);
  const natsReady = Date.now();
  const origin = new URL(base).origin;
  // One bridge after the other: two that start at once both make the namespace's streams,
  // and nats-server 2.9 may leave one of those requests unanswered (the bridge then exits:
  // "JetStream: stream ..._MSGS: jetstream request timed out").
  const [a, browser] = await Promise.all([startBridge(natsUrl, namespace, "a", origin), launchChromium()]);
  const b = await startBridge(natsUrl, namespace, "b", origin);
  const bridgesReady = Date.now();
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => process.env.VERBOSE && console.log(`[page] ${m.text()}`));
  await page.goto(base);
  await page.waitForFunction(() => window.ready !== undefined, null, { timeout: 10_000 });
  const ready = await page.evaluate(() => window.ready);
  check(ready === "ok", ready);

  const granted = await page.evaluate(subscribeLive, a.ws);
  check(JSON.stringify(granted) === "[1]", `browser on a: SUBACK cluster/live granted ${JSON.stringify(granted)}, expected [1]`);
  const pub = await mqttjsClient(b.mqtt, "mqttjs-pub");

  // Interleaved QoS 1 and QoS 0 on b; each QoS 1 publish resolves at its PUBACK.
  const sent = LIVE_QOS.map((qos, i) => ({ topic: "cluster/live", text: `live ${i} qos ${qos}`, qos, retain: false }));
  for (const m of sent) await pub.publishAsync(m.topic, m.text, { qos: m.qos });
  const live = await received(page, sent.length, "browser on a, cluster/live");
  for (const qos of [0, 1]) {
    const want = sent.filter((m) => m.qos === qos);
    const got = live.filter((m) => m.qos === qos || want.some((w) => w.text === m.text));
    check(JSON.stringify(got) === JSON.stringify(want),
      `browser on a: the QoS ${qos} messages from b, expected ${JSON.stringify(want)} in this order, got ${JSON.stringify(got)}`);
  }
  check(live.length === sent.length, `browser on a: ${live.length} messages, expected ${sent.length}: ${JSON.stringify(live)}`);
  const sameOrder = live.every((m, i) => m.text === sent[i].text);
  console.log(`ok: ${sent.length} messages (QoS 1 and 0) published on b over TCP reached the browser on a over WebSocket once each, in order per QoS`);
  console.log(`ok: across QoS, ${sameOrder ? "in the order published" : `in the order ${live.map((m) => m.text.split(" ")[1]).join(",")}`}`);

  // A retained message set on b is there when the browser subscribes on a. Its PUBACK says
  // it is in JetStream, not that bridge a has read it yet: a SUBSCRIBE that came first would
  // get it later as a live message (retain 0). So a QoS 1 marker follows it on cluster/live;
  // every bridge routes the stream in the stream's order, so once the marker is in the
  // browser, bridge a holds the retained message.
  await pub.publishAsync("cluster/kept", "kept on b", { qos: 1, retain: true });
  const marker = { topic: "cluster/live", text: "after the retained one", qos: 1, retain: false };
  await pub.publishAsync(marker.topic, marker.text, { qos: 1 });
  const [got] = (await received(page, sent.length + 1, "browser on a, the marker")).slice(sent.length);
  check(JSON.stringify(got) === JSON.stringify(marker), `browser on a: got ${JSON.stringify(got)}, expected the marker ${JSON.stringify(marker)}`);
  const grantedKept = await page.evaluate(() => window.client.subscribe("cluster/kept", { qos: 1 }));
  check(JSON.stringify(grantedKept) === "[1]", `browser on a: SUBACK cluster/kept granted ${JSON.stringify(grantedKept)}, expected [1]`);
  const all = await received(page, sent.length + 2, "browser on a, the retained message at SUBSCRIBE");
  const kept = all[sent.length + 1];
  const wantKept = { topic: "cluster/kept", text: "kept on b", qos: 1, retain: true };
  check(JSON.stringify(kept) === JSON.stringify(wantKept), `browser on a: at SUBSCRIBE got ${JSON.stringify(kept)}, expected ${JSON.stringify(wantKept)}`);
  console.log("ok: the retained message set on b came to the browser on a at SUBSCRIBE, QoS 1, retain set");

  // Nothing more (no duplicate from either path), then a clean end.
  await sleep(300);
  const extra = (await page.evaluate(() => window.got)).slice(sent.length + 2);
  check(extra.length === 0, `browser on a: ${extra.length} unexpected message(s): ${JSON.stringify(extra)}`);
  await pub.endAsync();
  const end = await page.evaluate(async () => {
    await window.client.end();
    return { connected: window.client.connected, events: window.events };
  });
  check(!end.connected, "browser: still connected after end()");
  check(end.events.every((e) => !e.startsWith("error")), `browser: error events: ${JSON.stringify(end.events)}`);
  check(pageErrors.length === 0, `page errors: ${pageErrors.join("; ")}`);
  const deadline = Date.now() + 2000;
  let status;
  while ((status = (await fetch(`${a.http}/api/v1/sessions/browser`)).status) !== 404) {
    check(Date.now() < deadline, `bridge a: GET /api/v1/sessions/browser is HTTP ${status} after the clean session ended, expected 404`);
    await sleep(50);
  }
  console.log("ok: the browser ended with DISCONNECT, no error event; bridge a dropped its clean session");

  const s = (t) => ((t - started) / 1000).toFixed(1);
  console.log(`cluster browser test passed in ${s(Date.now())} s (NATS ready at ${s(natsReady)} s, bridges at ${s(bridgesReady)} s)`);
  await cleanup();
  process.exit(0);
} catch (e) {
  fail(e?.message ?? String(e));
}
