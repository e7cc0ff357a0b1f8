// Fresh credentials on every (re)connection, in Debian's headless Chromium (playwright-core):
// the package's `transformWsUrl`, and `username` / `password` given as functions.
//
// 1. Against a scripted WebSocket peer started here (npm `ws`, which MQTT.js brings): it
//    records the URL, user name and password of every CONNECT, answers CONNACK, and drops
//    the connection when told to, so that the client reconnects. Checked, with MQTT 3.1.1
//    and 5.0: each attempt calls each function once and the CONNECT carries what it gave
//    (the second CONNECT the refreshed token and URL); plain values are sent unchanged on
//    every attempt; a function that throws or rejects on the first connection makes
//    `connect()` reject with an Error naming it, and opens no socket; one that fails on a
//    reconnection gives an `error` event and the client tries again after the backoff;
//    `end()` while a reconnection waits for a function opens nothing afterwards.
// 2. Against a real bridge with `[auth] password_file` (a file made by `mosquitto_passwd`):
//    a wrong password makes `connect()` reject with reasonCode 0x86 (5.0 Bad User Name or
//    Password; the 3.1.1 return code 4 shows as its 5.0 equivalent, 0x86), and the right
//    password from a function connects.
//
// Usage: node client-wasm/tests/credentials.mjs   (after `cargo build -p bridge` and
// `client-wasm/build.sh`). Exits non-zero, naming the failed check, on any failure.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WebSocketServer } from "ws";
import { cleanup, fail, launchChromium, onCleanup, root, run, serveStatic, setup, spawnBridge } from "../../tests/support/harness.mjs";

const pkgDir = join(root, "client-wasm", "pkg");
setup("credentials test", 60_000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const check = (cond, what) => {
  if (!cond) throw new Error(what);
};
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

const PAGE = `<!doctype html><meta charset="utf-8"><title>client-wasm credentials test</title>
<script type="module">
import init, * as mqtt from "/pkg/client_wasm.js";
try { await init(); window.mqtt = mqtt; window.ready = "ok"; }
catch (e) { window.ready = "init failed: " + e; }
</script>`;

/**
 * The user name and password of an MQTT CONNECT (3.1.1 or 5.0), the password as text and as
 * hex. The client sends its CONNECT in one WebSocket message.
 */
function parseConnect(buf) {
  let i = 0;
  check(buf[i++] === 0x10, `not a CONNECT: ${buf.toString("hex")}`);
  const varint = () => {
    let n = 0;
    for (let mul = 1; ; mul *= 128) {
      const b = buf[i++];
      n += (b & 127) * mul;
      if (!(b & 128)) return n;
    }
  };
  const field = () => {
    const n = buf.readUInt16BE(i);
    i += 2 + n;
    return buf.subarray(i - n, i);
  };
  varint(); // remaining length
  field(); // "MQTT"
  const level = buf[i++];
  const flags = buf[i++];
  i += 2; // keep-alive
  // (`i += varint()` would add to the old `i`: varint() moves it.)
  const skip = (n) => (i += n);
  if (level === 5) skip(varint()); // properties
  const clientId = field().toString();
  if (flags & 0x04) {
    if (level === 5) skip(varint()); // will properties
    field();
    field();
  }
  const username = flags & 0x80 ? field().toString() : null;
  const password = flags & 0x40 ? field() : null;
  return { level, clientId, username, password: password?.toString() ?? null, passwordHex: password?.toString("hex") ?? null };
}

/**
 * A scripted MQTT-over-WebSocket peer on 127.0.0.1:0. `connects`: one record per CONNECT
 * (`{ url, level, clientId, username, password, passwordHex }`); `sockets`: WebSocket
 * connections accepted. CONNACK accepts every CONNECT; the first `drops` connections are
 * closed 100 ms later.
 */
async function startPeer() {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: (p) => (p.has("mqtt") ? "mqtt" : false) });
  onCleanup(() => new Promise((r) => wss.close(r)));
  const peer = { connects: [], sockets: 0, drops: 0 };
  wss.on("connection", (ws, req) => {
    peer.sockets++;
    ws.on("message", (data) => {
      const bytes = Buffer.from(data);
      if (bytes[0] === 0xc0) return ws.send(Buffer.from([0xd0, 0])); // PINGREQ
      if (bytes[0] !== 0x10) return; // DISCONNECT, or anything else: nothing to answer
      if (process.env.VERBOSE) console.log("CONNECT", bytes.toString("hex"));
      const c = parseConnect(bytes);
      peer.connects.push({ url: req.url, ...c });
      ws.send(Buffer.from(c.level === 5 ? [0x20, 3, 0, 0, 0] : [0x20, 2, 0, 0]));
      if (peer.drops > 0) {
        peer.drops--;
        setTimeout(() => ws.close(), 100);
      }
    });
  });
  await new Promise((r) => wss.once("listening", r));
  peer.url = `ws://127.0.0.1:${wss.address().port}/mqtt`;
  /** Forgets what was recorded; the next `drops` connections are dropped. */
  peer.reset = (drops = 0) => {
    peer.connects = [];
    peer.sockets = 0;
    peer.drops = drops;
  };
  return peer;
}

async function until(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timeout: ${what}`);
    await sleep(25);
  }
}

/** What `connect(url, opts)` in the page rejected with (`opts` built there by `make`). */
async function rejection(page, url, make) {
  return page.evaluate(
    async ([url, make]) => {
      const opts = new Function(`return (${make})`)()();
      try {
        const c = await window.mqtt.connect(url, { reconnect: false, ...opts });
        await c.end();
        return null;
      } catch (e) {
        return { message: e.message, reasonCode: e.reasonCode };
      }
    },
    [url, make.toString()],
  );
}

const BACKOFF = { initialDelay: 50, maxDelay: 100, jitter: 0 };

async function freshOnEveryAttempt(page, peer, v) {
  peer.reset(1);
  await page.evaluate(
    async ([url, v, backoff]) => {
      const calls = (window.calls = { url: 0, username: 0, password: 0 });
      window.c = await window.mqtt.connect(url, {
        protocolVersion: v,
        clientId: `fresh-${v}`,
        reconnect: backoff,
        transformWsUrl: async (u) => `${u}?token=url-${++calls.url}`,
        username: () => `user-${++calls.username}`,
        password: async () => {
          await new Promise((r) => setTimeout(r, 20));
          return `jwt-${++calls.password}`;
        },
      });
    },
    [peer.url, v, BACKOFF],
  );
  await until(async () => peer.connects.length === 2 && (await page.evaluate(() => window.c.connected)), 10000, `v${v}: the reconnection`);
  const calls = await page.evaluate(() => window.calls);
  await page.evaluate(() => window.c.end());
  const got = peer.connects.map(({ url, username, password }) => ({ url, username, password }));
  const want = [1, 2].map((n) => ({ url: `/mqtt?token=url-${n}`, username: `user-${n}`, password: `jwt-${n}` }));
  check(same(got, want), `v${v}: CONNECTs ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
  check(same(calls, { url: 2, username: 2, password: 2 }), `v${v}: each function once per attempt, called ${JSON.stringify(calls)}`);
  check(peer.connects.every((c) => c.level === v), `v${v}: protocol levels ${peer.connects.map((c) => c.level)}`);
  return `v${v}: transformWsUrl, username() and password() called once per attempt; the reconnection's CONNECT carried user-2/jwt-2 on /mqtt?token=url-2`;
}

async function plainValuesOnEveryAttempt(page, peer) {
  peer.reset(1);
  await page.evaluate(
    async ([url, backoff]) => {
      window.c = await window.mqtt.connect(url, { protocolVersion: 5, clientId: "plain", reconnect: backoff, username: "static", password: new Uint8Array([1, 2, 255]) });
    },
    [peer.url, BACKOFF],
  );
  await until(async () => peer.connects.length === 2 && (await page.evaluate(() => window.c.connected)), 10000, "plain values: the reconnection");
  await page.evaluate(() => window.c.end());
  const got = peer.connects.map(({ url, username, passwordHex }) => [url, username, passwordHex].join(" "));
  check(same(got, ["/mqtt static 0102ff", "/mqtt static 0102ff"]), `plain values: CONNECTs ${JSON.stringify(got)}`);
  return "plain username and Uint8Array password sent unchanged on both attempts";
}

async function failingFirstConnection(page, peer) {
  peer.reset();
  const lines = [];
  for (const [what, make, pattern] of [
    ["password rejects", () => ({ password: () => Promise.reject(new Error("token service down")) }), /password failed: token service down/],
    ["username throws", () => ({ username: () => { throw new Error("no user"); } }), /username failed: no user/],
    ["transformWsUrl rejects", () => ({ transformWsUrl: async () => { throw "offline"; } }), /transformWsUrl failed: offline/],
    ["transformWsUrl gives a number", () => ({ transformWsUrl: () => 42 }), /transformWsUrl must give a string/],
    ["password() gives a number", () => ({ password: async () => 7 }), /password must be \(or give\) a string or a Uint8Array/],
    ["transformWsUrl not a function", () => ({ transformWsUrl: "ws://elsewhere/" }), /transformWsUrl must be a function/],
  ]) {
    const err = await rejection(page, peer.url, make);
    check(err && pattern.test(err.message), `${what}: connect() should reject with ${pattern}, got ${JSON.stringify(err)}`);
    lines.push(`${what}: connect() rejected: ${err.message}`);
  }
  check(peer.sockets === 0, `a failing function must open no socket; the peer saw ${peer.sockets}`);
  return lines;
}

async function failingReconnection(page, peer) {
  peer.reset(1);
  await page.evaluate(
    async ([url, backoff]) => {
      let n = 0;
      window.log = [];
      window.c = await window.mqtt.connect(url, {
        protocolVersion: 5,
        clientId: "flaky",
        reconnect: backoff,
        password: () => {
          n++;
          if (n === 2) throw new Error("token service down");
          return `jwt-${n}`;
        },
      });
      for (const e of ["close", "reconnect", "connect"]) window.c.on(e, () => window.log.push(e));
      window.c.on("error", (e) => window.log.push(`error: ${e.message}`));
    },
    [peer.url, BACKOFF],
  );
  await until(async () => peer.connects.length === 2 && (await page.evaluate(() => window.c.connected)), 10000, "the reconnection after a failed password()");
  const log = await page.evaluate(() => window.log);
  await page.evaluate(() => window.c.end());
  const passwords = peer.connects.map((c) => c.password);
  check(same(passwords, ["jwt-1", "jwt-3"]), `passwords sent ${JSON.stringify(passwords)}, expected jwt-1 then jwt-3`);
  check(peer.sockets === 2, `the failed attempt must open no socket: ${peer.sockets} sockets`);
  const errors = log.filter((l) => l.startsWith("error"));
  check(errors.length === 1 && /password failed: token service down/.test(errors[0]), `error events ${JSON.stringify(log)}`);
  const want = ["close", "reconnect", errors[0], "close", "reconnect", "connect"];
  check(same(log, want), `events ${JSON.stringify(log)}, expected ${JSON.stringify(want)}`);
  return `password() throwing on a reconnection: ${errors[0]}; retried after the backoff, connected with jwt-3`;
}

async function endWhileWaiting(page, peer) {
  peer.reset(1);
  await page.evaluate(
    async ([url, backoff]) => {
      let n = 0;
      window.calls = 0;
      window.log = [];
      window.c = await window.mqtt.connect(url, {
        protocolVersion: 5,
        clientId: "ended",
        reconnect: backoff,
        password: () => {
          window.calls = ++n;
          return n === 1 ? "jwt-1" : new Promise((r) => (window.release = () => r("jwt-late")));
        },
      });
      for (const e of ["connect", "error", "reconnect"]) window.c.on(e, () => window.log.push(e));
    },
    [peer.url, BACKOFF],
  );
  await until(() => page.evaluate(() => window.calls === 2), 10000, "password() called for the reconnection");
  await page.evaluate(async () => {
    await window.c.end();
    window.log.push("ended");
    window.release();
  });
  await sleep(300);
  const log = await page.evaluate(() => window.log);
  const connected = await page.evaluate(() => window.c.connected);
  check(peer.sockets === 1 && peer.connects.length === 1, `after end(), nothing opened: ${peer.sockets} sockets`);
  check(same(log, ["reconnect", "ended"]) && !connected, `after end(): events ${JSON.stringify(log)}, connected ${connected}`);
  return "end() while a reconnection waits for password(): its answer opens nothing";
}

/** The real bridge with a mosquitto password file: alice / secret; it lets the test page's
 * origin (`base`, another port) open WebSockets, as an operator would for an app served
 * elsewhere. */
async function wrongPasswordOnTheBridge(page, base) {
  const dir = await mkdtemp(join(tmpdir(), "client-wasm-credentials-"));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  const passwords = join(dir, "passwords");
  const made = run("mosquitto_passwd", ["-b", "-c", passwords, "alice", "secret"]);
  check((await made.exited) === 0, `mosquitto_passwd failed: ${made.output}`);
  const config = join(dir, "bridge.toml");
  const origin = new URL(base).origin;
  await writeFile(config, `[auth]\npassword_file = ${JSON.stringify(passwords)}\n[server]\nallowed_origins = [${JSON.stringify(origin)}]\n`);
  let bridge;
  try {
    bridge = await spawnBridge(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", "none", "--config", config]);
  } catch (e) {
    throw new Error(`the bridge did not start with [auth] password_file (issue 11's contract): ${e.message}`);
  }
  const lines = [];
  for (const v of [4, 5]) {
    const make = `() => ({ protocolVersion: ${v}, clientId: "wrong-${v}", username: "alice", password: () => "not the password" })`;
    const err = await rejection(page, bridge.ws, make);
    check(err?.reasonCode === 0x86, `v${v}: a wrong password should reject with reasonCode 0x86, got ${JSON.stringify(err)}`);
    check(/bad user name or password/i.test(err.message), `v${v}: the message should say why: ${err.message}`);
    lines.push(`v${v}: wrong password refused: reasonCode 0x86, "${err.message}"`);
    const ok = await page.evaluate(
      async ([url, v]) => {
        const c = await window.mqtt.connect(url, { protocolVersion: v, clientId: `right-${v}`, username: "alice", password: async () => "secret", reconnect: false });
        const connected = c.connected;
        await c.end();
        return connected;
      },
      [bridge.ws, v],
    );
    check(ok, `v${v}: the right password from a function should connect`);
    lines.push(`v${v}: the right password from password() connected`);
  }
  return lines;
}

try {
  const peer = await startPeer();
  const base = await serveStatic([["/pkg/", pkgDir]], { pages: { "/": PAGE } });
  const browser = await launchChromium();
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (process.env.VERBOSE) console.log(`[page] ${m.text()}`);
    if (/panicked|unreachable|RuntimeError/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  await page.goto(base);
  await page.waitForFunction(() => window.ready !== undefined, null, { timeout: 15000 });
  const ready = await page.evaluate(() => window.ready);
  if (ready !== "ok") throw new Error(ready);

  const ok = (lines) => [lines].flat().forEach((line) => console.log(`ok: ${line}`));
  for (const v of [4, 5]) ok(await freshOnEveryAttempt(page, peer, v));
  ok(await plainValuesOnEveryAttempt(page, peer));
  ok(await failingFirstConnection(page, peer));
  ok(await failingReconnection(page, peer));
  ok(await endWhileWaiting(page, peer));
  check(problems.length === 0, `the page reported: ${problems.join("; ")}`);
  ok(await wrongPasswordOnTheBridge(page, base));
  check(problems.length === 0, `the page reported: ${problems.join("; ")}`);
  console.log("credentials test passed");
  await cleanup();
  process.exit(0);
} catch (e) {
  fail(e?.message ?? String(e));
}
