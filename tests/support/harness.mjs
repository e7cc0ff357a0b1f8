// What every browser test and the browser benchmark need around Chromium: a bridge on
// ephemeral ports, a static server, Debian's Chromium through playwright-core, and clean-up
// that stops them however the script ends (a failed check, a timeout, an uncaught error, a
// signal). One test per process: the state here is the process's.
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const chromiumBin = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** `BRIDGE_BIN`, or the bridge of the given cargo profile ("debug" for tests). */
export function bridgeBin(profile = "debug") {
  return process.env.BRIDGE_BIN ?? join(root, "target", profile, "bridge");
}

const cleanups = [];
let name = "test";
let failed = false;

/** Runs `fn` (it may be async) when the script ends, the last registered first. */
export function onCleanup(fn) {
  cleanups.push(fn);
}

export async function cleanup() {
  while (cleanups.length) {
    try {
      await cleanups.pop()();
    } catch {}
  }
}

/** Prints `<name> FAILED: msg`, cleans up and exits 1 (once). */
export function fail(msg) {
  if (failed) return;
  failed = true;
  console.error(`${name} FAILED: ${msg}`);
  cleanup().finally(() => process.exit(1));
}

/**
 * Names the script for its failure message and makes it fail, cleaning up, after `timeoutMs`,
 * on an uncaught error or rejection, and on SIGINT / SIGTERM.
 */
export function setup(scriptName, timeoutMs) {
  name = scriptName;
  setTimeout(() => fail(`timed out after ${timeoutMs} ms`), timeoutMs).unref();
  process.on("uncaughtException", (e) => fail(`uncaught: ${e?.stack ?? e}`));
  process.on("unhandledRejection", (e) => fail(`unhandled rejection: ${e?.stack ?? e}`));
  for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => fail(`interrupted (${sig})`));
}

/**
 * Starts the bridge with `args` and resolves once it listens, with `{ http, httpAddr, ws,
 * mqtt, mqttPort, child }`: `http` the base URL without a trailing slash, `httpAddr` and
 * `mqtt` as host:port (to start another bridge on the same ports), `mqttPort` a number.
 */
export function spawnBridge(args, { bin = bridgeBin(), env = process.env } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env });
    onCleanup(() => child.kill("SIGKILL"));
    let out = "";
    const onData = (d) => {
      out += d.toString();
      const m = out.match(/bridge listening: http=(\S+) ws=(ws:\/\/\S+) mqtt=(\S+)/);
      if (m) {
        const http = m[1].replace(/\/$/, "");
        const httpAddr = new URL(http).host;
        resolve({ http, httpAddr, ws: m[2], mqtt: m[3], mqttPort: Number(m[3].split(":").pop()), child });
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", (e) => reject(new Error(`cannot start ${bin}: ${e.message}`)));
    child.on("exit", (code) => reject(new Error(`bridge exited (${code}) before listening:\n${out}`)));
  });
}

/**
 * Writes `toml` to a fresh file (removed at clean-up) and resolves with the bridge arguments
 * that use it: `["--config", path]`.
 */
export async function bridgeConfig(toml) {
  const dir = await mkdtemp(join(tmpdir(), "bridge-config-"));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "bridge.toml");
  await writeFile(path, toml);
  return ["--config", path];
}

/**
 * The bridge arguments that let pages of `base` (a URL, e.g. serveStatic's) open MQTT
 * WebSockets to it: `[server] allowed_origins`, as an operator would set it for an app served
 * from elsewhere.
 */
export function allowOrigin(base) {
  return bridgeConfig(`[server]\nallowed_origins = ["${new URL(base).origin}"]\n`);
}

/** Spawns a command; the returned child has .output and .exited (a promise of the exit code). */
export function run(cmd, args) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  child.output = "";
  child.stdout.on("data", (d) => (child.output += d));
  child.stderr.on("data", (d) => (child.output += d));
  child.exited = new Promise((resolve, reject) => {
    child.on("error", (e) => reject(new Error(`cannot start ${cmd}: ${e.message}`)));
    child.on("exit", (code, signal) => resolve(code ?? signal));
  });
  onCleanup(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"));
  return child;
}

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".ts": "text/plain",
};

/**
 * Serves directories on 127.0.0.1:0 and resolves with the base URL (with a trailing slash).
 * `mounts`: `[prefix, dir]` pairs, the first whose prefix starts the path wins (put "/"
 * last); a path ending in "/" means its index.html. `pages`: bodies served as HTML at exact
 * paths. `headers(url)`: extra response headers. Nothing outside a mounted directory is
 * served.
 */
export function serveStatic(mounts, { pages = {}, headers = () => ({}) } = {}) {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    let path;
    try {
      path = decodeURIComponent(url.pathname);
    } catch {
      res.writeHead(400).end();
      return;
    }
    const extra = { "cache-control": "no-store", ...headers(url) };
    if (path in pages) {
      res.writeHead(200, { "content-type": TYPES[".html"], ...extra }).end(pages[path]);
      return;
    }
    if (path.endsWith("/")) path += "index.html";
    const mount = mounts.find(([prefix]) => path.startsWith(prefix));
    if (!mount) {
      res.writeHead(404).end();
      return;
    }
    const [prefix, dir] = mount;
    const file = normalize(join(dir, path.slice(prefix.length)));
    if (!file.startsWith(normalize(dir) + sep)) {
      res.writeHead(403).end();
      return;
    }
    let body;
    try {
      body = await readFile(file);
    } catch {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", ...extra }).end(body);
  });
  onCleanup(() => new Promise((r) => server.close(r)));
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${server.address().port}/`)),
  );
}

/**
 * Debian's Chromium, headless, offline (no component updates or background networking, as
 * TOOLCHAIN.md says), closed at clean-up. `args` are added to those.
 */
export async function launchChromium(args = []) {
  const browser = await chromium.launch({
    executablePath: chromiumBin,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-dev-shm-usage",
      ...args,
    ],
  });
  onCleanup(() => browser.close());
  return browser;
}

/**
 * A new page that records console errors, page errors, failed requests (but the dashboard's
 * event stream, cut when the page closes) and requests or WebSockets to another origin than
 * `origin`; `allowed(text)` lets through the ones a check expects.
 */
export async function openPage(browser, origin, viewport, allowed = () => false) {
  const page = await browser.newPage({ viewport });
  const problems = [];
  page.on("console", (m) => {
    const text = `${m.text()} at ${m.location()?.url}`;
    if (m.type() === "error" && !allowed(text)) problems.push(`console error: ${text}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("request", (r) => {
    const u = r.url();
    if (u.startsWith("data:")) return;
    if (new URL(u).origin !== origin) problems.push(`request to another host: ${u}`);
  });
  page.on("requestfailed", (r) => {
    // The event stream is cut when the page closes, and a request the page itself cancels
    // (a reload while a poll is in flight: net::ERR_ABORTED) is not the server failing;
    // anything else failing is a problem.
    const error = r.failure()?.errorText ?? "";
    const text = `request failed: ${r.url()} ${error}`;
    if (r.url().endsWith("/api/v1/events") || error === "net::ERR_ABORTED" || allowed(text)) return;
    problems.push(text);
  });
  page.on("websocket", (ws) => {
    if (new URL(ws.url()).host !== new URL(origin).host) problems.push(`WebSocket to another host: ${ws.url()}`);
  });
  return { page, problems };
}

/** Awaits `promise`; a rejection becomes an Error that starts with `what`. */
export async function check(what, promise) {
  try {
    return await promise;
  } catch (e) {
    throw new Error(`${what}: ${e.message.split("\n")[0]}`);
  }
}
