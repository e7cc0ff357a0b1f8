// The `message` listener's packet object, built in one call: from Rust, every property set
// is a key string crossing the boundary, which cost more than the MQTT work per message.
export function publishPacket(topic, payload, qos, retain, dup, messageId, properties) {
  const p = { cmd: "publish", topic, payload, qos, retain, dup };
  if (messageId) p.messageId = messageId;
  if (properties) p.properties = properties;
  return p;
}
