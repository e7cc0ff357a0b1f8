//! `$SYS/broker/...` as MQTT users read it: `mosquitto_sub -t '$SYS/#' -v` against a real
//! bridge publishing every second (`[broker] sys_interval = 1`).
//!
//! The counters are global, so the test that asserts exact values has a bridge of its own
//! (a shared one would count the other tests' clients); the others each start one too,
//! with the setting they are about. Each bridge starts in milliseconds.
//!
//! # Needs
//! `mosquitto_sub` (Debian `mosquitto-clients`; `scripts/setup.sh` installs it).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use e2e::protocol::{ProtocolVersion, QoS};
use e2e::{clean, persistent, Bridge, Transport};
use tokio::process::Command;

const V311: ProtocolVersion = ProtocolVersion::V311;

/// Runs `mosquitto_sub` against `bridge` with `args` (it must end by itself: `-W`, `-C`),
/// and returns its standard output.
async fn mosquitto_sub(bridge: &Bridge, args: &[&str]) -> String {
    let addr = bridge.mqtt_addr();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new("mosquitto_sub")
            .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mosquitto_sub ended within 20 s")
    .expect("mosquitto_sub runs (scripts/setup.sh installs mosquitto-clients)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The retained messages in `mosquitto_sub -F %j` output (one JSON object a line): topic to
/// payload, the first value of each topic (what was retained when the subscription was
/// made; later lines are live updates, RETAIN 0).
fn retained(output: &str) -> HashMap<String, String> {
    let mut values = HashMap::new();
    for line in output.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let (Some(topic), Some(payload)) = (m["topic"].as_str(), m["payload"].as_str()) else {
            panic!("unexpected line {line}");
        };
        if m["retain"].as_bool() == Some(true) || m["retain"].as_u64() == Some(1) {
            values
                .entry(topic.to_owned())
                .or_insert_with(|| payload.to_owned());
        }
    }
    values
}

fn number(values: &HashMap<String, String>, topic: &str) -> u64 {
    let text = values
        .get(topic)
        .unwrap_or_else(|| panic!("no retained {topic} in {values:?}"));
    text.parse()
        .unwrap_or_else(|_| panic!("{topic}: {text:?} is not a number"))
}

#[tokio::test]
async fn mosquitto_sub_sees_version_uptime_and_exact_counters_after_a_known_workload() {
    let bridge = Bridge::start_with_config("[broker]\nsys_interval = 1\nmax_queued_messages = 1\n");
    // The first pass starts the load averages at 0 (as mosquitto's at start): what came
    // before it is not in them. It runs at the first tick.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Three clients at once; `c3` leaves its session behind before the messages.
    let mut c1 = bridge.client(Transport::Tcp, persistent(V311, "c1")).await;
    c1.subscribe("w/#", QoS::AtLeastOnce).await;
    let mut c3 = bridge.client(Transport::Tcp, persistent(V311, "c3")).await;
    c3.subscribe("w/#", QoS::AtLeastOnce).await;
    let mut c2 = bridge.client(Transport::Tcp, clean(V311, "c2")).await;
    c3.disconnect().await;
    c2.publish("w/1", "m1", QoS::AtMostOnce, false).await;
    c2.publish("w/2", "m2", QoS::AtLeastOnce, false).await;
    c2.publish("w/3", "m3", QoS::AtLeastOnce, true).await;
    c2.disconnect().await;
    assert_eq!(c1.recv_payloads(3).await, ["m1", "m2", "m3"]);
    // Its PUBACKs are in before the PINGRESP comes back.
    c1.sync().await;
    // A pass after the workload (one a second, on ticks of 250 ms).
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let out = mosquitto_sub(&bridge, &["-t", "$SYS/#", "-F", "%j", "-W", "2"]).await;
    let v = retained(&out);
    assert_eq!(
        v.get("$SYS/broker/version").map(String::as_str),
        Some(concat!("mqtt-bridge ", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let uptime = &v["$SYS/broker/uptime"];
    let secs: u64 = uptime.strip_suffix(" seconds").unwrap().parse().unwrap();
    assert!(secs >= 2, "{uptime}");
    // The reader itself is counted if a pass ran between its CONNECT and its SUBSCRIBE:
    // one more client, CONNECT in and CONNACK out.
    let reader = number(&v, "$SYS/broker/clients/connected") - 1;
    assert!(reader <= 1);
    assert_eq!(number(&v, "$SYS/broker/clients/disconnected"), 1, "c3");
    assert_eq!(number(&v, "$SYS/broker/clients/total"), 2 + reader);
    assert_eq!(number(&v, "$SYS/broker/clients/maximum"), 3);
    // In: c1 CONNECT SUBSCRIBE PUBACK PUBACK PINGREQ, c3 CONNECT SUBSCRIBE DISCONNECT,
    // c2 CONNECT PUBLISH x3 DISCONNECT. Out: c1 CONNACK SUBACK PUBLISH x3 PINGRESP,
    // c3 CONNACK SUBACK, c2 CONNACK PUBACK x2.
    assert_eq!(number(&v, "$SYS/broker/messages/received"), 13 + reader);
    assert_eq!(number(&v, "$SYS/broker/messages/sent"), 11 + reader);
    assert_eq!(number(&v, "$SYS/broker/publish/messages/received"), 3);
    assert_eq!(number(&v, "$SYS/broker/publish/messages/sent"), 3);
    // c3's queue holds one: m2 queued, m3 pushed it out (drop-oldest).
    assert_eq!(number(&v, "$SYS/broker/publish/messages/dropped"), 1);
    assert_eq!(number(&v, "$SYS/broker/messages/stored"), 1);
    assert_eq!(number(&v, "$SYS/broker/store/messages/count"), 1);
    assert_eq!(number(&v, "$SYS/broker/subscriptions/count"), 2);
    assert_eq!(number(&v, "$SYS/broker/publish/bytes/received"), 6);
    assert_eq!(number(&v, "$SYS/broker/publish/bytes/sent"), 6);
    // Whole packets: at least two bytes each, plus the payloads.
    assert!(number(&v, "$SYS/broker/bytes/received") >= 2 * 13 + 6);
    assert!(number(&v, "$SYS/broker/bytes/sent") >= 2 * 11 + 6);
    // `w/3`, and the `$SYS` topics themselves (retained too, as in mosquitto).
    let sys_retained = v.keys().filter(|t| t.starts_with("$SYS/")).count() as u64;
    assert_eq!(
        number(&v, "$SYS/broker/retained messages/count"),
        1 + sys_retained
    );
    // Three PUBLISHes in a second or two: a per-minute rate averaged over one minute is
    // just under 3 (decaying since), over fifteen minutes 3 / 15 = 0.2.
    let load: f64 = v["$SYS/broker/load/publish/received/1min"].parse().unwrap();
    assert!(load > 2.0 && load <= 3.0, "{load}");
    let load15: f64 = v["$SYS/broker/load/publish/received/15min"]
        .parse()
        .unwrap();
    assert!(load15 > 0.15 && load15 <= 0.2, "{load15}");
    let connections: f64 = v["$SYS/broker/load/connections/1min"].parse().unwrap();
    assert!(connections > 2.0 && connections <= 4.0, "{connections}");
}

/// [MQTT-4.7.2-1]: a filter starting with a wildcard does not match a topic starting `$`.
#[tokio::test]
async fn a_subscriber_to_hash_receives_no_sys_message_mqtt_4_7_2_1() {
    let bridge = Bridge::start_with_config("[broker]\nsys_interval = 1\n");
    let mut publisher = bridge.client(Transport::Tcp, clean(V311, "p")).await;
    // Retained, so the subscriber gets it whenever it subscribes.
    publisher
        .publish("news/today", "hello", QoS::AtLeastOnce, true)
        .await;
    let out = mosquitto_sub(&bridge, &["-t", "#", "-t", "+/broker/#", "-v", "-W", "3"]).await;
    assert!(out.contains("news/today hello"), "{out}");
    assert!(!out.contains("$SYS"), "{out}");
    // While `$SYS/#` shows them.
    let out = mosquitto_sub(&bridge, &["-t", "$SYS/#", "-v", "-W", "2"]).await;
    assert!(out.contains("$SYS/broker/uptime "), "{out}");
}

#[tokio::test]
async fn with_sys_interval_0_nothing_is_published_on_sys() {
    let bridge = Bridge::start_with_config("[broker]\nsys_interval = 0\n");
    let out = mosquitto_sub(&bridge, &["-t", "$SYS/#", "-v", "-W", "3"]).await;
    assert_eq!(out, "");
}
