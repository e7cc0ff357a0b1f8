// End-to-end test of the operator dashboard (web/): a real bridge started here on ephemeral
// ports, Debian's headless Chromium driven by playwright-core, and mosquitto_sub / mosquitto_pub
// as the outside clients. Checks that sessions appear and change without a reload (from the
// SSE stream), that the queue of an offline persistent session rises and drains, and that
// Kick and Discard work. Screenshots go to tests/artifacts/.
//
// Usage: node tests/dashboard.mjs   (after `cargo build -p bridge`). Exits non-zero, naming the
// failed check, on any failure.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { check, cleanup, fail, launchChromium, openPage, root, run, setup, spawnBridge } from "./support/harness.mjs";

const artifacts = join(root, "tests", "artifacts");
const TEST_TIMEOUT_MS = 90_000;
const WAIT_MS = 10_000;
setup("dashboard test", TEST_TIMEOUT_MS);

async function main() {
  await mkdir(artifacts, { recursive: true });
  const { http, mqttPort } = await spawnBridge(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", "none", "--web", join(root, "web")]);
  const origin = new URL(http).origin;
  console.log(`bridge at ${http}, mqtt port ${mqttPort}`);

  const browser = await launchChromium();
  const { page, problems } = await openPage(browser, origin, { width: 1440, height: 900 });

  const mqtt = ["-h", "127.0.0.1", "-p", String(mqttPort)];
  const pub = async (n) => {
    const p = run("mosquitto_pub", [...mqtt, "-q", "1", "-t", "dash/x", "-m", `hello ${n}`]);
    const code = await p.exited;
    if (code !== 0) throw new Error(`mosquitto_pub exited ${code}: ${p.output}`);
  };
  const row = (id) => page.locator(`#sessions-body tr[data-client-id="${id}"]`);
  const expectText = (loc, text, what) => check(what, loc.filter({ hasText: text }).first().waitFor({ timeout: WAIT_MS }));
  const expectCell = async (id, cls, text, what) =>
    check(what, page.waitForFunction(
      ([id, cls, text]) => {
        const tr = document.querySelector(`#sessions-body tr[data-client-id="${CSS.escape(id)}"]`);
        return tr && tr.querySelector("." + cls)?.textContent === text;
      },
      [id, cls, text],
      { timeout: WAIT_MS },
    ));
  const shot = (name) => page.screenshot({ path: join(artifacts, name), fullPage: true });

  await page.goto(http + "/");
  await check("the page says Live", page.locator("#live[data-state=live]").waitFor({ timeout: WAIT_MS }));
  await check("the stats load", page.waitForFunction(() => document.getElementById("st-connections").textContent !== "–", null, { timeout: WAIT_MS }));
  const title = await page.title();
  if (!title.includes("mqtt-bridge")) throw new Error(`unexpected title ${title}`);
  await shot("dashboard-01-empty.png");

  // A retained message, for the retained panel.
  {
    const p = run("mosquitto_pub", [...mqtt, "-q", "1", "-r", "-t", "dash/status", "-m", '{"state":"<b>up</b>"}']);
    if ((await p.exited) !== 0) throw new Error(`retained publish failed: ${p.output}`);
  }

  // A persistent session from an outside client appears without a reload.
  let sub = run("mosquitto_sub", [...mqtt, "-c", "-i", "dash-dev", "-q", "1", "-t", "dash/#"]);
  await expectCell("dash-dev", "c-state", "online", "dash-dev appears online without a reload");
  await expectCell("dash-dev", "c-kind", "persistent", "dash-dev is persistent");
  await expectCell("dash-dev", "c-subs", "1", "dash-dev has one subscription");
  // A 5.0 session with an expiry, for the countdown; and a clean one.
  const v5 = run("mosquitto_sub", [...mqtt, "-V", "mqttv5", "-c", "-x", "600", "-i", "dash-v5", "-q", "1", "-t", "dash/v5/#"]);
  const clean = run("mosquitto_sub", [...mqtt, "-i", "dash-clean", "-t", "other/#"]);
  await expectCell("dash-v5", "c-state", "online", "dash-v5 appears online");
  await expectCell("dash-clean", "c-kind", "clean", "dash-clean appears as clean");
  v5.kill("SIGTERM");
  await expectCell("dash-v5", "c-state", "offline", "dash-v5 goes offline");
  await check("dash-v5 shows a countdown", page.waitForFunction(
    () => /^(9m|10m) \d\ds$/.test(document.querySelector('#sessions-body tr[data-client-id="dash-v5"] .c-ends')?.textContent ?? ""),
    null, { timeout: WAIT_MS }));
  await expectText(page.locator("#retained-body tr"), "dash/status", "the retained message is listed");
  await shot("dashboard-02-online.png");

  // The device goes away; three messages queue for it.
  sub.kill("SIGTERM");
  await sub.exited;
  await expectCell("dash-dev", "c-state", "offline", "dash-dev goes offline");
  await row("dash-dev").locator("button").click();
  await check("the detail opens", page.locator("#detail-heading", { hasText: "dash-dev" }).waitFor({ timeout: WAIT_MS }));
  for (let i = 1; i <= 3; i++) {
    await pub(i);
    await expectCell("dash-dev", "c-queued", String(i), `the queue count rises to ${i}`);
  }
  await check("the detail lists 3 queued messages", page.waitForFunction(
    () => document.querySelectorAll("#detail-queue tr:not(.none)").length === 3, null, { timeout: WAIT_MS }));
  await expectText(page.locator("#detail-queue tr"), "hello 3", "the queued payload is shown");
  await expectText(page.locator("#detail-subs tr"), "dash/#", "the subscription is shown");
  await check("the queued total reaches 3", page.waitForFunction(
    () => Number(document.getElementById("st-queued").textContent) >= 3, null, { timeout: WAIT_MS }));
  await shot("dashboard-03-queued.png");

  // It comes back: the queue drains to 0 and the messages arrive.
  sub = run("mosquitto_sub", [...mqtt, "-c", "-i", "dash-dev", "-q", "1", "-t", "dash/#", "-C", "3"]);
  await expectCell("dash-dev", "c-queued", "0", "the queue count falls to 0 on reconnect");
  const code = await check("the returning device gets its messages", Promise.race([
    sub.exited,
    new Promise((_, rej) => setTimeout(() => rej(new Error("mosquitto_sub -C 3 did not exit")), WAIT_MS)),
  ]));
  if (code !== 0 || !/hello 1[\s\S]*hello 2[\s\S]*hello 3/.test(sub.output)) {
    throw new Error(`the returning device did not get hello 1..3 (exit ${code}): ${sub.output}`);
  }
  await check("the detail queue is empty", page.locator("#detail-queue tr.none").waitFor({ timeout: WAIT_MS }));

  // Kick: the client goes offline, the session stays.
  sub = run("mosquitto_sub", [...mqtt, "-V", "mqttv5", "-c", "-x", "600", "-i", "dash-dev", "-q", "1", "-t", "dash/#"]);
  await expectCell("dash-dev", "c-state", "online", "dash-dev is back online");
  await check("Kick is enabled", page.locator("#btn-kick:not([disabled])").waitFor({ timeout: WAIT_MS }));
  await page.locator("#btn-kick").click();
  await check("the kick confirmation opens", page.locator("#confirm[open]").waitFor({ timeout: WAIT_MS }));
  await shot("dashboard-04-confirm-kick.png");
  await page.locator("#confirm-ok").click();
  await expectCell("dash-dev", "c-state", "offline", "kick puts dash-dev offline");
  if ((await row("dash-dev").count()) !== 1) throw new Error("kick removed the row; the session should stay");

  // Discard, with a cancel first: the row goes.
  await page.locator("#btn-discard").click();
  await page.locator("#confirm-cancel").click();
  if ((await row("dash-dev").count()) !== 1) throw new Error("a cancelled discard removed the row");
  await page.locator("#btn-discard").click();
  await page.locator("#confirm-ok").click();
  await check("discard removes the row", row("dash-dev").waitFor({ state: "detached", timeout: WAIT_MS }));
  const res = await fetch(`${http}/api/v1/sessions/dash-dev`);
  if (res.status !== 404) throw new Error(`after discard the API still has dash-dev (HTTP ${res.status})`);
  await shot("dashboard-05-after-discard.png");

  // Keyboard: a session row's button is reachable and opens the detail with Enter.
  await row("dash-v5").locator("button").focus();
  await page.keyboard.press("Enter");
  await check("Enter opens the detail", page.locator("#detail-heading", { hasText: "dash-v5" }).waitFor({ timeout: WAIT_MS }));
  await shot("dashboard-06-v5-detail.png");

  // Nothing was injected as markup: the retained payload with <b> shows as text.
  if ((await page.locator("#retained-body b").count()) !== 0) throw new Error("payload text was inserted as HTML");

  if (problems.length) throw new Error(problems.join("\n"));
  clean.kill("SIGTERM");
  console.log(`dashboard test passed; screenshots in ${artifacts}`);
}

main()
  .then(() => cleanup())
  .then(() => process.exit(0))
  .catch((e) => fail(e.message));
