// MQTT.js (npm `mqtt`, version 5) as a third-party client for the interop tests
// (tests/interop.rs). One run is one client connection playing one role.
//
//   node tests/interop/mqttjs.mjs URL ROLE [options] [QOS:RETAIN:PAYLOAD ...]
//
// URL is `ws://host:port/mqtt` (or `mqtt://host:port`). `mqtt` resolves from the repository's
// node_modules (installed by scripts/setup.sh), whatever the working directory.
//
// Roles:
//   sub   connect, subscribe to --topic at --qos (unless --no-subscribe), print READY, print
//         every message; with --count N end after N messages (and --linger seconds more),
//         else end after --wait seconds; end with DISCONNECT, or with --end abrupt by
//         destroying the socket (a network loss: the broker must publish the will).
//   pub   connect, publish each QOS:RETAIN:PAYLOAD to --topic in order, each one waited for
//         (PUBACK / PUBCOMP), then DISCONNECT.
//
// Options: --mqtt 4|5 (protocol level), --id ID, --clean 0|1, --expiry SECS (5.0 Session
// Expiry Interval), --will-topic T --will-payload P --will-qos Q --will-retain 0|1.
//
// Output, one line each, for the Rust side to check:
//   CONNACK session_present=0|1 code=N
//   SUBACK G...            (granted QoS or reason code per filter)
//   READY
//   MSG QOS RETAIN TOPIC PAYLOAD
//   PUBLISHED QOS PAYLOAD
//   DISCONNECTED | ABRUPT
// Exit codes: 0 done, 2 usage or connection failure, 3 timed out waiting for messages.

import mqtt from "mqtt";

const out = (line) => process.stdout.write(`${line}\n`);
const fail = (code, why) => {
  process.stderr.write(`mqttjs: ${why}\n`);
  process.exit(code);
};

function parseArgs(argv) {
  if (argv.length < 2) fail(2, "usage: mqttjs.mjs URL sub|pub [options] [QOS:RETAIN:PAYLOAD ...]");
  const o = {
    url: argv[0],
    role: argv[1],
    mqtt: 4,
    id: undefined,
    clean: true,
    expiry: undefined,
    topic: undefined,
    qos: 0,
    subscribe: true,
    count: 0,
    wait: 5,
    linger: 0,
    will: undefined,
    end: "disconnect",
    messages: [],
  };
  const will = {};
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(2, `${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case "--mqtt": o.mqtt = Number(value()); break;
      case "--id": o.id = value(); break;
      case "--clean": o.clean = value() === "1"; break;
      case "--expiry": o.expiry = Number(value()); break;
      case "--topic": o.topic = value(); break;
      case "--qos": o.qos = Number(value()); break;
      case "--no-subscribe": o.subscribe = false; break;
      case "--count": o.count = Number(value()); break;
      case "--wait": o.wait = Number(value()); break;
      case "--linger": o.linger = Number(value()); break;
      case "--end": o.end = value(); break;
      case "--will-topic": will.topic = value(); break;
      case "--will-payload": will.payload = value(); break;
      case "--will-qos": will.qos = Number(value()); break;
      case "--will-retain": will.retain = value() === "1"; break;
      default:
        if (a.startsWith("--")) fail(2, `unknown option ${a}`);
        o.messages.push(a);
    }
  }
  if (will.topic !== undefined) {
    o.will = { topic: will.topic, payload: will.payload ?? "", qos: will.qos ?? 0, retain: will.retain ?? false };
  }
  if (o.topic === undefined && (o.role === "pub" || o.subscribe)) fail(2, "--topic is required");
  if (!["sub", "pub"].includes(o.role)) fail(2, `unknown role ${o.role}`);
  if (!["disconnect", "abrupt"].includes(o.end)) fail(2, `unknown --end ${o.end}`);
  return o;
}

const o = parseArgs(process.argv.slice(2));

const options = {
  protocolVersion: o.mqtt,
  clean: o.clean,
  reconnectPeriod: 0,
  connectTimeout: 5000,
  keepalive: 30,
};
if (o.id !== undefined) options.clientId = o.id;
if (o.mqtt === 5 && o.expiry !== undefined) options.properties = { sessionExpiryInterval: o.expiry };
if (o.will !== undefined) options.will = o.will;

// Nothing may hang: the Rust side kills us too, but a stuck client should say so itself.
const watchdog = setTimeout(() => fail(3, "watchdog: the scenario did not finish"), (o.wait + o.linger + 10) * 1000);
watchdog.unref();

const client = mqtt.connect(o.url, options);
let ending = false;
client.on("error", (e) => fail(2, `client error: ${e.message}`));
client.on("close", () => {
  if (!ending) fail(2, "the connection closed unexpectedly");
});

async function end() {
  if (ending) return;
  ending = true;
  if (o.end === "abrupt") {
    // A network loss, as the broker sees it: no DISCONNECT, the socket just goes away.
    const stream = client.stream;
    stream.once("close", () => {
      out("ABRUPT");
      process.exit(0);
    });
    stream.destroy();
    setTimeout(() => fail(2, "the socket did not close after destroy()"), 2000);
    return;
  }
  await client.endAsync();
  out("DISCONNECTED");
  process.exit(0);
}

// Registered before CONNACK: a resumed session's messages may follow it immediately.
let received = 0;
client.on("message", (topic, payload, packet) => {
  out(`MSG ${packet.qos} ${packet.retain ? 1 : 0} ${topic} ${payload.toString()}`);
  received += 1;
  if (o.count > 0 && received === o.count) setTimeout(end, o.linger * 1000);
});

client.once("connect", async (connack) => {
  out(`CONNACK session_present=${connack.sessionPresent ? 1 : 0} code=${connack.reasonCode ?? connack.returnCode ?? 0}`);
  try {
    if (o.role === "pub") {
      for (const m of o.messages) {
        const [qos, retain, ...rest] = m.split(":");
        const payload = rest.join(":");
        await client.publishAsync(o.topic, payload, { qos: Number(qos), retain: retain === "1" });
        out(`PUBLISHED ${qos} ${payload}`);
      }
      await end();
      return;
    }
    if (o.subscribe) {
      const granted = await client.subscribeAsync(o.topic, { qos: o.qos });
      out(`SUBACK ${granted.map((g) => g.qos).join(" ")}`);
    }
    out("READY");
    if (o.count === 0) {
      setTimeout(end, o.wait * 1000);
    } else {
      setTimeout(() => {
        if (received < o.count) fail(3, `timed out: ${received} of ${o.count} messages within ${o.wait} s`);
      }, o.wait * 1000);
    }
  } catch (e) {
    fail(2, `${o.role} failed: ${e.message}`);
  }
});
