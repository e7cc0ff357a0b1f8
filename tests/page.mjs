// The npm package client-wasm/pkg/ used by a plain web page (tests/page/), as a JavaScript
// developer would: `import init, { connect } from "/pkg/client_wasm.js"` in a module script,
// and in a dedicated module Worker. Debian's headless Chromium (playwright-core), a real
// bridge started here on 127.0.0.1:0, a small static server for the page and the package.
//
// Scenarios, each in its own tab, all at once (so the whole takes about as long as the
// longest, the 8 s keep-alive hold):
// - seed: clean = false keeps what was published while the device was away, clean = true
//   does not; MQTT 3.1.1 and 5.0.
// - worker: the package inside a module Worker: QoS 1 and 2 round trip, keep-alive, session(),
//   and the seed scenario once.
// - keep-alive under throttling: the page's setTimeout fires 10 s late (as Chrome's intensive
//   throttling of hidden pages makes it, up to a minute), keep-alive 2 s (the broker drops
//   at 3 s [MQTT-3.1.2-24]). The package's timers tick in a Worker, so the client stays
//   connected, as the broker's API confirms throughout. The control is the same page without
//   `Worker`: the package falls back to the page's setTimeout and the broker drops it, which
//   shows that the check can fail.
// - CSP: a page whose Content-Security-Policy forbids blob: Workers; the package falls back to
//   setTimeout and keeps the connection alive.
//
// Usage: node tests/page.mjs   (after `cargo build -p bridge` and `client-wasm/build.sh`).
// Exits non-zero, naming the failed check, on any failure.
import { join } from "node:path";
import { allowOrigin, cleanup, fail, launchChromium, root, serveStatic, setup, spawnBridge } from "./support/harness.mjs";

const pageDir = join(root, "tests", "page");
const pkgDir = join(root, "client-wasm", "pkg");
const TEST_TIMEOUT_MS = 90_000;
/** How long the throttled page must stay connected. */
const HOLD_MS = 8_000;
/** How late the throttled page's setTimeout fires. */
const THROTTLE_MS = 10_000;
setup("page test", TEST_TIMEOUT_MS);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const check = (cond, what) => {
  if (!cond) throw new Error(what);
};

/**
 * The broker's view of a session: `GET /api/v1/sessions/{id}`; null once it is gone (a clean
 * session ends with its connection).
 */
async function brokerSession(http, id) {
  const res = await fetch(`${http}/api/v1/sessions/${encodeURIComponent(id)}`);
  if (res.status === 404) return null;
  check(res.ok, `GET /api/v1/sessions/${id}: HTTP ${res.status}`);
  return res.json();
}

/**
 * Waits until `fn` is true in the page, asking from here: Playwright's own polling
 * (waitForFunction) may run on the page's setTimeout, which the throttled pages slow down.
 */
async function until(page, fn, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await page.evaluate(fn))) {
    if (Date.now() > deadline) throw new Error(`timeout: ${what}`);
    await sleep(50);
  }
}

/** Opens `query` on the test page in a new tab; `page.result()` waits for its outcome. */
async function open(browser, base, name, query) {
  const page = await browser.newPage();
  const errors = [];
  page.on("console", (m) => process.env.VERBOSE && console.log(`[${name}] ${m.text()}`));
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${base}?${new URLSearchParams(query)}`);
  page.result = async (ms) => {
    try {
      await until(page, () => window.result !== undefined, ms, "result");
    } catch {
      throw new Error(`${name}: no result within ${ms} ms${errors.length ? `; page errors: ${errors.join("; ")}` : ""}`);
    }
    const r = await page.evaluate(() => window.result);
    if (r.error) throw new Error(`${name}: ${r.error}`);
    return r.log.map((l) => `${name}: ${l}`);
  };
  return page;
}

/**
 * Runs the keep-alive hold on a page and watches the broker's side meanwhile (every 200 ms),
 * until the broker has had the connection for HOLD_MS (then the page is told to stop) or the
 * page lost it. Resolves with what the page saw (`window.hold`) and the broker's views.
 */
async function hold(browser, base, http, ws, name, id, extra) {
  const page = await open(browser, base, name, { run: "hold", ws, id, ...extra });
  await until(page, () => window.connectedAs !== undefined, 15000, `${name}: connected`);
  // `at`: ms since the broker accepted the connection (its connected_at_ms, same clock).
  const views = [];
  let since;
  while (!(await page.evaluate(() => window.result !== undefined))) {
    const s = await brokerSession(http, id);
    since ??= s?.connected_at_ms;
    views.push({ at: Date.now() - since, connected: s?.connected ?? false, since: s?.connected_at_ms });
    if (views.at(-1).at >= HOLD_MS) {
      await page.evaluate(() => window.stopHold());
      break;
    }
    await sleep(200);
  }
  const log = await page.result(10000);
  const seen = await page.evaluate(() => ({ hold: window.hold, violations: window.violations }));
  return { log, views, ...seen };
}

try {
  // tests/page/ at /, the package at /pkg/. A page asked for with `?csp` gets a
  // Content-Security-Policy that allows same-origin Workers only (no blob:). The bridge lets
  // that origin connect.
  const base = await serveStatic(
    [
      ["/pkg/", pkgDir],
      ["/", pageDir],
    ],
    { headers: (url) => (url.searchParams.has("csp") ? { "content-security-policy": "worker-src 'self'" } : {}) },
  );
  const { http, ws } = await spawnBridge(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", "none", ...(await allowOrigin(base))]);
  const browser = await launchChromium();
  const started = Date.now();

  const seed = open(browser, base, "seed", { run: "seed", ws }).then((p) => p.result(30000));
  const worker = open(browser, base, "worker", { run: "worker", ws }).then((p) => p.result(45000));

  // Throttled page, timers in the package's Worker: connected throughout.
  const throttled = hold(browser, base, http, ws, "throttled", "ka-worker-timer", { throttle: THROTTLE_MS }).then((r) => {
    check(r.hold.connected && r.hold.events.length === 0, `throttled: the connection was lost: ${JSON.stringify(r.hold.events)}`);
    const since = r.views[0]?.since;
    const down = r.views.filter((v) => !v.connected || v.since !== since);
    check(r.views.length >= 5 && down.length === 0,
      `throttled: the broker saw the client disconnected or reconnected: ${JSON.stringify(down.length ? down : r.views)}`);
    check(r.views.at(-1).at >= HOLD_MS, `throttled: the broker was last looked at ${r.views.at(-1).at} ms after the connection`);
    return [
      ...r.log,
      `throttled: setTimeout ${THROTTLE_MS} ms late, keep-alive 2 s: connected ${r.hold.held} ms, ` +
        `the broker saw it connected, never reconnected, in ${r.views.length} looks from ${r.views[0].at} to ${r.views.at(-1).at} ms`,
    ];
  });

  // The control: the same throttling, no Worker, so the page's late setTimeout drives the
  // keep-alive and the broker drops the client: 1.5 times the keep-alive without a packet
  // [MQTT-3.1.2-24], told with DISCONNECT 0x8D Keep Alive timeout (5.0).
  const control = hold(browser, base, http, ws, "control", "ka-no-worker", { throttle: THROTTLE_MS, noworker: "" }).then((r) => {
    const close = r.hold.events.find((e) => e.event === "close");
    check(close, `control: without the Worker timer the throttled client was not dropped: ${JSON.stringify(r.hold)}`);
    // Dropped for keep-alive: at 1.5 x 2 s after its last packet, before its late PINGREQ.
    check(close.at >= 2000 && close.at < 1500 + THROTTLE_MS, `control: dropped at ${close.at} ms, expected about 3000 ms`);
    const error = r.hold.events.find((e) => e.event === "error");
    check(error?.reasonCode === 0x8d, `control: expected DISCONNECT 0x8D (Keep Alive timeout), got ${JSON.stringify(error)}`);
    return [...r.log, `control (no Worker): dropped by the broker after ${close.at} ms: ${error.message}`];
  });

  // CSP forbids blob: Workers: the package must notice and fall back to setTimeout.
  const csp = hold(browser, base, http, ws, "csp", "ka-csp", { csp: "" }).then((r) => {
    const blocked = r.violations.filter((v) => v.directive === "worker-src" && v.blocked === "blob");
    check(blocked.length > 0, `csp: no blob: Worker was refused (violations ${JSON.stringify(r.violations)})`);
    check(r.hold.connected && r.hold.events.length === 0,
      `csp: the connection was lost with the setTimeout fallback: ${JSON.stringify(r.hold.events)}`);
    check(r.views.every((v) => v.connected), `csp: the broker saw the client disconnected: ${JSON.stringify(r.views)}`);
    return [...r.log, "csp: the blob: Worker was refused; the setTimeout fallback kept the connection alive"];
  });

  const results = await Promise.allSettled([seed, worker, throttled, control, csp]);
  for (const r of results) if (r.status === "fulfilled") for (const line of r.value) console.log(`ok: ${line}`);
  const errors = results.filter((r) => r.status === "rejected").map((r) => r.reason?.message ?? String(r.reason));
  if (errors.length) throw new Error(errors.join("\n  "));
  console.log(`page test passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  await cleanup();
  process.exit(0);
} catch (e) {
  fail(e?.message ?? String(e));
}
