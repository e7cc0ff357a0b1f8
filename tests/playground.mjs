// End-to-end test of the dashboard's playground (web/playground.js): a real bridge started
// here on ephemeral ports, serving web/ and the browser client package (client-wasm/pkg) at
// /pkg/, and Debian's headless Chromium driven by playwright-core. The seed scenario is played
// through the page's own buttons, both ways, and checked in the page's session view, which
// must follow without a reload:
//
// - clean session off: the device's session is kept while it is away and the QoS 1 messages
//   published meanwhile wait in its queue (the queue count rises 1, 2, 3), then arrive in
//   order on reconnect, with session present = 1, and the count falls to 0
//   [MQTT-3.1.2-4] [MQTT-3.1.2-5];
// - clean session on: the session ends with the connection, nothing is queued, and after the
//   reconnect only a marker published afterwards arrives [MQTT-3.1.2-6].
//
// Also: /pkg/client_wasm_bg.wasm is served as application/wasm; a session created by an outside
// client (mosquitto_sub) appears without a reload; with the package missing, the playground
// says so and the rest of the dashboard still works. Screenshots go to
// tests/artifacts/playground-*.png.
//
// Usage: node tests/playground.mjs   (after `cargo build -p bridge` and `client-wasm/build.sh`).
// Exits non-zero, naming the failed check, on any failure.
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { check, cleanup, fail, launchChromium, openPage, root, run, setup, spawnBridge } from "./support/harness.mjs";

const pkgDir = join(root, "client-wasm", "pkg");
const artifacts = join(root, "tests", "artifacts");
const TEST_TIMEOUT_MS = 120_000;
/** Generous: a loaded 2-core machine runs a debug bridge and Chromium at once. */
const WAIT_MS = 15_000;
setup("playground test", TEST_TIMEOUT_MS);

/** Starts the bridge serving web/, with `extra` arguments. */
function startBridge(extra) {
  return spawnBridge(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", "none", "--web", join(root, "web"), ...extra]);
}

function expect(cond, what) {
  if (!cond) throw new Error(what);
}

async function main() {
  if (!existsSync(join(pkgDir, "client_wasm.js"))) {
    throw new Error(`${pkgDir} is not built: run client-wasm/build.sh first`);
  }
  await mkdir(artifacts, { recursive: true });
  // No --pkg: the default (the repository's client-wasm/pkg) is what is checked.
  const { http, mqttPort } = await startBridge([]);
  const origin = new URL(http).origin;
  console.log(`bridge at ${http}, mqtt port ${mqttPort}`);

  // The package route: the wasm as application/wasm (instantiateStreaming requires it).
  {
    const r = await fetch(`${http}/pkg/client_wasm_bg.wasm`);
    const type = r.headers.get("content-type");
    const bytes = new Uint8Array(await r.arrayBuffer());
    expect(r.status === 200, `/pkg/client_wasm_bg.wasm: HTTP ${r.status}`);
    expect(type === "application/wasm", `/pkg/client_wasm_bg.wasm: content-type ${type}, expected application/wasm`);
    expect(bytes.length > 8 && bytes.slice(0, 4).join() === "0,97,115,109", "/pkg/client_wasm_bg.wasm is not a wasm module");
    const js = await fetch(`${http}/pkg/client_wasm.js`);
    expect(js.status === 200 && /javascript/.test(js.headers.get("content-type") ?? ""),
      `/pkg/client_wasm.js: HTTP ${js.status}, content-type ${js.headers.get("content-type")}`);
    const missing = await fetch(`${http}/pkg/nothing-here.js`);
    expect(missing.status === 404, `/pkg/nothing-here.js: HTTP ${missing.status}, expected 404`);
  }

  const browser = await launchChromium();
  // The API answers 404 for a session that has ended (clean on: the device's, while it is
  // away); Chromium logs every 404 response as a console error, but this one is expected.
  const { page, problems } = await openPage(browser, origin, { width: 1440, height: 900 },
    (text) => /status of 404/.test(text) && text.includes("/api/v1/sessions/pg-device-"));

  const cell = (id, cls) => `#sessions-body tr[data-client-id="${id}"] .${cls}`;
  const expectCell = (id, cls, text, what) =>
    check(what, page.waitForFunction(
      ([sel, text]) => document.querySelector(sel)?.textContent === text,
      [cell(id, cls), text],
      { timeout: WAIT_MS },
    ));
  const expectStatus = (which, state, re, what) =>
    check(what, page.waitForFunction(
      ([which, state, re]) => {
        const s = document.getElementById(`pg-${which}-status`);
        return s.dataset.state === state && new RegExp(re).test(s.textContent);
      },
      [which, state, re.source],
      { timeout: WAIT_MS },
    ));
  const received = () => page.$$eval("#pg-received li.msg .pg-payload", (els) => els.map((e) => e.textContent));
  /** The payloads received since the last "Connected" separator. */
  const receivedSinceConnect = () =>
    page.$$eval("#pg-received li", (els) => {
      const out = [];
      for (const e of els) {
        if (e.classList.contains("sep") && e.textContent.startsWith("Connected")) out.length = 0;
        else if (e.classList.contains("msg")) out.push(e.querySelector(".pg-payload").textContent);
      }
      return out;
    });
  const sentReasons = () => page.$$eval("#pg-sent li.msg", (els) => els.map((e) => e.dataset.reason));
  const shot = (name) => page.screenshot({ path: join(artifacts, name), fullPage: true });
  const click = async (id) => {
    await check(`#${id} is enabled`, page.locator(`#${id}:not([disabled])`).waitFor({ timeout: WAIT_MS }));
    await page.locator(`#${id}`).click();
  };
  const publish = async (n) => {
    const before = (await sentReasons()).length;
    await click("pg-publish");
    // Resolved at PUBACK; the page records its reason code.
    await check(`publish ${n} is acknowledged`, page.waitForFunction(
      (n) => {
        const items = document.querySelectorAll("#pg-sent li.msg");
        return items.length === n && items[n - 1].dataset.reason !== undefined;
      },
      before + 1,
      { timeout: WAIT_MS },
    ));
  };

  await page.goto(http + "/");
  await check("the page says Live", page.locator("#live[data-state=live]").waitFor({ timeout: WAIT_MS }));
  await check("the playground loads the wasm client", page.locator("#playground[data-ready=yes]").waitFor({ timeout: WAIT_MS }));
  // Set once; a reload would lose it, so its presence at the end proves nothing reloaded.
  await page.evaluate(() => (window.__notReloaded = true));
  const device = await page.locator("#pg-device-id").textContent();
  const sender = await page.locator("#pg-sender-id").textContent();
  const topic = await page.locator("#pg-topic").textContent();
  expect(/^pg-device-[0-9a-f]{6}$/.test(device) && sender === device.replace("device", "sender"),
    `unexpected playground ids ${device} / ${sender}`);
  console.log(`device ${device}, sender ${sender}, topic ${topic}`);

  // Accessibility basics: labelled controls, the received list announced.
  for (const id of ["pg-clean", "pg-message"]) {
    const labelled = await page.$eval(`#${id}`, (e) => e.labels.length > 0 && e.labels[0].textContent.trim() !== "");
    expect(labelled, `#${id} has no label`);
  }
  expect((await page.getAttribute("#pg-received", "aria-live")) === "polite", "#pg-received is not aria-live=polite");
  expect(!(await page.isChecked("#pg-clean")), "clean session should start off");
  await shot("playground-01-ready.png");

  // A session created by an outside client appears without a reload.
  const mq = ["-h", "127.0.0.1", "-p", String(mqttPort)];
  const outside = run("mosquitto_sub", [...mq, "-c", "-i", "outside-1", "-q", "1", "-t", "outside/#"]);
  await expectCell("outside-1", "c-state", "online", "an outside client's session appears without a reload");
  await expectCell("outside-1", "c-kind", "persistent", "outside-1 (clean session 0) shows as persistent");
  await expectCell("outside-1", "c-subs", "1", "outside-1 shows its subscription");
  outside.kill("SIGTERM");
  await expectCell("outside-1", "c-state", "offline", "outside-1 goes offline without a reload");

  // --- clean session off ------------------------------------------------------------------
  await click("pg-device-connect");
  await expectStatus("device", "on", /Session present = 0.*Subscribed/, "the device connects and subscribes");
  await expectCell(device, "c-state", "online", "the device's session appears online");
  await expectCell(device, "c-kind", "persistent", "clean off: the device's session is persistent");
  await expectCell(device, "c-subs", "1", "the device's subscription shows");
  await click("pg-device-disconnect");
  await expectStatus("device", "off", /keeps its session/, "the device disconnects");
  await expectCell(device, "c-state", "offline", "clean off: the device's session stays, offline [MQTT-3.1.2-4]");
  await expectCell(device, "c-queued", "0", "the queue starts empty");
  // Every value the queue cell takes from now on, as the page shows it.
  await page.evaluate((sel) => {
    const td = document.querySelector(sel);
    window.__queueSeen = [td.textContent];
    new MutationObserver(() => {
      const v = td.textContent;
      if (window.__queueSeen.at(-1) !== v) window.__queueSeen.push(v);
    }).observe(td, { childList: true, characterData: true, subtree: true });
  }, cell(device, "c-queued"));

  await click("pg-sender-connect");
  await expectStatus("sender", "on", /Online/, "the sender connects");
  for (let i = 1; i <= 3; i++) {
    await publish(i);
    await expectCell(device, "c-queued", String(i),
      `clean off: the queue count rises to ${i} while the device is away [MQTT-3.1.2-5]`);
  }
  await check("the device's card repeats the session view: offline, 3 queued", page.waitForFunction(
    () => /session offline, persistent, 1 subscription, 3 queued/.test(document.getElementById("pg-broker-text").textContent),
    null, { timeout: WAIT_MS }));
  const seen = await page.evaluate(() => window.__queueSeen);
  expect(seen.join() === "0,1,2,3", `the queue count went ${seen.join(" → ")}, expected 0 → 1 → 2 → 3`);
  expect((await sentReasons()).every((r) => r === "0"),
    `clean off: each PUBACK should be 0x00 (a subscriber's session holds it), got ${await sentReasons()}`);
  await click("pg-device-show");
  await check("the device's detail opens", page.locator("#detail-heading", { hasText: device }).waitFor({ timeout: WAIT_MS }));
  await check("the detail lists the 3 queued messages", page.waitForFunction(
    () => [...document.querySelectorAll("#detail-queue tr:not(.none) .payload code")].map((e) => e.textContent).join() ===
      "message 1,message 2,message 3",
    null, { timeout: WAIT_MS }));
  await shot("playground-02-clean-off-queued.png");

  await click("pg-device-connect");
  await expectStatus("device", "on", /Session present = 1/, "clean off: the device reconnects to its kept session");
  await expectCell(device, "c-queued", "0", "clean off: the queue count falls to 0 on reconnect");
  await check("clean off: the 3 messages arrive on reconnect [MQTT-3.1.2-5]", page.waitForFunction(
    () => document.querySelectorAll("#pg-received li.msg").length >= 3, null, { timeout: WAIT_MS }));
  const got = await receivedSinceConnect();
  expect(got.join() === "message 1,message 2,message 3",
    `clean off: received ${JSON.stringify(got)} after reconnect, expected message 1..3 in order`);
  await expectCell(device, "c-inflight", "0", "the delivered messages are acknowledged");
  await check("the detail's queue is empty", page.locator("#detail-queue tr.none").waitFor({ timeout: WAIT_MS }));
  await shot("playground-03-clean-off-delivered.png");

  // Kicked from the session view (the detail is the device's): the device's card says the
  // broker closed it, and Connect is offered again; the session stays.
  await click("btn-kick");
  await click("confirm-ok");
  await expectStatus("device", "error", /closed by the broker/, "a kicked device says the broker closed its connection");
  await check("after a kick Connect is enabled again", page.locator("#pg-device-connect:not([disabled])").waitFor({ timeout: WAIT_MS }));
  await expectCell(device, "c-state", "offline", "the kicked device's session stays, offline");

  // --- clean session on -------------------------------------------------------------------
  // By keyboard: the switch is a real checkbox.
  await page.locator("#pg-clean").focus();
  await page.keyboard.press("Space");
  expect(await page.isChecked("#pg-clean"), "Space did not turn clean session on");
  await click("pg-device-connect");
  await expectStatus("device", "on", /Session present = 0.*Subscribed/,
    "clean on: the device gets a new session, the kept one discarded [MQTT-3.1.2-6]");
  await expectCell(device, "c-kind", "clean", "clean on: the device's session shows as clean");
  await expectCell(device, "c-queued", "0", "clean on: nothing queued from before");
  const before = (await received()).length;
  await click("pg-device-disconnect");
  await expectStatus("device", "off", /session ended/, "the device disconnects");
  await check("clean on: the device's session disappears when it leaves [MQTT-3.1.2-6]",
    page.locator(`#sessions-body tr[data-client-id="${device}"]`).waitFor({ state: "detached", timeout: WAIT_MS }));
  const gone = await fetch(`${http}/api/v1/sessions/${device}`);
  expect(gone.status === 404, `clean on: the API still has the device's session while it is away (HTTP ${gone.status})`);
  for (let i = 4; i <= 6; i++) await publish(i);
  const reasons = (await sentReasons()).slice(3);
  // 5.0 PUBACK reason 0x10, No matching subscribers (§3.4.2.1): nobody holds it.
  expect(reasons.join() === "16,16,16", `clean on: PUBACK reasons while away ${reasons}, expected 0x10 each`);
  expect((await page.locator(`#sessions-body tr[data-client-id="${device}"]`).count()) === 0,
    "clean on: publishing brought the device's session back");
  await click("pg-device-show");
  await check("the detail says the session ended", page.locator("#detail-gone:not([hidden])", { hasText: "ended" }).waitFor({ timeout: WAIT_MS }));
  expect(await page.isHidden("#detail-facts"), "the ended session's detail still shows facts");
  expect((await page.textContent("#pg-broker-text")) === "no session",
    `clean on: the device's card says ${await page.textContent("#pg-broker-text")} while it is away`);
  await shot("playground-04-clean-on-away.png");

  await click("pg-device-connect");
  await expectStatus("device", "on", /Session present = 0.*Subscribed/, "clean on: the device reconnects to a new session");
  await page.locator("#pg-message").fill("marker");
  await publish(7);
  // Delivery is in order on the one connection: once the marker is in, nothing older can come.
  await check("clean on: the marker published after the reconnect arrives", page.waitForFunction(
    () => [...document.querySelectorAll("#pg-received li.msg .pg-payload")].some((e) => e.textContent === "marker"),
    null, { timeout: WAIT_MS }));
  const after = await receivedSinceConnect();
  expect(after.join() === "marker",
    `clean on: after the reconnect the device got ${JSON.stringify(after)}; the messages sent while it was away must be gone [MQTT-3.1.2-6]`);
  expect((await received()).length === before + 1, "clean on: more than the marker arrived");
  await shot("playground-05-clean-on-after.png");

  expect(await page.evaluate(() => window.__notReloaded === true), "the page was reloaded during the test");
  await page.setViewportSize({ width: 1366, height: 768 });
  await page.locator("#pg-heading").scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(artifacts, "playground-06-laptop.png") });
  if (problems.length) throw new Error(problems.join("\n"));
  await page.close();

  // --- the package missing: the playground says so, the dashboard still works -------------
  const { http: http2, mqttPort: mqttPort2 } = await startBridge(["--pkg", join(root, "tests", "no-such-pkg-dir")]);
  const second = await openPage(browser, new URL(http2).origin, { width: 1440, height: 900 },
    // The missing module (a 404, which Chromium then reports as an aborted module request)
    // is the point of this page.
    (text) => /status of 404|ERR_ABORTED/.test(text) && text.includes("/pkg/client_wasm.js"));
  const p2 = second.page;
  await p2.goto(http2 + "/");
  await check("without the package the playground says it is unavailable",
    p2.locator("#pg-unavailable:not([hidden])", { hasText: "client-wasm/build.sh" }).waitFor({ timeout: WAIT_MS }));
  await check("without the package the dashboard is still live", p2.locator("#live[data-state=live]").waitFor({ timeout: WAIT_MS }));
  expect(await p2.isDisabled("#pg-device-connect") && await p2.isDisabled("#pg-publish"),
    "without the package the playground's buttons must be disabled");
  const sub = run("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(mqttPort2), "-i", "still-works", "-t", "x/#"]);
  await check("without the package sessions still show live", p2.waitForFunction(
    () => document.querySelector('#sessions-body tr[data-client-id="still-works"]'), null, { timeout: WAIT_MS }));
  await p2.screenshot({ path: join(artifacts, "playground-07-unavailable.png"), fullPage: true });
  sub.kill("SIGTERM");
  if (second.problems.length) throw new Error(second.problems.join("\n"));
  console.log(`playground test passed; screenshots in ${artifacts}`);
}

main()
  .then(() => cleanup())
  .then(() => process.exit(0))
  .catch((e) => fail(e.message));
