// Browser client benchmark: our wasm client (client-wasm/pkg/) against MQTT.js (npm `mqtt`,
// its browser ES module dist/mqtt.esm.js), in one headless Chromium, against one release
// bridge (`--data none`), in one run. Not a test: figures go to docs/benchmarks.md.
//
//   cargo build --release -p bridge && client-wasm/build.sh --no-budget
//   node bench/browser/run.mjs            # the full run (~5 min): 3 repetitions, medians
//   node bench/browser/run.mjs --quick    # smoke check: every scenario once, small (seconds)
//   node bench/browser/run.mjs --profile  # where the time goes (see below)
//
// Every run gets a fresh page with one library on it (bench/browser/index.html ?lib=...;
// bench.js puts both behind the same adapter, so the code around the library calls is
// identical). The two libraries alternate which goes first from one repetition to the next,
// so that they share the machine's noise.
// - "receive QoS q": a publisher outside the browser (this Node process, raw MQTT 3.1.1 over
//   TCP, pre-encoded packets, so it costs the machine as little as possible) sends n
//   numbered 64-byte messages to a topic the measured client subscribes to at QoS q; the page
//   counts them: received/s from the first arrival to the last, loss and duplicates checked
//   by sequence number. At QoS 1 the broker paces the publisher (it holds PUBACKs while the
//   subscriber's queue is full) and loss must be 0 (the run fails otherwise). At QoS 0 the
//   broker instead drops what a slow reader cannot take (beyond 1024 waiting messages), so
//   the publisher paces itself: it stays at most `--window` (1000) messages ahead of the
//   count the page reports every 256 messages. A QoS 0 figure then measures the client, not
//   what the broker dropped.
// - "publish QoS 1": the page publishes n numbered 64-byte messages at QoS 1, at most
//   `--pub-window` (256) unacknowledged, timed from the first publish to the last PUBACK (the
//   last promise resolved): msg/s. 256 is the bridge's receive maximum, which MQTT 3.1.1 has
//   no way to announce: neither library limits what it has in flight at 3.1.1, and the
//   bridge closes a connection that goes over it (0x93), so the window is the page's, the
//   same for both. A raw TCP subscriber in this process (QoS 1, as the reference run's)
//   counts what the broker passed on: every message exactly once, or the run fails.
// - "round trip QoS 1": sequential `publish(qos 1)`, each awaited until its promise resolves
//   at PUBACK: median and p99 (µs), round trips/s.
// - "round trip QoS 0 own": sequential publish at QoS 0 to a topic the client subscribes to,
//   until the message is back.
// - CPU per message / round trip: the renderer's main-thread and whole-process CPU time
//   (DevTools Performance.getMetrics ThreadTime / ProcessTime) over the measured part. On a
//   shared machine this moves much less than msg/s does.
// - "ref": the receive runs with a minimal subscriber in this Node process (no browser), to
//   show what the bridge and the publisher can feed at most.
//
// The page is served with COOP/COEP headers (cross-origin isolated), which gives
// performance.now() 5 µs resolution instead of 100 µs. Chromium runs with
// --enable-precise-memory-info and --expose-gc, so the heap figure is after a full GC.
//
// --profile: a CPU profile (DevTools Profiler, 100 µs sampling) of each library receiving at
// QoS 0 and 1 and doing QoS 1 round trips; prints self time by kind and by function, the
// WebSocket frames each way, and saves the profiles to target/bench-browser/*.cpuprofile.
// For our client it loads a copy of the package with the wasm name section kept
// (target/bench-browser/pkg-names, made here from the wasm-release build client-wasm/build.sh
// left in target/: wasm-bindgen without --remove-name-section, wasm-opt -Oz -g), so wasm
// frames have Rust names.
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { countingSubscriber, makeProgress, publish, RawClient } from "./raw.mjs";
import { allowOrigin, bridgeBin as bridgeBinOf, chromiumBin, cleanup, fail, launchChromium, root, serveStatic, setup, spawnBridge } from "../../tests/support/harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));

// ---- options -----------------------------------------------------------------------------

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const value = (name, dflt) => {
  const i = argv.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) usage(`${name} needs a positive number`);
  return v;
};
function usage(msg) {
  console.error(`run.mjs: ${msg}
usage: node bench/browser/run.mjs [--quick] [--profile] [--reps N] [--n0 N] [--n1 N] [--n-pub N] [--pub-window W] [--rtt-secs S] [--window W] [--only LIST]
  --quick      every scenario once with small counts (a smoke check, seconds)
  --profile    CPU-profile both libraries, print where the time goes
  --reps N     repetitions per library and scenario (default 3; the median is reported)
  --n0 N       messages per QoS 0 receive run (default 200000)
  --n1 N       messages per QoS 1 receive run (default 100000)
  --n-pub N    messages per QoS 1 publish run (default 50000)
  --pub-window W  publish run: messages not yet acknowledged at most (default 256)
  --rtt-secs S seconds per round-trip run (default 3)
  --window W   QoS 0 publisher: messages ahead of the page's count (default 1000)
  --only LIST  some of recv0,recv1,pub1,rtt1,rtt0 (comma-separated; default all)
environment: BRIDGE_BIN (default target/release/bridge), CHROMIUM (default /usr/bin/chromium),
  CLIENT_WASM_PKG (default client-wasm/pkg)`);
  process.exit(2);
}
for (const a of argv) if (a.startsWith("--") && !["--quick", "--profile", "--reps", "--n0", "--n1", "--n-pub", "--pub-window", "--rtt-secs", "--window", "--only"].includes(a)) usage(`unknown option ${a}`);

const quick = flag("--quick");
const onlyAt = argv.indexOf("--only");
const only = onlyAt < 0 ? null : (argv[onlyAt + 1] ?? "").split(",");
if (only && !only.every((k) => ["recv0", "recv1", "pub1", "rtt1", "rtt0"].includes(k))) usage("--only takes recv0,recv1,pub1,rtt1,rtt0");
const profile = flag("--profile");
const cfg = {
  reps: value("--reps", quick ? 1 : 3),
  n0: value("--n0", quick ? 5000 : 200_000),
  n1: value("--n1", quick ? 5000 : 100_000),
  nPub: value("--n-pub", quick ? 5000 : 50_000),
  // The bridge's receive maximum: MQTT 3.1.1 cannot announce it, and the bridge closes a
  // connection with more QoS 1 publishes unacknowledged (0x93), so neither library may.
  pubWindow: value("--pub-window", 256),
  rttSecs: value("--rtt-secs", quick ? 0.3 : 3),
  rttWarmup: quick ? 20 : 200,
  window: value("--window", 1000),
};
const bridgeBin = bridgeBinOf("release");
// CLIENT_WASM_PKG: another build of the package, to compare a change (A/B) in the same way.
const builtPkgDir = process.env.CLIENT_WASM_PKG ?? join(root, "client-wasm", "pkg");
// The package is copied here at start, so that a rebuild during the run cannot mix versions.
const pkgDir = join(root, "target", "bench-browser", "pkg");
const mqttDist = join(root, "node_modules", "mqtt", "dist");
const namedPkgDir = join(root, "target", "bench-browser", "pkg-names");
const LIBS = ["wasm", "mqttjs"];
// Whole-run limit: a hung run fails with a message instead of hanging a terminal or CI.
const RUN_TIMEOUT_MS = (quick ? 120 : 1800) * 1000;

for (const [path, fix] of [
  [bridgeBin, "cargo build --release -p bridge"],
  [join(builtPkgDir, "client_wasm.js"), "client-wasm/build.sh --no-budget"],
  [join(mqttDist, "mqtt.esm.js"), "npm ci (at the repository root)"],
  [chromiumBin, "apt-get install chromium"],
]) {
  if (!existsSync(path)) {
    const shown = path.startsWith(root) ? relative(root, path) : path;
    console.error(`run.mjs: ${shown} is missing: run \`${fix}\` first`);
    process.exit(1);
  }
}

setup("run.mjs", RUN_TIMEOUT_MS);

// ---- the bridge and the page -------------------------------------------------------------

/**
 * Starts the release bridge on ephemeral ports, letting pages of `base` (the static server)
 * open WebSockets to it; resolves with its ws URL and TCP address.
 */
async function startBridge(base) {
  const args = ["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", "none", ...(await allowOrigin(base))];
  const b = await spawnBridge(args, { bin: bridgeBin, env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" } });
  // VERBOSE: the bridge's log too (why it closed a connection, say).
  if (process.env.VERBOSE) for (const s of [b.child.stdout, b.child.stderr]) s.on("data", (d) => process.stderr.write(`[bridge] ${d}`));
  return { ws: b.ws, host: b.mqtt.slice(0, b.mqtt.lastIndexOf(":")), port: b.mqttPort, args };
}

/**
 * Serves bench/browser/ at /, a client-wasm package at /pkg/ and MQTT.js's dist/ at /mqtt/,
 * cross-origin isolated: performance.now() at 5 µs instead of 100 µs.
 */
function startStatic(pkg) {
  const mounts = [
    ["/pkg/", pkg],
    ["/mqtt/", mqttDist],
    ["/", here],
  ];
  const headers = () => ({
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
    "cross-origin-resource-policy": "same-origin",
  });
  return serveStatic(mounts, { headers });
}

// ---- runs --------------------------------------------------------------------------------

let runId = 0;

/**
 * Runs `fn(page, cdp)` on a fresh page (own browser context) with `lib` loaded; QoS 0
 * progress reports go to `holder.current`.
 */
async function withPage(browser, base, lib, holder, fn) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    // Reports from the page to the QoS 0 publisher, one call per 256 messages: a raw CDP
    // binding (a native function that only posts an event). Playwright's exposeFunction
    // cost the page about 0.35 ms a call here (it showed in the profiles), this ~0.1 ms.
    const cdp = await context.newCDPSession(page);
    cdp.on("Runtime.bindingCalled", (e) => e.name === "benchProgress" && holder.current && holder.current.report(Number(e.payload)));
    await cdp.send("Runtime.enable");
    await cdp.send("Runtime.addBinding", { name: "benchProgress" });
    await cdp.send("Performance.enable");
    page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
    page.on("console", (m) => process.env.VERBOSE && console.log(`[page] ${m.text()}`));
    await page.goto(`${base}?lib=${lib}${profile ? "&frames=1" : ""}`);
    await page.waitForFunction(() => window.ready !== undefined, null, { timeout: 20000 });
    const ready = await page.evaluate(() => window.ready);
    if (ready !== "ok") throw new Error(ready);
    // The heap with the library loaded and nothing connected: its own baseline.
    const loadedHeapBytes = await page.evaluate(() => window.bench.settledHeap());
    return { ...(await fn(page, cdp)), loadedHeapBytes };
  } finally {
    await context.close();
  }
}

/**
 * CPU seconds the page's renderer has used so far: its main thread (`ThreadTime`, where both
 * libraries run) and the whole renderer process (`ProcessTime`, counted in 10 ms steps, so
 * only meaningful over long runs). They move less than msg/s when other work shares the
 * machine, which makes them the steadier comparison.
 */
async function cpu(cdp) {
  const { metrics } = await cdp.send("Performance.getMetrics");
  const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
  return { thread: m.ThreadTime, process: m.ProcessTime };
}

/** CPU µs per item (message or round trip) between two `cpu()` readings. */
const cpuPer = (a, b, items) => ({ threadUs: ((b.thread - a.thread) * 1e6) / items, processUs: ((b.process - a.process) * 1e6) / items });

/** One receive run in the browser: subscribe, publish n, collect. */
async function receiveRun(browser, base, bridge, lib, qos, n, progressHolder, cdpProfile) {
  const id = ++runId;
  const topic = `bench/recv/${id}`;
  const progress = makeProgress();
  progressHolder.current = progress;
  return withPage(browser, base, lib, progressHolder, async (page, cdp) => {
    await page.evaluate(([ws, cid, t, q, count]) => window.bench.recvStart(ws, cid, t, q, count), [bridge.ws, `bench-${lib}-${id}`, topic, qos, n]);
    const pub = await RawClient.connect(bridge.host, bridge.port, `bench-pub-${id}`);
    let stopProfile = null;
    if (cdpProfile) stopProfile = await cdpProfile(page, `${lib}-recv-qos${qos}`);
    const before = await cpu(cdp);
    const pubSecs = await publish(pub, topic, qos, n, progress, cfg.window);
    const r = await page.evaluate((idle) => window.bench.recvWait(idle), qos === 0 ? 1500 : 5000);
    Object.assign(r, cpuPer(before, await cpu(cdp), Math.max(1, r.received)));
    if (stopProfile) r.profile = await stopProfile();
    if (profile) r.frames = await page.evaluate(() => window.bench.frames());
    await pub.end();
    Object.assign(r, await page.evaluate(() => window.bench.finish()));
    r.publishSeconds = pubSecs;
    return r;
  });
}

/** The reference: the same receive run with a raw TCP subscriber in this process. */
async function referenceRun(bridge, qos, n) {
  const id = ++runId;
  const topic = `bench/recv/${id}`;
  const progress = makeProgress();
  const sub = await countingSubscriber(bridge.host, bridge.port, `bench-ref-${id}`, topic, qos, n, progress);
  const pub = await RawClient.connect(bridge.host, bridge.port, `bench-refpub-${id}`);
  await publish(pub, topic, qos, n, progress, cfg.window);
  await pub.end();
  return sub.wait(1500);
}

/**
 * One publish run in the browser: the page publishes n numbered messages at QoS 1 (at most
 * `cfg.pubWindow` unacknowledged) and times them to the last PUBACK; a counting subscriber in
 * this process (raw TCP, QoS 1) checks that the broker took every one of them exactly once.
 */
async function publishRun(browser, base, bridge, lib, n) {
  const id = ++runId;
  const topic = `bench/pub/${id}`;
  return withPage(browser, base, lib, {}, async (page, cdp) => {
    await page.evaluate(([ws, cid]) => window.bench.pubStart(ws, cid), [bridge.ws, `bench-${lib}-${id}`]);
    const sub = await countingSubscriber(bridge.host, bridge.port, `bench-pubsub-${id}`, topic, 1, n, null);
    const before = await cpu(cdp);
    const r = await page.evaluate(([t, count, w]) => window.bench.pubRun(t, count, w), [topic, n, cfg.pubWindow]);
    Object.assign(r, cpuPer(before, await cpu(cdp), n));
    const got = await sub.wait(1500);
    Object.assign(r, { received: got.received, lost: got.lost, duplicates: got.duplicates });
    Object.assign(r, await page.evaluate(() => window.bench.finish()));
    return r;
  });
}

async function roundTripRun(browser, base, bridge, lib, mode, cdpProfile) {
  const id = ++runId;
  return withPage(browser, base, lib, {}, async (page, cdp) => {
    await page.evaluate(([ws, cid, t, m, w]) => window.bench.rttStart(ws, cid, t, m, w), [bridge.ws, `bench-${lib}-${id}`, `bench/rtt/${id}`, mode, cfg.rttWarmup]);
    const stopProfile = cdpProfile ? await cdpProfile(page, `${lib}-rtt-${mode}`) : null;
    const before = await cpu(cdp);
    const r = await page.evaluate((s) => window.bench.rttRun(s), cfg.rttSecs);
    Object.assign(r, cpuPer(before, await cpu(cdp), r.n));
    if (stopProfile) r.profile = await stopProfile();
    if (profile) r.frames = await page.evaluate(() => window.bench.frames());
    Object.assign(r, await page.evaluate(() => window.bench.finish()));
    return r;
  });
}

// ---- sizes -------------------------------------------------------------------------------

const gz9 = (file) => {
  const r = spawnSync("gzip", ["-9", "-c", file], { maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`gzip -9 ${file} failed`);
  return r.stdout.length;
};

/** Everything the page loads of each library, raw and gzip -9. */
function sizes() {
  const files = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.(js|wasm)$/.test(name)) files.push(p);
    }
  };
  walk(pkgDir);
  const sum = (list) => list.reduce((a, f) => ({ raw: a.raw + statSync(f).size, gz: a.gz + gz9(f) }), { raw: 0, gz: 0 });
  const wasmFiles = files.map((f) => ({ file: relative(pkgDir, f), raw: statSync(f).size, gz: gz9(f) }));
  const esm = join(mqttDist, "mqtt.esm.js");
  const mqttVersion = JSON.parse(readFileSync(join(root, "node_modules", "mqtt", "package.json"), "utf8")).version;
  return { wasm: { ...sum(files), files: wasmFiles }, mqttjs: { raw: statSync(esm).size, gz: gz9(esm), file: relative(root, esm), version: mqttVersion } };
}

// ---- profiling ---------------------------------------------------------------------------

/** Builds target/bench-browser/pkg-names: the package with the wasm name section kept. */
function buildNamedPkg() {
  const wasmIn = join(root, "target", "wasm32-unknown-unknown", "wasm-release", "client_wasm.wasm");
  if (!existsSync(wasmIn)) throw new Error(`${relative(root, wasmIn)} is missing: run client-wasm/build.sh first`);
  mkdirSync(namedPkgDir, { recursive: true });
  const run = (cmd, args) => {
    const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit" });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed`);
  };
  run("wasm-bindgen", [wasmIn, "--target", "web", "--out-dir", namedPkgDir, "--out-name", "client_wasm"]);
  const wasm = join(namedPkgDir, "client_wasm_bg.wasm");
  run(join(root, "node_modules", ".bin", "wasm-opt"), [
    "-Oz", "-g", "--enable-bulk-memory", "--enable-reference-types", "--enable-nontrapping-float-to-int",
    "--enable-sign-ext", "--enable-mutable-globals", "--enable-multivalue", wasm, "-o", wasm,
  ]);
}

/** Starts the DevTools profiler on `page`; the returned function stops it and summarises. */
async function cdpProfiler(page, name) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: 100 });
  await cdp.send("Profiler.start");
  return async () => {
    const { profile } = await cdp.send("Profiler.stop");
    // Kept for a closer look: DevTools' Performance panel opens .cpuprofile files.
    const file = join(root, "target", "bench-browser", `${name}.cpuprofile`);
    await writeFile(file, JSON.stringify(profile));
    return { ...summarise(profile), file: relative(root, file) };
  };
}

/** Self time per function (name and file), the top entries, as shares of the sampled time. */
function summarise(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = profile.timeDeltas;
  let total = 0;
  profile.samples.forEach((id, i) => {
    const n = byId.get(id);
    const f = n.callFrame;
    const file = f.url ? f.url.replace(/^.*\//, "") : "";
    const key = `${f.functionName || "(anonymous)"}${file ? ` [${file}${f.lineNumber >= 0 && !file.endsWith(".wasm") ? `:${f.lineNumber + 1}` : ""}]` : ""}`;
    const d = dt[i] ?? 0;
    total += d;
    self.set(key, (self.get(key) ?? 0) + d);
  });
  // "(idle)" is the main thread waiting; everything else, "(program)" (the browser's own
  // native work: event dispatch, WebSocket frames) and "(garbage collector)" included, is busy.
  const busy = total - (self.get("(idle)") ?? 0);
  self.delete("(idle)");
  const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 30);
  const categories = new Map();
  for (const [k, us] of self) {
    const c = category(k);
    categories.set(c, (categories.get(c) ?? 0) + us);
  }
  const pct = (entries) => [...entries].sort((a, b) => b[1] - a[1]).map(([k, us]) => ({ fn: k, ms: us / 1000, pctBusy: (100 * us) / busy }));
  return { totalMs: total / 1000, busyMs: busy / 1000, top: pct(top), categories: pct(categories) };
}

/** Where a function's self time goes, in words. */
function category(key) {
  if (key.includes(".wasm]")) return "wasm code (Rust: codec, state machine, glue)";
  if (key.includes("[client_wasm.js")) return "wasm-bindgen JS glue";
  if (key.includes("[mqtt.esm.js")) return "MQTT.js";
  if (key.includes("[bench.js")) return "the benchmark's own message handler";
  if (key.includes("[") || key.startsWith("(anonymous) [")) return "other scripts";
  if (key === "decode") return "TextDecoder.decode (strings out of wasm memory)";
  if (key === "send") return "WebSocket.send";
  if (key === "wasm-to-js" || key === "js-to-wasm") return "wasm <-> JS transitions";
  if (key === "(program)") return "(program): the browser's native work (events, frames)";
  if (key === "(garbage collector)") return "garbage collector";
  return "other built-ins (no script)";
}

// ---- reporting ---------------------------------------------------------------------------

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (x) => Math.round(x).toLocaleString("en-US").replace(/,/g, " ");
const mb = (b) => (b == null ? "n/a" : `${(b / 1048576).toFixed(1)} MB`);

// ---- main --------------------------------------------------------------------------------

async function main() {
  rmSync(pkgDir, { recursive: true, force: true });
  cpSync(builtPkgDir, pkgDir, { recursive: true });
  const load = (await readFile("/proc/loadavg", "utf8").catch(() => "")).split(" ").slice(0, 3).join(" ");
  // --profile with CLIENT_WASM_PKG: that package as it is (build it with names for Rust frames).
  const named = profile && !process.env.CLIENT_WASM_PKG;
  if (named) buildNamedPkg();
  const base = await startStatic(named ? namedPkgDir : pkgDir);
  // The page and the bridge are on different ports, so different origins: the bridge must
  // allow the page's, or it refuses every WebSocket.
  const bridge = await startBridge(base);
  const browser = await launchChromium(["--enable-precise-memory-info", "--js-flags=--expose-gc"]);
  const chromeVersion = browser.version();
  const s = sizes();
  console.log(`browser client benchmark: Chromium ${chromeVersion}, MQTT.js ${s.mqttjs.version}, bridge ${relative(root, bridgeBin)} ${bridge.args.join(" ")} (memory store, nothing persisted), MQTT 3.1.1`);
  console.log(`load average before: ${load}; ${quick ? "--quick: " : ""}reps ${cfg.reps}, receive n = ${cfg.n0} (QoS 0) / ${cfg.n1} (QoS 1), 64 B payloads, QoS 0 window ${cfg.window}, publish n = ${cfg.nPub} (QoS 1, window ${cfg.pubWindow}), round trips ${cfg.rttSecs} s each`);
  console.log(`size (gzip -9): ours ${fmt(s.wasm.gz)} B (${s.wasm.files.map((f) => `${f.file.replace(/^snippets\/[^/]+\//, "snippets/")} ${fmt(f.gz)}`).join(", ")}), MQTT.js ${s.mqttjs.file.replace("node_modules/mqtt/", "")} ${fmt(s.mqttjs.gz)} B; raw ${fmt(s.wasm.raw)} B vs ${fmt(s.mqttjs.raw)} B`);
  const holder = {};

  if (profile) {
    for (const lib of LIBS) {
      for (const what of ["recv0", "recv1", "rtt1"]) {
        const r = what === "rtt1"
          ? await roundTripRun(browser, base, bridge, lib, "qos1", cdpProfiler)
          : await receiveRun(browser, base, bridge, lib, what === "recv0" ? 0 : 1, what === "recv0" ? cfg.n0 : cfg.n1, holder, cdpProfiler);
        const p = r.profile;
        const figure = what === "rtt1"
          ? `round trip QoS 1: median ${r.medianUs.toFixed(0)} µs, ${fmt(r.perSecond)}/s`
          : `receive QoS ${what === "recv0" ? 0 : 1}: ${fmt(r.perSecond)} msg/s (${r.progressMs.toFixed(0)} ms in progress reports)`;
        const items = what === "rtt1" ? r.n + cfg.rttWarmup : r.received;
        console.log(`\nprofile ${lib} ${figure}, profiler on; ${p.busyMs.toFixed(0)} ms busy of ${p.totalMs.toFixed(0)} ms sampled; WebSocket frames in ${r.frames.in}, out ${r.frames.out} (for ${items} ${what === "rtt1" ? "round trips" : "messages"} and set-up)`);
        console.log(`  raw profile: ${p.file}; self time by kind:`);
        for (const t of p.categories) console.log(`  ${t.pctBusy.toFixed(1).padStart(5)} %  ${t.ms.toFixed(1).padStart(8)} ms  ${t.fn}`);
        console.log("  by function:");
        for (const t of p.top.slice(0, 25)) console.log(`  ${t.pctBusy.toFixed(1).padStart(5)} %  ${t.ms.toFixed(1).padStart(8)} ms  ${t.fn}`);
      }
    }
    return;
  }

  const scenarios = [
    { key: "recv0", label: "receive QoS 0", run: (lib) => receiveRun(browser, base, bridge, lib, 0, cfg.n0, holder) },
    { key: "recv1", label: "receive QoS 1", run: (lib) => receiveRun(browser, base, bridge, lib, 1, cfg.n1, holder) },
    { key: "pub1", label: "publish QoS 1 (to the last PUBACK)", run: (lib) => publishRun(browser, base, bridge, lib, cfg.nPub) },
    { key: "rtt1", label: "round trip QoS 1 (PUBACK)", run: (lib) => roundTripRun(browser, base, bridge, lib, "qos1") },
    { key: "rtt0", label: "round trip QoS 0 own subscription", run: (lib) => roundTripRun(browser, base, bridge, lib, "qos0-own") },
  ];
  if (only) scenarios.splice(0, scenarios.length, ...scenarios.filter((sc) => only.includes(sc.key)));
  const results = {};
  const failures = [];
  for (let rep = 0; rep < cfg.reps; rep++) {
    // Alternate which library goes first, so neither always runs on a warmer or a busier machine.
    const order = rep % 2 === 0 ? LIBS : [...LIBS].reverse();
    for (const sc of scenarios) {
      for (const lib of order) {
        const r = await sc.run(lib);
        (results[`${sc.key}/${lib}`] ??= []).push(r);
        const what = sc.key.startsWith("recv")
          ? `${fmt(r.perSecond)} msg/s over ${r.seconds.toFixed(2)} s, ${r.received} received, lost ${r.lost}, duplicates ${r.duplicates}`
          : sc.key === "pub1"
          ? `${fmt(r.perSecond)} msg/s over ${r.seconds.toFixed(2)} s, ${r.acked} acknowledged, the broker passed on ${r.received} (lost ${r.lost}, duplicates ${r.duplicates})`
          : `median ${r.medianUs.toFixed(0)} µs, p99 ${r.p99Us.toFixed(0)} µs, ${fmt(r.perSecond)} round trips/s (n ${r.n})`;
        const per = sc.key.startsWith("recv") || sc.key === "pub1" ? "msg" : "round trip";
        console.log(`rep ${rep + 1} ${sc.label.padEnd(34)} ${lib.padEnd(6)} ${what}; CPU/${per} main thread ${r.threadUs.toFixed(1)} µs, renderer ${r.processUs.toFixed(1)} µs; heap ${mb(r.heapBytes)}${r.wasmMemoryBytes ? `, wasm memory ${mb(r.wasmMemoryBytes)}` : ""}`);
        if (sc.key === "recv1" && (r.lost !== 0 || r.foreign !== 0)) failures.push(`${lib} receive QoS 1 rep ${rep + 1}: ${r.lost} lost`);
        if (sc.key === "pub1" && (r.lost !== 0 || r.duplicates !== 0)) failures.push(`${lib} publish QoS 1 rep ${rep + 1}: the broker passed on ${r.received} of ${r.n} (lost ${r.lost}, duplicates ${r.duplicates})`);
        if (sc.key.startsWith("recv") && r.received === 0) failures.push(`${lib} ${sc.label} rep ${rep + 1}: nothing received`);
      }
      if (sc.key.startsWith("recv")) {
        const qos = sc.key === "recv0" ? 0 : 1;
        const r = await referenceRun(bridge, qos, qos === 0 ? cfg.n0 : cfg.n1);
        (results[`${sc.key}/ref`] ??= []).push(r);
        console.log(`rep ${rep + 1} ${sc.label.padEnd(34)} ref    ${fmt(r.perSecond)} msg/s over ${r.seconds.toFixed(2)} s (raw TCP subscriber in Node), lost ${r.lost}`);
      }
    }
  }

  console.log(`\nmedians of ${cfg.reps} run(s) (ratio: ours / MQTT.js; above 1 = ours better for rates, below 1 = ours better for times and CPU):`);
  console.log("| measurement | ours (wasm) | MQTT.js | ratio |");
  console.log("|---|---|---|---|");
  const row = (label, w, m, f) => console.log(`| ${label} | ${f(w)} | ${f(m)} | ${(w / m).toFixed(2)} |`);
  const med = (rs, key) => median(rs.map((r) => r[key]));
  const us = (x) => `${x.toFixed(1)} µs`;
  for (const sc of scenarios) {
    const w = results[`${sc.key}/wasm`], m = results[`${sc.key}/mqttjs`];
    if (sc.key.startsWith("recv")) {
      const lost = (rs) => rs.reduce((x, r) => x + r.lost, 0);
      console.log(`| ${sc.label}, msg/s | ${fmt(med(w, "perSecond"))} (lost ${lost(w)}) | ${fmt(med(m, "perSecond"))} (lost ${lost(m)}) | ${(med(w, "perSecond") / med(m, "perSecond")).toFixed(2)} |`);
      row(`${sc.label}, main-thread CPU per message`, med(w, "threadUs"), med(m, "threadUs"), us);
      row(`${sc.label}, renderer CPU per message`, med(w, "processUs"), med(m, "processUs"), us);
    } else if (sc.key === "pub1") {
      row(`${sc.label}, msg/s`, med(w, "perSecond"), med(m, "perSecond"), fmt);
      row(`${sc.label}, main-thread CPU per message`, med(w, "threadUs"), med(m, "threadUs"), us);
      row(`${sc.label}, renderer CPU per message`, med(w, "processUs"), med(m, "processUs"), us);
    } else {
      row(`${sc.label}, median`, med(w, "medianUs"), med(m, "medianUs"), (x) => `${x.toFixed(0)} µs`);
      row(`${sc.label}, p99`, med(w, "p99Us"), med(m, "p99Us"), (x) => `${x.toFixed(0)} µs`);
      row(`${sc.label}, round trips/s`, med(w, "perSecond"), med(m, "perSecond"), fmt);
      row(`${sc.label}, main-thread CPU per round trip`, med(w, "threadUs"), med(m, "threadUs"), us);
    }
  }
  for (const key of ["recv0", "recv1"]) {
    const ref = results[`${key}/ref`];
    if (!ref) continue;
    console.log(`reference (raw TCP subscriber in Node) ${key === "recv0" ? "QoS 0" : "QoS 1"}: ${fmt(median(ref.map((r) => r.perSecond)))} msg/s`);
  }
  const all = (lib) => scenarios.flatMap((sc) => results[`${sc.key}/${lib}`]);
  const heap = (lib) => median(all(lib).map((r) => r.heapBytes ?? 0));
  const loaded = (lib) => median(all(lib).map((r) => r.loadedHeapBytes ?? 0));
  console.log(`JS heap after GC, median of all runs: with the library loaded, before connecting: ours ${mb(loaded("wasm"))}, MQTT.js ${mb(loaded("mqttjs"))}; connected, after a run: ours ${mb(heap("wasm"))} + wasm linear memory ${mb(Math.max(...all("wasm").map((r) => r.wasmMemoryBytes)))} (largest), MQTT.js ${mb(heap("mqttjs"))}`);
  console.log(`load average after: ${(await readFile("/proc/loadavg", "utf8").catch(() => "")).split(" ").slice(0, 3).join(" ")}`);
  if (failures.length) throw new Error(failures.join("; "));
}

try {
  await main();
  await cleanup();
  process.exit(0);
} catch (e) {
  fail(e && e.stack ? e.stack : String(e));
}
