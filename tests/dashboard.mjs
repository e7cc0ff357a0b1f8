// End-to-end test of the operator dashboard (web/): a real bridge started here on ephemeral
// ports, Debian's headless Chromium driven by playwright-core, and mosquitto_sub / mosquitto_pub
// as the outside clients. Checks that sessions appear and change without a reload (from the
// event stream), that the queue of an offline persistent session rises and drains, that Kick
// and Discard work, and that a single bridge shows no Node column (cluster mode's). Then,
// against a bridge with `[api] token`: the dashboard asks for the token (and again after a
// wrong one), then lists the sessions, receives live events and kicks with it, keeps it over a
// reload, and never puts it in a URL. Screenshots go to tests/artifacts/.
//
// Usage: node tests/dashboard.mjs   (after `cargo build -p bridge`). Exits non-zero, naming the
// failed check, on any failure.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { bridgeConfig, check, cleanup, fail, launchChromium, openPage, root, run, setup, spawnBridge } from "./support/harness.mjs";

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
  // A single bridge names no node (cluster mode does): no Node column.
  await check("a single bridge shows no Node column", page.waitForFunction(() => {
    const table = document.getElementById("sessions-table");
    const cells = [...table.querySelectorAll(".c-node")];
    return cells.length >= 2 && !table.classList.contains("cluster")
      && cells.every((c) => getComputedStyle(c).display === "none");
  }, null, { timeout: WAIT_MS }));
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
  await page.close();

  await withToken(browser);
  console.log(`dashboard test passed; screenshots in ${artifacts}`);
}

/** The dashboard of a bridge with `[api] token`: it asks, then works with the token. */
async function withToken(browser) {
  const TOKEN = "dashboard-test-token-5e1f0b7c9a";
  const config = await bridgeConfig(`[api]\ntoken = "${TOKEN}"\n`);
  const { http, mqttPort } = await spawnBridge(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", "none", "--web", join(root, "web"), ...config]);
  const mqtt = ["-h", "127.0.0.1", "-p", String(mqttPort)];
  const before = run("mosquitto_sub", [...mqtt, "-c", "-i", "tok-before", "-q", "1", "-t", "tok/#"]);
  // The calls made before and after a wrong token are answered 401: Chromium logs each.
  const { page, problems } = await openPage(browser, new URL(http).origin, { width: 1440, height: 900 },
    (text) => /status of 401/.test(text));
  const urls = [];
  const authorized = new Set();
  page.on("request", (r) => {
    urls.push(r.url());
    if (r.headers().authorization === `Bearer ${TOKEN}`) authorized.add(new URL(r.url()).pathname);
  });
  const row = (id) => page.locator(`#sessions-body tr[data-client-id="${id}"]`);
  const cell = (id, cls, text, what) =>
    check(what, page.waitForFunction(
      ([id, cls, text]) =>
        document.querySelector(`#sessions-body tr[data-client-id="${CSS.escape(id)}"] .${cls}`)?.textContent === text,
      [id, cls, text], { timeout: WAIT_MS }));

  await page.goto(http + "/");
  await check("with a token configured the dashboard asks for it", page.locator("#login[open]").waitFor({ timeout: WAIT_MS }));
  if ((await row("tok-before").count()) !== 0) throw new Error("sessions were listed before the token was given");
  await page.screenshot({ path: join(artifacts, "dashboard-07-token.png") });
  await page.locator("#login-token").fill("not-the-token");
  await page.locator("#login-ok").click();
  await check("a wrong token is refused and asked for again",
    page.locator("#login[open] #login-error:not([hidden])").waitFor({ timeout: WAIT_MS }));
  await page.locator("#login-token").fill(TOKEN);
  await page.keyboard.press("Enter");
  await check("the dialog closes with the right token", page.locator("#login").waitFor({ state: "hidden", timeout: WAIT_MS }));
  await check("with the token the page says Live", page.locator("#live[data-state=live]").waitFor({ timeout: WAIT_MS }));
  await cell("tok-before", "c-state", "online", "with the token the session list loads");

  // Live events: a new client appears, goes offline when kicked from the page.
  run("mosquitto_sub", [...mqtt, "-V", "mqttv5", "-c", "-x", "600", "-i", "tok-live", "-q", "1", "-t", "tok/#"]);
  await cell("tok-live", "c-state", "online", "with the token a new session arrives live");
  await row("tok-live").locator("button").click();
  await check("Kick is enabled", page.locator("#btn-kick:not([disabled])").waitFor({ timeout: WAIT_MS }));
  await page.locator("#btn-kick").click();
  await page.locator("#confirm-ok").click();
  await cell("tok-live", "c-state", "offline", "the kick with the token puts tok-live offline");
  await page.screenshot({ path: join(artifacts, "dashboard-08-token-live.png") });

  // Kept for the tab: a reload does not ask again.
  await page.reload();
  await check("after a reload the page is Live without asking", page.locator("#live[data-state=live]").waitFor({ timeout: WAIT_MS }));
  if (await page.locator("#login[open]").count()) throw new Error("the token was asked for again after a reload");
  await cell("tok-before", "c-state", "online", "after a reload the sessions are listed");

  for (const path of ["/api/v1/events", "/api/v1/sessions", "/api/v1/stats", "/api/v1/sessions/tok-live/kick"]) {
    if (!authorized.has(path)) throw new Error(`${path} was not requested with the token (${[...authorized]})`);
  }
  const leaked = urls.filter((u) => u.includes(TOKEN));
  if (leaked.length) throw new Error(`the token appeared in URLs: ${leaked}`);
  if (problems.length) throw new Error(problems.join("\n"));
  before.kill("SIGTERM");
  await page.close();
}

main()
  .then(() => cleanup())
  .then(() => process.exit(0))
  .catch((e) => fail(e.message));
