// The parts of src/client/ that cost fewer bytes written in JavaScript than through bindings.

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
