// The page: imports the package exactly as an application would, runs the scenario named by
// `?run=` against the broker at `?ws=`, and leaves the outcome in `window.result`
// ({ log } or { error }) for tests/page.mjs, and on screen.
import "./throttle.js";
import init, { connect } from "/pkg/client_wasm.js";
import { check, hold, seed, within } from "./scenarios.js";

const query = new URLSearchParams(location.search);
const ws = query.get("ws");
const show = (line) => (document.getElementById("log").textContent += `${line}\n`);

const scenarios = {
  async seed() {
    return [...(await seed(connect, ws, 4, "page")), ...(await seed(connect, ws, 5, "page"))];
  },

  // The package inside a dedicated module Worker; the Worker reports, the page checks.
  async worker() {
    const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    const r = await within(
      new Promise((resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => reject(new Error(`the worker failed: ${e.message}`));
        worker.postMessage({ ws });
      }),
      30000,
      "the worker's report",
    );
    worker.terminate();
    if (r.error) throw new Error(`in the worker: ${r.error}`);
    check(r.window === "undefined", `the worker sees a window: typeof window = ${r.window}`);
    const rt = r.roundtrip;
    check(rt.granted.join() === "2", `worker: granted ${rt.granted}, expected [2]`);
    check(rt.acks.join() === "0,0", `worker: publish acks ${rt.acks}, expected PUBACK and PUBCOMP 0`);
    const byQos = (q) => rt.messages.find((m) => m.qos === q);
    check(byQos(1)?.text === "qos 1" && byQos(2)?.text === "qos 2", `worker: messages ${JSON.stringify(rt.messages)}`);
    check(rt.connected && rt.events.length === 0, `worker: keep-alive 1 s: connection lost after 2.5 s (events ${rt.events})`);
    const s = rt.session;
    check(s.connected === true, "worker: session().connected");
    check(
      s.subscriptions.length === 1 && s.subscriptions[0].topic === "worker/rt/#" && s.subscriptions[0].qos === 2,
      `worker: session().subscriptions ${JSON.stringify(s.subscriptions)}`,
    );
    check(s.outgoingInflight.length === 0 && s.incomingAwaitingPubrel.length === 0 && s.queued === 0,
      `worker: session() not settled: ${JSON.stringify(s)}`);
    return [
      "worker: no window; subscribe QoS 2, publish QoS 1 and 2, both back; keep-alive 1 s held 2.5 s",
      `worker: session() ${JSON.stringify({ subscriptions: s.subscriptions, outgoingInflight: s.outgoingInflight, queued: s.queued })}`,
      ...r.seed.map((l) => `worker: seed ${l}`),
    ];
  },

  // Keep-alive 2 s held until the driver, watching the broker meanwhile, calls stopHold().
  async hold() {
    const stop = new Promise((r) => (window.stopHold = r));
    const r = await hold(connect, ws, query.get("id"), stop, (id) => (window.connectedAs = id));
    window.hold = r;
    return [`held ${r.held} ms, connected ${r.connected}, events ${JSON.stringify(r.events)}`];
  },
};

// A CSP that forbids blob: Workers is reported here; the package must fall back to setTimeout.
window.violations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.violations.push({ directive: e.effectiveDirective, blocked: e.blockedURI }),
);

try {
  await init();
  const log = await scenarios[query.get("run")]();
  log.forEach(show);
  window.result = { log };
} catch (e) {
  show(`FAILED: ${e.message}`);
  window.result = { error: e.message ?? String(e) };
}
