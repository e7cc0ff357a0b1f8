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
