// The client's JavaScript: the parts of src/ that cost fewer bytes (or fewer crossings of
// the wasm boundary) written here than through bindings. One file, because every snippet
// file costs the package its own import lines and gzip stream: the client's calls
// (src/client/), then the timers (src/timer.rs) and IndexedDB (src/store.rs).

// The `message` listener's packet object, built in one call: from Rust, every property set
// is a key string crossing the boundary, which cost more than the MQTT work per message.
export function publishPacket(topic, payload, qos, retain, dup, messageId, properties) {
  const p = { cmd: "publish", topic, payload, qos, retain, dup };
  if (messageId) p.messageId = messageId;
  if (properties) p.properties = properties;
  return p;
}

// Before each connection attempt (src/client/opening.rs): the URL through transformWsUrl,
// and the user name and password, each called first when it is a function, awaited
// together. done([url, username, password]), or done("<name> failed: <message>") when one of
// them threw or rejected. The last catch: done throws once its client is freed, and then
// nobody waits any more.
const call = async (name, f, a) => {
  try {
    return typeof f == "function" ? await f(a) : f ?? a;
  } catch (e) {
    throw `${name} failed: ${e?.message ?? e}`;
  }
};
export const prepare = (url, t, u, p, done) =>
  Promise.all([call("transformWsUrl", t, url), call("username", u), call("password", p)])
    .then(done, done)
    .catch(() => {});

// The promises of publish, subscribe and unsubscribe (src/client/calls.rs), by key: made by
// one call each, and a run's acknowledgements settled by one call in all (crossing from wasm
// to JavaScript per promise cost more than the MQTT work of a QoS 1 publish).
export const promises = () => new Map();
export const track = (m, k) => new Promise((res, rej) => m.set(k, [res, rej]));
export function settle(m, keys, codes) {
  for (let i = 0; i < keys.length; i++) settleOne(m, keys[i], codes[i], 1);
}
export function settleOne(m, k, v, ok) {
  const s = m.get(k);
  if (s) {
    m.delete(k);
    s[ok ? 0 : 1](v);
  }
}
export function rejectAll(m, message) {
  for (const s of m.values()) s[1](new Error(message));
  m.clear();
}

// `publish` options in one call: qos | 4 if retain | 8 if properties; -1: a bad qos.
export function pubOpts(o) {
  if (typeof o != "object" || o === null) return 0;
  const q = o.qos ?? 0;
  const r = o.retain;
  if (q !== 0 && q !== 1 && q !== 2) return -1;
  return q | (r != null && r ? 4 : 0) | (typeof o.properties == "object" && o.properties !== null ? 8 : 0);
}

// Runs f once the current task's synchronous work is done (the flush of publishes made in a
// row); f throws once its client is freed, and then there is nothing to flush.
export const soon = (f) =>
  queueMicrotask(() => {
    try {
      f();
    } catch {}
  });

// The options of connect, publish and subscribe (src/options.rs), checked here: the same
// checks through bindings cost the package more. A bad one throws the Error the caller gets.
const get = (o, k) => (typeof o == "object" && o !== null ? o[k] : undefined);
const bad = (what) => {
  throw new Error(`invalid argument: ${what}`);
};
// A number (an integer in 0..=max with max), a string, a flag; undefined when absent.
const num = (o, k, what, max) => {
  const v = get(o, k);
  if (v == null) return;
  if (typeof v != "number" || (max != null && !(Number.isInteger(v) && v >= 0 && v <= max))) bad(what);
  return v;
};
const str = (o, k, what) => {
  const v = get(o, k);
  if (v != null && typeof v != "string") bad(what);
  return v ?? undefined;
};
const flag = (o, k) => {
  const v = get(o, k);
  return v == null ? undefined : !!v;
};
const U32 = 4294967295;
const SECS = " seconds";
const MS = " must be milliseconds";
const qos = (o) => num(o, "qos", "qos must be 0, 1 or 2", 2) ?? 0;
const bytes = (v, what) =>
  typeof v == "string" ? new TextEncoder().encode(v) : v instanceof Uint8Array ? v : v instanceof ArrayBuffer ? new Uint8Array(v) : bad(what);

// [version, clientId, clean, keepalive, sessionExpiryInterval, queueLimit, connectTimeout,
// will ([topic, payload, qos, retain] or undefined), reconnect, initialDelay, maxDelay,
// jitter, persistence (undefined: off, null: the default name, or the name), transformWsUrl,
// username, password].
export function connectOpts(o) {
  const v = num(o, "protocolVersion", "protocolVersion must be 4 or 5", 5) ?? 4;
  if (v < 4) bad("protocolVersion must be 4 or 5");
  const id = str(o, "clientId", "clientId must be a string") ?? "";
  const clean = flag(o, "clean") ?? true;
  const ka = num(o, "keepalive", `keepalive must be 0..=65535${SECS}`, 65535);
  const expiry = num(o, "sessionExpiryInterval", `sessionExpiryInterval must be 0..=${U32}${SECS}`, U32);
  const t = get(o, "transformWsUrl");
  const user = get(o, "username");
  const pass = get(o, "password");
  if (t !== undefined && typeof t != "function") bad("transformWsUrl must be a function");
  const limit = num(o, "queueLimit", "queueLimit must be a non-negative integer", U32);
  const timeout = num(o, "connectTimeout", "connectTimeout" + MS);
  const w = get(o, "will");
  let will;
  if (typeof w == "object" && w !== null) {
    const topic = str(w, "topic", "will.topic must be a string") ?? bad("will.topic is required");
    will = [topic, bytes(get(w, "payload"), "will.payload must be a string or a Uint8Array"), qos(w), !!flag(w, "retain")];
  }
  const r = get(o, "reconnect");
  const delay = (k, d, what = `reconnect.${k}` + MS) => num(r, k, what) ?? d;
  const re = [r !== false, delay("initialDelay", 1000), delay("maxDelay", 30000), delay("jitter", 0.5, "reconnect.jitter must be 0..1")];
  let persist;
  if (flag(o, "persistence")) {
    persist = str(get(o, "persistence"), "name", "persistence.name must be a string") ?? null;
    if (!id || clean) bad("persistence needs a clientId and clean: false");
    if (v == 5 && !expiry) bad("persistence with protocolVersion 5 needs a sessionExpiryInterval above 0");
  }
  return [v, id, clean, ka, expiry, limit, timeout, will, ...re, persist, t, user, pass];
}

// subscribe: qos | 4 if nl | 8 if rap | rh << 4.
export function subOpts(o) {
  return qos(o) | (flag(o, "nl") ? 4 : 0) | (flag(o, "rap") ? 8 : 0) | ((num(o, "rh", "rh must be 0, 1 or 2", 2) ?? 0) << 4);
}

// publish `properties` (5.0): [payloadFormatIndicator, messageExpiryInterval, contentType,
// responseTopic, correlationData, [key, value, key, value, ...]].
export function pubProps(o) {
  const p = get(o, "properties");
  const P = "properties.";
  const S = " must be a string";
  const cd = get(p, "correlationData");
  const up = get(p, "userProperties");
  const kv = [];
  const out = [
    flag(p, "payloadFormatIndicator"),
    num(p, "messageExpiryInterval", `${P}messageExpiryInterval must be 0..=${U32}${SECS}`, U32),
    str(p, "contentType", P + "contentType" + S),
    str(p, "responseTopic", P + "responseTopic" + S),
    cd == null ? undefined : bytes(cd, P + "correlationData must be a string or a Uint8Array"),
    kv,
  ];
  if (typeof up == "object" && up !== null) {
    for (const [k, v] of Object.entries(up)) {
      for (const x of Array.isArray(v) ? v : [v]) {
        if (typeof x != "string") bad(P + "userProperties values must be strings or arrays of strings");
        kv.push(k, x);
      }
    }
  }
  return out;
}

// ---- Timers (src/timer.rs, which explains them) ----
const ticker = (send, t = {}) => ([id, ms]) => {
  clearTimeout(t[id]);
  t[id] = setTimeout(() => {
    delete t[id];
    send(id);
  }, ms);
};
// id -> { f, at: deadline, tick: the deadline a tick is asked for; 0: none }
const timers = new Map();
let last = 0;
let post;

const ask = (id, t, ms) => {
  t.tick = t.at;
  post([id, ms]);
};

const tick = (id) => {
  const t = timers.get(id);
  if (!t) return;
  t.tick = 0;
  if (!t.at) return;
  const ms = t.at - performance.now();
  if (ms > 0) ask(id, t, ms);
  else {
    t.at = 0;
    t.f();
  }
};

const start = () => {
  const here = ticker(tick);
  post = here;
  if (typeof window == "object" && typeof Worker == "function") {
    try {
      const w = new Worker(URL.createObjectURL(new Blob([`const k=(${ticker})(postMessage);onmessage=e=>k(e.data)`])));
      w.onmessage = (e) => tick(e.data);
      w.onerror = () => {
        post = here;
        for (const [id, t] of timers) if (t.at) ask(id, t, t.at - performance.now());
      };
      post = (data) => w.postMessage(data);
    } catch {}
  }
};

export function timer_new(f) {
  if (!post) start();
  timers.set(++last, { f, at: 0, tick: 0 });
  return last;
}

export function timer_arm(id, ms) {
  const t = timers.get(id);
  t.at = performance.now() + ms;
  if (!t.tick || t.at < t.tick) ask(id, t, ms);
}

export function timer_cancel(id) {
  timers.get(id).at = 0;
}

export function timer_drop(id) {
  timers.delete(id);
}

// ---- IndexedDB (src/store.rs) ----
// IndexedDB for the client's `persistence` option: one object store "r" of records, keys
// numbers, values Uint8Array (their meaning is the protocol crate's, src/client/store.rs).
// Kept in JavaScript because the same code through web-sys bindings costs more bytes.

/**
 * Takes the Web Lock named after the store (one client per stored session: two tabs with
 * the same client id would overwrite each other's records; waits up to 2 s, so that a client
 * just ended has time to let go), opens (creating) database `name`, and resolves with
 * [db, keys, values, release]; `release()` lets the lock go. Without `navigator.locks`
 * (not a secure context) there is no lock.
 */
export function openStore(name) {
  return new Promise((resolve, reject) => {
    const open = (release) => {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore("r");
      req.onerror = () => {
        release();
        reject(req.error);
      };
      req.onsuccess = () => {
        const db = req.result;
        const s = db.transaction("r").objectStore("r");
        const keys = s.getAllKeys();
        const values = s.getAll();
        // Requests of one transaction complete in order: keys are there when values are.
        values.onsuccess = () => resolve([db, keys.result, values.result, release]);
        values.onerror = () => {
          release();
          reject(values.error);
        };
      };
    };
    const locks = globalThis.navigator && navigator.locks;
    if (!locks) return open(() => {});
    locks
      .request("mqtt-bridge-client " + name, { signal: AbortSignal.timeout(2000) }, () => new Promise(open))
      .catch((e) =>
        reject(e && e.name === "TimeoutError" ? new Error(`another client (another tab?) holds the stored session "${name}"`) : e),
      );
  });
}

/**
 * Writes records in one transaction, after clearing the store if `clear`: `values[i]`
 * undefined deletes `keys[i]`. `done(true)` once committed, `done(false)` if it failed,
 * always later, never from inside this call. Transactions on one store commit in order.
 * "relaxed": committed data survives a reload and a crashed tab, not a power cut (the
 * browser, not the page, then owns it); "strict" would wait for a disk flush per step.
 */
export function writeStore(db, clear, keys, values, done) {
  let tx;
  try {
    tx = db.transaction("r", "readwrite", { durability: "relaxed" });
    const s = tx.objectStore("r");
    if (clear) s.clear();
    keys.forEach((k, i) => (values[i] ? s.put(values[i], k) : s.delete(k)));
  } catch (e) {
    return queueMicrotask(() => done(false));
  }
  tx.oncomplete = () => done(true);
  tx.onabort = () => done(false);
}
