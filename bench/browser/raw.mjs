// The MQTT side of the browser client benchmark that runs in Node (bench/browser/run.mjs):
// a minimal MQTT 3.1.1 client over TCP, the raw publisher that feeds the receive runs, and
// the counting subscriber of the reference run and of the publish run. Pre-encoded packets
// and no library, so that it costs the machine as little as possible and measures neither
// browser client by its own code.
import { connect as tcpConnect } from "node:net";

const enc = new TextEncoder();

/** A remaining-length field [MQTT-2.2.3]. */
function varint(n) {
  const out = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}
const u16 = (n) => [n >> 8, n & 0xff];
const str = (s) => [...u16(enc.encode(s).length), ...enc.encode(s)];
const packet = (first, body) => Buffer.from([first, ...varint(body.length), ...body]);

/**
 * One TCP connection speaking just enough MQTT 3.1.1: CONNECT, SUBSCRIBE, PUBLISH QoS 0/1
 * out, and packets in, split by their fixed header and handed to `onPacket(type, flags, body)`.
 */
export class RawClient {
  static async connect(host, port, clientId) {
    const c = new RawClient();
    c.sock = tcpConnect({ host, port, noDelay: true });
    c.buf = Buffer.alloc(0);
    c.waiters = new Map();
    c.onPacket = () => {};
    c.sock.on("data", (d) => c.data(d));
    c.closed = new Promise((resolve) => c.sock.on("close", resolve));
    await new Promise((resolve, reject) => {
      c.sock.once("connect", resolve);
      c.sock.once("error", reject);
    });
    c.sock.on("error", () => {});
    const connack = c.next(2);
    // CONNECT: protocol name, level 4, clean session, keep-alive 0 (off), client id.
    c.sock.write(packet(0x10, [...str("MQTT"), 4, 0x02, 0, 0, ...str(clientId)]));
    const ack = await connack;
    if (ack[1] !== 0) throw new Error(`${clientId}: CONNACK return code ${ack[1]}`);
    return c;
  }

  data(d) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    let at = 0;
    for (;;) {
      let len = 0, mul = 1, i = at + 1, complete = false;
      while (i < this.buf.length) {
        const b = this.buf[i++];
        len += (b & 0x7f) * mul;
        mul *= 128;
        if (!(b & 0x80)) {
          complete = true;
          break;
        }
      }
      if (!complete || i + len > this.buf.length) break;
      const type = this.buf[at] >> 4, flags = this.buf[at] & 0x0f;
      const body = this.buf.subarray(i, i + len);
      at = i + len;
      const w = this.waiters.get(type);
      if (w) {
        this.waiters.delete(type);
        w(body);
      } else this.onPacket(type, flags, body);
    }
    this.buf = this.buf.subarray(at);
  }

  /** Resolves with the body of the next packet of `type` (for CONNACK, SUBACK). */
  next(type) {
    return new Promise((resolve) => this.waiters.set(type, resolve));
  }

  async subscribe(filter, qos) {
    const suback = this.next(9);
    this.sock.write(packet(0x82, [...u16(1), ...str(filter), qos]));
    await suback;
  }

  /** Writes `buf`; resolves once the socket can take more (backpressure). */
  write(buf) {
    return this.sock.write(buf) ? null : new Promise((r) => this.sock.once("drain", r));
  }

  async end() {
    this.sock.end(Buffer.from([0xe0, 0]));
    await Promise.race([this.closed, new Promise((r) => setTimeout(r, 1000))]);
    this.sock.destroy();
  }
}

/**
 * Publishes messages 0..n-1 to `topic` at `qos` (64-byte payloads, the sequence number as a
 * big-endian u32 at offset 0). QoS 1: at most 256 unacknowledged (the bridge's receive
 * maximum). QoS 0: at most `window` ahead of `progress.count` (what the receiver reported);
 * if the receiver reports nothing for 500 ms (it lost messages, allowed at QoS 0) the window
 * moves on anyway. Resolves with the seconds it took.
 */
export async function publish(pub, topic, qos, n, progress, window) {
  const t = enc.encode(topic);
  const head = [qos ? 0x32 : 0x30, ...varint(2 + t.length + (qos ? 2 : 0) + 64), ...u16(t.length), ...t];
  const size = head.length + (qos ? 2 : 0) + 64;
  const template = Buffer.alloc(size);
  template.set(head, 0);
  const seqAt = head.length + (qos ? 2 : 0);
  const BATCH = 64;
  const start = performance.now();
  let sent = 0;
  const fill = (count, ids) => {
    const b = Buffer.alloc(size * count);
    for (let k = 0; k < count; k++) {
      template.copy(b, k * size);
      if (qos) b.writeUInt16BE(ids[k], k * size + head.length);
      b.writeUInt32BE(sent + k, k * size + seqAt);
    }
    sent += count;
    return b;
  };
  if (qos === 0) {
    let credit = 0; // extra allowance after a stall
    while (sent < n) {
      const allowed = Math.min(n - sent, progress.count + window + credit - sent, BATCH);
      if (allowed <= 0) {
        const moved = await progress.wait(500);
        if (!moved) credit += window;
        continue;
      }
      const w = pub.write(fill(allowed));
      if (w) await w;
    }
  } else {
    const free = [];
    for (let id = 256; id >= 1; id--) free.push(id);
    let inflight = 0;
    let wake = null;
    pub.onPacket = (type, _flags, body) => {
      if (type === 4) {
        free.push(body.readUInt16BE(0));
        inflight--;
        if (wake) wake();
      }
    };
    while (sent < n || inflight > 0) {
      const count = Math.min(n - sent, free.length, BATCH);
      if (count > 0) {
        const ids = free.splice(free.length - count, count);
        inflight += count;
        const w = pub.write(fill(count, ids));
        if (w) await w;
        continue;
      }
      await new Promise((r) => (wake = r));
      wake = null;
    }
    pub.onPacket = () => {};
  }
  return (performance.now() - start) / 1000;
}

/** The receiver's count as reported by the page (or the reference subscriber). */
export function makeProgress() {
  const p = { count: 0, waiters: [] };
  p.report = (count) => {
    p.count = Math.max(p.count, count);
    for (const w of p.waiters.splice(0)) w(true);
  };
  p.wait = (ms) =>
    new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      p.waiters.push((v) => {
        clearTimeout(t);
        resolve(v);
      });
    });
  return p;
}

/**
 * A subscriber on its own TCP connection that counts the numbered messages 0..n-1 arriving on
 * `topic` (the sequence number as a big-endian u32 at the start of the payload), acknowledging
 * QoS 1, and reports its count to `progress` every 256 messages. `wait(idleMs)` resolves
 * once all n arrived, or nothing arrived for `idleMs`, with the figures; then it disconnects.
 */
export async function countingSubscriber(host, port, clientId, topic, qos, n, progress) {
  const sub = await RawClient.connect(host, port, clientId);
  await sub.subscribe(topic, qos);
  const seen = new Uint8Array(n);
  const r = { n, received: 0, unique: 0, dup: 0, first: 0, last: 0 };
  let done;
  const finished = new Promise((res) => (done = res));
  sub.onPacket = (type, flags, body) => {
    if (type !== 3) return;
    const t = performance.now();
    if (r.received === 0) r.first = t;
    r.last = t;
    r.received++;
    const tlen = body.readUInt16BE(0);
    let at = 2 + tlen;
    if (flags & 0x06) {
      sub.sock.write(Buffer.from([0x40, 2, body[at], body[at + 1]]));
      at += 2;
    }
    const seq = body.readUInt32BE(at);
    if (seq < n && !seen[seq]) {
      seen[seq] = 1;
      r.unique++;
    } else r.dup++;
    if (progress && (r.received & 255) === 0) progress.report(r.received);
    if (r.unique === n) done();
  };
  return {
    async wait(idleMs) {
      for (;;) {
        const before = r.received;
        const timedOut = await Promise.race([finished.then(() => false), new Promise((res) => setTimeout(res, idleMs, true))]);
        if (!timedOut || r.received === before) break;
      }
      await sub.end();
      const secs = (r.last - r.first) / 1000;
      return { n, received: r.received, lost: n - r.unique, duplicates: r.dup, seconds: secs, perSecond: r.received / secs };
    },
  };
}
