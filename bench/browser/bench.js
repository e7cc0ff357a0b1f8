// The page side of the browser client benchmark (bench/browser/run.mjs drives it).
//
// Both libraries sit behind the same small adapter (connect, subscribe, publish, a message
// listener, end), and every measurement below runs through the adapter only, so the two
// clients do exactly the same work around the library calls. ?lib=wasm | mqttjs picks one.
//
// Sets window.ready to "ok" (or the reason it could not load) and window.bench.

const params = new URLSearchParams(location.search);
const lib = params.get("lib");

// ?frames=1 (run.mjs --profile): count WebSocket frames each way, to see how a library
// batches. Off for the measured runs: the wrappers cost a little per frame.
const frames = { in: 0, out: 0 };
if (params.get("frames") === "1") {
  const Native = WebSocket;
  const send = Native.prototype.send;
  Native.prototype.send = function (data) {
    frames.out++;
    return send.call(this, data);
  };
  globalThis.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", () => frames.in++);
    }
  };
}

/** The adapter over our wasm client (client-wasm/pkg/, served at /pkg/). */
async function wasmAdapter() {
  const mod = await import("/pkg/client_wasm.js");
  const exports = await mod.default();
  return {
    name: "wasm",
    wasmMemoryBytes: () => exports.memory.buffer.byteLength,
    async connect(url, clientId) {
      const c = await mod.connect(url, { clientId, clean: true, keepalive: 60, protocolVersion: 4, reconnect: false });
      return {
        subscribe: (filter, qos) => c.subscribe(filter, { qos }),
        // Resolves at PUBACK for QoS 1, once written for QoS 0.
        publish: (topic, payload, qos) => c.publish(topic, payload, { qos }),
        onMessage: (f) => c.on("message", f),
        onError: (f) => c.on("error", f),
        end: () => c.end(),
      };
    },
  };
}

/** The adapter over MQTT.js's browser build (node_modules/mqtt/dist/, served at /mqtt/). */
async function mqttjsAdapter() {
  const mqtt = (await import("/mqtt/mqtt.esm.js")).default;
  return {
    name: "mqttjs",
    wasmMemoryBytes: () => 0,
    async connect(url, clientId) {
      const c = await mqtt.connectAsync(url, { clientId, clean: true, keepalive: 60, protocolVersion: 4, reconnectPeriod: 0 });
      return {
        subscribe: (filter, qos) => c.subscribeAsync(filter, { qos }),
        // MQTT.js resolves publishAsync at PUBACK for QoS 1, once written for QoS 0.
        publish: (topic, payload, qos) => c.publishAsync(topic, payload, { qos }),
        onMessage: (f) => c.on("message", f),
        onError: (f) => c.on("error", f),
        end: () => c.endAsync(),
      };
    },
  };
}

/** Used JS heap after a full GC (needs --js-flags=--expose-gc, --enable-precise-memory-info). */
function heapBytes() {
  if (typeof gc === "function") gc();
  return performance.memory ? performance.memory.usedJSHeapSize : null;
}

const payloadOf = (size, seq) => {
  const p = new Uint8Array(size);
  new DataView(p.buffer).setUint32(0, seq);
  return p;
};

/** Median and p99 of a list of microseconds. */
function percentiles(us) {
  const s = Float64Array.from(us).sort();
  const at = (p) => s[Math.min(s.length - 1, Math.floor((s.length - 1) * p))];
  return { n: s.length, medianUs: at(0.5), p99Us: at(0.99), minUs: s[0], maxUs: s[s.length - 1] };
}

function makeBench(adapter) {
  let client = null;
  let recv = null;
  let rtt = null;

  /**
   * Used JS heap, settled. One GC right after a run keeps what its last task still holds and
   * what waits for finalizers (8 - 15 MB more, seen for both libraries): collect, let a task
   * pass, collect again.
   */
  async function settledHeap() {
    heapBytes();
    await new Promise((r) => setTimeout(r, 100));
    return heapBytes();
  }

  /** The heap (settled) and wasm memory with the client still connected, then end(). */
  async function finish() {
    const heap = await settledHeap();
    const wasmMemory = adapter.wasmMemoryBytes();
    await client.end();
    client = recv = rtt = null;
    return { heapBytes: heap, wasmMemoryBytes: wasmMemory };
  }

  return {
    lib: adapter.name,
    finish,
    settledHeap,
    frames: () => ({ ...frames }),

    /**
     * Receive run, step 1: connect, subscribe to `topic` at `qos`, count what arrives.
     * Payloads carry a big-endian u32 sequence number 0..n-1 at offset 0, so loss and
     * duplicates are checked, not assumed. At QoS 0, every 256 messages the count goes to
     * the publisher (window.benchProgress, a CDP binding: fire and forget), which paces
     * itself with it (see run.mjs).
     */
    async recvStart(url, clientId, topic, qos, n) {
      client = await adapter.connect(url, clientId);
      const seen = new Uint8Array(n);
      const r = { n, count: 0, unique: 0, dup: 0, foreign: 0, first: 0, last: 0, done: null, progressMs: 0 };
      r.finished = new Promise((resolve) => (r.done = resolve));
      const report = qos === 0 ? 255 : -1;
      client.onMessage((_topic, payload) => {
        const t = performance.now();
        if (r.count === 0) r.first = t;
        r.last = t;
        r.count++;
        const seq = payload.length >= 4 ? ((payload[0] << 24) | (payload[1] << 16) | (payload[2] << 8) | payload[3]) >>> 0 : n;
        if (seq >= n) r.foreign++;
        else if (seen[seq]) r.dup++;
        else {
          seen[seq] = 1;
          r.unique++;
        }
        if ((r.count & report) === 0) {
          window.benchProgress(String(r.count));
          r.progressMs += performance.now() - t;
        }
        if (r.unique === n) r.done();
      });
      await client.subscribe(topic, qos);
      recv = r;
      return "subscribed";
    },

    /**
     * Receive run, step 2 (after the publisher is done): waits until all n arrived, or until
     * nothing arrived for `idleMs` (QoS 0 may lose; at QoS 1 that is a failure run.mjs
     * reports), and reports the figures. `finish()` follows.
     */
    async recvWait(idleMs) {
      const r = recv;
      for (;;) {
        const before = r.count;
        const timedOut = await Promise.race([r.finished.then(() => false), new Promise((res) => setTimeout(res, idleMs, true))]);
        if (!timedOut || r.count === before) break;
      }
      const secs = (r.last - r.first) / 1000;
      return {
        n: r.n, received: r.count, unique: r.unique, lost: r.n - r.unique, duplicates: r.dup, foreign: r.foreign,
        seconds: secs, perSecond: secs > 0 ? r.count / secs : 0,
        // Time spent in this handler's progress reports (the measuring's own cost).
        progressMs: r.progressMs,
      };
    },

    /**
     * Round trips, step 1: connect, subscribe for "qos0-own", and `warmup` unmeasured ones.
     * QoS 1 ("qos1"): publish → promise resolved at PUBACK. QoS 0 ("qos0-own"): publish to a
     * topic this client subscribes to → the message received back. One at a time.
     */
    async rttStart(url, clientId, topic, mode, warmup) {
      client = await adapter.connect(url, clientId);
      const c = client;
      const payload = payloadOf(64, 0);
      let arrived = null;
      if (mode === "qos0-own") {
        c.onMessage(() => arrived && arrived());
        await c.subscribe(topic, 0);
      }
      rtt = mode === "qos0-own"
        ? () => new Promise((resolve, reject) => {
            arrived = resolve;
            c.publish(topic, payload, 0).catch(reject);
          })
        : () => c.publish(topic, payload, 1);
      for (let i = 0; i < warmup; i++) await rtt();
      return "warm";
    },

    /** Publish run, step 1: connect (run.mjs subscribes its counting subscriber meanwhile). */
    async pubStart(url, clientId) {
      client = await adapter.connect(url, clientId);
      return "connected";
    },

    /**
     * Publish run, step 2: n numbered 64-byte messages to `topic` at QoS 1, at most `window`
     * not yet acknowledged (at MQTT 3.1.1 neither library knows the broker's receive maximum,
     * so the window is this page's, the same for both: see run.mjs). The payloads are made before the clock
     * starts. Timed from the first `publish` call to the last promise resolved (the last
     * PUBACK). `finish()` follows.
     */
    async pubRun(topic, n, window) {
      const c = client;
      let payloads = Array.from({ length: n }, (_, i) => payloadOf(64, i));
      let sent = 0;
      let acked = 0;
      // Why the connection went, if it does (a rejected publish says only that it ended).
      let lastError = null;
      c.onError((e) => (lastError = e && e.message));
      const start = performance.now();
      await new Promise((resolve, reject) => {
        const pump = () => {
          while (sent < n && sent - acked < window) {
            c.publish(topic, payloads[sent++], 1).then(() => {
              acked++;
              if (acked === n) resolve();
              else pump();
            }, (e) => reject(new Error(`publish ${acked + 1} of ${n} failed: ${e && e.message}; last error event: ${lastError}`)));
          }
        };
        pump();
      });
      const secs = (performance.now() - start) / 1000;
      // The error listener keeps this scope alive: let the payloads go before finish()
      // measures the heap.
      payloads = null;
      return { n, acked, seconds: secs, perSecond: n / secs };
    },

    /** Round trips, step 2: as many as fit in `seconds`, each timed. `finish()` follows. */
    async rttRun(seconds) {
      const times = [];
      const start = performance.now();
      const end = start + seconds * 1000;
      let t0 = start;
      while (t0 < end) {
        await rtt();
        const t1 = performance.now();
        times.push((t1 - t0) * 1000);
        t0 = t1;
      }
      return { ...percentiles(times), perSecond: times.length / ((t0 - start) / 1000) };
    },
  };
}

try {
  const adapter = lib === "wasm" ? await wasmAdapter() : lib === "mqttjs" ? await mqttjsAdapter() : null;
  if (!adapter) throw new Error(`unknown ?lib=${lib}; expected wasm or mqttjs`);
  window.bench = makeBench(adapter);
  window.ready = "ok";
} catch (e) {
  window.ready = `loading ${lib} failed: ${e && e.stack ? e.stack : e}`;
}
