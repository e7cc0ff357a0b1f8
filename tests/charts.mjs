// End-to-end test of the dashboard's charts (web/charts.js, web/trends.js): first the series
// and the rate in Node (a bounded ring buffer, a counter that goes down), then a real bridge,
// headless Chromium and MQTT.js clients. A publisher sends R messages a second for 10 s to two
// subscribers; the chart's in-rate must be within 20 % of R and its out-rate within 20 % of the
// deliveries the subscribers counted. An offline persistent session's queue chart must rise
// with each message and fall to 0 when it returns. The bridge is restarted on the same ports:
// its counters start again from 0, and the chart breaks its line instead of drawing a negative
// or huge rate. The charts draw at most once per animation frame. Screenshots go to
// tests/artifacts/charts-*.png.
//
// Usage: node tests/charts.mjs   (after `cargo build -p bridge`). Exits non-zero, naming the
// failed check, on any failure.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import mqtt from "mqtt";
import { check, cleanup, fail, launchChromium, onCleanup, openPage, root, setup, spawnBridge } from "./support/harness.mjs";

const artifacts = join(root, "tests", "artifacts");
const TEST_TIMEOUT_MS = 120_000;
const WAIT_MS = 10_000;
/** The published rate, messages per second, and for how long. */
const RATE = 25;
const LOAD_MS = 10_000;
setup("charts test", TEST_TIMEOUT_MS);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

/** The series and the rate on their own (run in the page, where charts.js is a module). */
async function unitChecks() {
  const { RateMeter, TimeSeries, niceTicks } = await import("/charts.js");
  const assert = (cond, msg) => {
    if (!cond) throw new Error(msg);
  };
  const s = new TimeSeries({ capacity: 8, windowMs: 60_000, bucketMs: 1000 });
  for (let i = 0; i < 20; i++) s.push(i * 1000, i);
  assert(s.length === 8, `a ring of 8 keeps 8 points, not ${s.length}`);
  assert(s.points()[0][1] === 12 && s.latest()[1] === 19, `the ring keeps the newest: ${JSON.stringify(s.points())}`);
  s.push(19_500, 42);
  assert(s.length === 8 && s.latest()[1] === 42, "a point in the same second replaces the last one");
  s.push(100_000, 1);
  // Window 60 s: everything before 40 s goes, but for the last point before it (none is >= 40 s).
  assert(s.length === 2 && s.points()[0][1] === 42, `points older than the window go, but one: ${JSON.stringify(s.points())}`);
  const d = new TimeSeries({ dedup: true });
  d.push(0, 3);
  d.push(5000, 3);
  d.push(9000, 0);
  assert(d.length === 2, "a step series keeps only changes");
  d.push(9100, 1);
  d.push(9200, 2);
  d.push(9300, 3);
  assert(JSON.stringify(d.points()) === "[[0,3],[9000,0],[9300,3]]", `a step series keeps the first change of a second and the last: ${JSON.stringify(d.points())}`);

  const m = new RateMeter(1000);
  assert(m.sample(0, 100) === null, "the first reading is only a start");
  assert(m.sample(500, 110) === null, "a reading under a second after waits");
  const r = m.sample(2000, 150);
  assert(r && r.rate === 25, `50 more in 2 s is 25/s, not ${JSON.stringify(r)}`);
  assert(m.sample(4000, 7)?.reset === true, "a counter that went down is a reset");
  assert(m.sample(6000, 27)?.rate === 10, "after a reset the rate counts from the new reading");

  assert(JSON.stringify(niceTicks(47, 3, true)) === "[0,20,40,60]", `ticks for 47: ${niceTicks(47, 3, true)}`);
  assert(JSON.stringify(niceTicks(0)) === "[0,1]", "ticks for an empty chart");
}

function connect(url, opts) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
    c.once("connect", () => resolve(c));
    c.once("error", reject);
    onCleanup(() => c.end(true));
  });
}

/** The chart `name`'s series as drawn: { key: { points: [[t, v]...], latest } }. */
const readChart = (page, name) => page.evaluate((n) => window.__charts.get(n).series(), name);

async function main() {
  await mkdir(artifacts, { recursive: true });
  const web = join(root, "web");
  let bridge = await spawnBridge(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", "none", "--web", web]);
  const mqttUrl = `mqtt://127.0.0.1:${bridge.mqttPort}`;
  const browser = await launchChromium();
  const { page, problems } = await openPage(browser, new URL(bridge.http).origin, { width: 1440, height: 900 });
  const shot = (name, fullPage = false) => page.screenshot({ path: join(artifacts, name), fullPage });

  await page.goto(bridge.http + "/");
  await check("the page says Live", page.locator("#live[data-state=live]").waitFor({ timeout: WAIT_MS }));
  await check("the series and the rate alone", page.evaluate(unitChecks));
  for (const name of ["messages", "connections", "queued"]) {
    await check(`the ${name} chart is drawn`, page.locator(`svg[data-chart=${name}] title`).waitFor({ state: "attached", timeout: WAIT_MS }));
  }

  // The load: R msg/s to two subscribers, for LOAD_MS.
  const subs = [];
  const deliveries = [];
  for (const id of ["chart-sub-1", "chart-sub-2"]) {
    const c = await connect(mqttUrl, { clientId: id, clean: true });
    await c.subscribeAsync("load/x", { qos: 1 });
    c.on("message", () => deliveries.push(Date.now()));
    subs.push(c);
  }
  const pub = await connect(mqttUrl, { clientId: "chart-pub", clean: true });
  // Draws and animation frames while the load runs, counted in the page.
  await page.evaluate(() => {
    const svg = document.querySelector("svg[data-chart=messages]");
    window.__frames = { frames: 0, draws0: Number(svg.dataset.draws) };
    const tick = () => {
      window.__frames.frames++;
      if (!window.__frames.stop) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  const start = Date.now();
  let sent = 0;
  while (Date.now() - start < LOAD_MS) {
    const due = Math.floor(((Date.now() - start) * RATE) / 1000) + 1;
    while (sent < due) pub.publish("load/x", `m${sent++}`, { qos: 1 });
    await sleep(5);
  }
  const end = Date.now();
  const { frames, draws } = await page.evaluate(() => {
    window.__frames.stop = true;
    const svg = document.querySelector("svg[data-chart=messages]");
    return { frames: window.__frames.frames, draws: Number(svg.dataset.draws) - window.__frames.draws0 };
  });
  assert(draws > 0 && draws <= frames + 1, `the messages chart drew ${draws} times in ${frames} animation frames`);
  await check("every message is delivered to both subscribers", (async () => {
    const until = Date.now() + WAIT_MS;
    while (deliveries.length < 2 * sent && Date.now() < until) await sleep(50);
    assert(deliveries.length === 2 * sent, `${deliveries.length} deliveries of ${sent} messages to 2 subscribers`);
  })());
  // Two more stats readings after the load.
  await sleep(4500);

  const chart = await readChart(page, "messages");
  // A rate point at t covers the time since the point before it: keep those inside the load.
  const inside = (pts) => {
    const out = [];
    for (let i = 1; i < pts.length; i++) {
      const [t0, v0] = pts[i - 1];
      const [t1, v1] = pts[i];
      if (v0 != null && v1 != null && t0 >= start + 100 && t1 <= end - 100) out.push({ t0, t1, v: v1 });
    }
    return out;
  };
  const mean = (ps) => ps.reduce((a, p) => a + p.v * (p.t1 - p.t0), 0) / ps.reduce((a, p) => a + (p.t1 - p.t0), 0);
  const ins = inside(chart.in.points);
  const outs = inside(chart.out.points);
  assert(ins.length >= 3 && outs.length >= 3, `too few rate points inside the load: ${JSON.stringify(chart)}`);
  const inRate = mean(ins);
  // What the subscribers received over the same spans.
  const delivered = outs.reduce((a, p) => a + deliveries.filter((d) => d > p.t0 && d <= p.t1).length, 0);
  const deliveredRate = (delivered * 1000) / outs.reduce((a, p) => a + (p.t1 - p.t0), 0);
  const outRate = mean(outs);
  console.log(`published ${sent} at ${RATE}/s; chart in ${inRate.toFixed(2)}/s over ${ins.length} points (${ins.map((p) => p.v.toFixed(1)).join(", ")})`);
  console.log(`delivered ${deliveredRate.toFixed(2)}/s; chart out ${outRate.toFixed(2)}/s over ${outs.length} points (${outs.map((p) => p.v.toFixed(1)).join(", ")})`);
  assert(Math.abs(inRate - RATE) <= 0.2 * RATE, `the chart's in-rate ${inRate} is not within 20 % of ${RATE}`);
  assert(Math.abs(outRate - deliveredRate) <= 0.2 * deliveredRate, `the chart's out-rate ${outRate} is not within 20 % of the deliveries ${deliveredRate}`);
  assert(Math.abs(outRate - 2 * RATE) <= 0.4 * RATE, `the chart's out-rate ${outRate} is not within 20 % of ${2 * RATE}`);
  const conns = await readChart(page, "connections");
  assert(conns.connections.latest === 3, `the connections chart says ${conns.connections.latest}, not 3`);
  const label = await page.locator("svg[data-chart=messages] title").textContent();
  assert(/in \d/.test(label) && /out \d/.test(label), `the chart's title does not say its values: ${label}`);
  await shot("charts-01-load.png");

  // A persistent session goes away; its queue fills, then drains when it returns.
  const devOpts = { clientId: "chart-dev", clean: false };
  let dev = await connect(mqttUrl, devOpts);
  await dev.subscribeAsync("q/#", { qos: 1 });
  dev.end();
  const cell = (text) => page.waitForFunction(
    (t) => document.querySelector('#sessions-body tr[data-client-id="chart-dev"] .c-queued')?.textContent === t,
    text, { timeout: WAIT_MS });
  await check("chart-dev is offline with an empty queue", page.waitForFunction(
    () => document.querySelector('#sessions-body tr[data-client-id="chart-dev"] .c-state')?.textContent === "offline",
    null, { timeout: WAIT_MS }));
  await page.locator('#sessions-body tr[data-client-id="chart-dev"] button').click();
  await check("the detail shows the queue chart", page.locator("#detail-chart svg[data-chart=session-queue]").waitFor({ timeout: WAIT_MS }));
  for (let i = 1; i <= 6; i++) {
    await pub.publishAsync("q/dev", `queued ${i}`, { qos: 1 });
    await check(`the queue count rises to ${i}`, cell(String(i)));
    await sleep(700);
  }
  let q = (await readChart(page, "session-queue")).queued;
  const filled = q.points.map(([, v]) => v);
  console.log(`session queue while offline: ${filled.join(" → ")}`);
  assert(q.latest === 6, `the session chart's latest is ${q.latest}, not 6`);
  assert(filled.length >= 4, `the queue chart has only ${filled.length} points while it filled`);
  assert(filled[0] === 0 && filled.every((v, i) => i === 0 || v >= filled[i - 1]), `the queue chart did not rise from 0: ${filled}`);
  await page.locator("#detail").screenshot({ path: join(artifacts, "charts-02-session-filling.png") });

  dev = await connect(mqttUrl, devOpts);
  await check("the queue count falls to 0 on return", cell("0"));
  await check("the session chart falls to 0", page.waitForFunction(
    () => window.__charts.get("session-queue").series().queued.latest === 0, null, { timeout: WAIT_MS }));
  q = (await readChart(page, "session-queue")).queued;
  const values = q.points.map(([, v]) => v);
  console.log(`session queue after the return: ${values.join(" → ")}`);
  assert(Math.max(...values) === 6 && values.at(-1) === 0, `the queue chart did not rise to 6 and fall to 0: ${values}`);
  const sTitle = await page.locator("#detail-chart svg title").textContent();
  assert(/now 0\b/.test(sTitle), `the session chart's title does not say 0: ${sTitle}`);
  await sleep(2500);
  await page.locator("#detail").screenshot({ path: join(artifacts, "charts-03-session-drained.png") });
  await shot("charts-04-page.png", true);

  // The bridge restarts on the same ports: its counters start from 0 again.
  for (const c of [...subs, pub, dev]) c.end(true);
  bridge.child.kill("SIGTERM");
  await new Promise((r) => bridge.child.once("exit", r));
  const restartedAt = Date.now();
  bridge = await spawnBridge(["--http", bridge.httpAddr, "--mqtt", bridge.mqtt, "--data", "none", "--web", web]);
  await check("the page is Live again after the restart", page.locator("#live[data-state=live]").waitFor({ timeout: WAIT_MS }));
  const pub2 = await connect(mqttUrl, { clientId: "chart-pub-2", clean: true });
  const AFTER = 10;
  const start2 = Date.now();
  for (let n = 0; Date.now() - start2 < 6000; await sleep(5)) {
    while (n < Math.floor(((Date.now() - start2) * AFTER) / 1000) + 1) pub2.publish("load/y", `after ${n++}`, { qos: 0 });
  }
  await sleep(4500);
  const after = (await readChart(page, "messages")).in.points;
  const later = after.filter(([t]) => t >= restartedAt);
  console.log(`in-rate around the restart: ${after.filter(([t]) => t >= restartedAt - 6000).map(([, v]) => (v == null ? "break" : v.toFixed(1))).join(", ")}`);
  assert(after.every(([, v]) => v == null || (v >= 0 && v <= 2 * RATE)), `a rate out of range around the restart: ${JSON.stringify(after)}`);
  assert(later.some(([, v]) => v == null), "no break in the line after the restart");
  const resumed = later.filter(([, v]) => v != null && v > 0).map(([, v]) => v);
  assert(resumed.some((v) => Math.abs(v - AFTER) <= 0.2 * AFTER), `after the restart the rate did not resume near ${AFTER}/s: ${resumed}`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot("charts-05-after-restart.png");

  // A bridge gone for a moment: the stats reads and the event stream failed meanwhile.
  const missing = problems.filter((p) => !/api\/v1\/stats|ERR_CONNECTION_REFUSED|Failed to load resource/.test(p));
  if (missing.length) throw new Error(missing.join("\n"));
  console.log(`charts test passed; screenshots in ${artifacts}/charts-*.png`);
}

main()
  .then(() => cleanup())
  .then(() => process.exit(0))
  .catch((e) => fail(e.message));
