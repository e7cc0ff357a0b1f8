//! `GET /metrics`: after a known workload through a real bridge, the Prometheus text is
//! parsed by a real parser (the `prometheus-parse` crate) and the counters, gauges and the
//! latency histogram are checked to the unit; and who may read it (`[api] token`,
//! `[metrics] token`).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::protocol::{Connect, Packet, ProtocolVersion, QoS, ReasonCode};
use e2e::{clean, persistent, Bridge, Transport};
use prometheus_parse::{Sample, Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const TIMEOUT: Duration = Duration::from_secs(5);
const ADMIN: &str = "admin-token-0123456789abcdef";
const SCRAPER: &str = "scrape-token-0123456789abcdef";

/// One bridge for the file: an admin token and a scrape token, an offline queue of two.
fn config() -> String {
    format!(
        // No $SYS: its retained messages would count in the retained gauges checked here.
        "[broker]\nmax_queued_messages = 2\nsys_interval = 0\n\n[api]\ntoken = \"{ADMIN}\"\n\n\
         [metrics]\ntoken = \"{SCRAPER}\"\n"
    )
}

/// `GET path` with an optional bearer token: the status, the headers and the body.
async fn get(bridge: &Bridge, path: &str, token: Option<&str>) -> (u16, String, String) {
    let host = bridge
        .http_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut s = TcpStream::connect(&host).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, head.to_owned(), body.to_owned())
}

/// The samples of one scrape, by name and labels.
struct Metrics(Vec<Sample>);

impl Metrics {
    async fn scrape(bridge: &Bridge) -> Metrics {
        let (status, head, body) = get(bridge, "/metrics", Some(SCRAPER)).await;
        assert_eq!(status, 200, "{head}\n{body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        Metrics(Scrape::parse(lines).unwrap().samples)
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .0
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {} samples", found.len());
        match &found[0].value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name}: not a number: {other:?}"),
        }
    }

    /// The `_count` of histogram `name`.
    fn histogram_count(&self, name: &str) -> u64 {
        let s = self
            .0
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("no {name}"));
        match &s.value {
            Value::Histogram(buckets) => {
                // The buckets are cumulative and end with +Inf: its count is the total.
                buckets.last().map_or(0.0, |b| b.count) as u64
            }
            other => panic!("{name}: not a histogram: {other:?}"),
        }
    }

    fn by_qos(&self, name: &str) -> [f64; 3] {
        ["0", "1", "2"].map(|q| self.value(name, &[("qos", q)]))
    }
}

#[tokio::test]
async fn after_a_known_workload_the_counters_gauges_and_latency_histogram_are_exact() {
    let bridge = Bridge::start_with_config(&config());
    // Two online subscribers, one per transport and version, and one offline session whose
    // queue of two overflows.
    let mut s1 = bridge.client(Transport::Tcp, clean(V5, "s1")).await;
    s1.subscribe("m/#", QoS::ExactlyOnce).await;
    let mut s2 = bridge.client(Transport::Ws, clean(V311, "s2")).await;
    s2.subscribe("m/#", QoS::ExactlyOnce).await;
    let (mut q, _) = bridge
        .connect(Transport::Tcp, persistent(V5, "q"))
        .await
        .unwrap();
    q.subscribe("d/t", QoS::AtLeastOnce).await;
    q.disconnect().await;

    // 3 × QoS 0 of 10 bytes, 2 × QoS 1 of 100, 1 × QoS 2 of 1000 to both subscribers; then
    // 5 × QoS 1 of 5 bytes into the offline queue of two: 3 dropped as queue_full.
    let mut p = bridge.client(Transport::Tcp, clean(V5, "p")).await;
    for (n, qos, size) in [
        (3, QoS::AtMostOnce, 10),
        (2, QoS::AtLeastOnce, 100),
        (1, QoS::ExactlyOnce, 1000),
    ] {
        for _ in 0..n {
            p.publish("m/x", vec![b'x'; size], qos, false).await;
        }
    }
    for _ in 0..5 {
        p.publish("d/t", vec![b'd'; 5], QoS::AtLeastOnce, false)
            .await;
    }
    s1.recv_payloads(6).await;
    s2.recv_payloads(6).await;
    // The acknowledgements settle (QoS 2 takes two round trips: PUBREC, PUBREL, PUBCOMP).
    for s in [&mut s1, &mut s2] {
        s.sync().await;
        s.sync().await;
    }

    // Refused CONNECTs: an unsupported protocol level (answered by the connection task
    // [MQTT-3.1.2-2]) and an authentication method (answered by the engine [MQTT-4.12.0-1]).
    let mut connect = bytes::BytesMut::new();
    Packet::Connect(Box::new(Connect::new(V311, "future", true)))
        .encode(V311, &mut connect)
        .unwrap();
    connect[8] = 6;
    let mut raw = bridge.raw(Transport::Tcp).await;
    raw.send_bytes(&connect).await;
    assert!(matches!(raw.read_packet().await, Some(Packet::ConnAck(_))));
    let mut o = clean(V5, "scram");
    o.connect_properties.authentication_method = Some("SCRAM-SHA-1".into());
    let ack = bridge.expect_refused(Transport::Ws, o).await;
    assert_eq!(ack.reason, ReasonCode::BadAuthenticationMethod);

    let m = Metrics::scrape(&bridge).await;
    assert_eq!(
        m.by_qos("mqtt_bridge_messages_received_total"),
        [3.0, 7.0, 1.0]
    );
    assert_eq!(
        m.by_qos("mqtt_bridge_messages_received_payload_bytes_total"),
        [30.0, 225.0, 1000.0]
    );
    assert_eq!(m.by_qos("mqtt_bridge_messages_sent_total"), [6.0, 4.0, 2.0]);
    assert_eq!(
        m.by_qos("mqtt_bridge_messages_sent_payload_bytes_total"),
        [60.0, 400.0, 2000.0]
    );
    // One latency observation per PUBLISH handed to a subscriber.
    assert_eq!(
        m.histogram_count("mqtt_bridge_delivery_latency_seconds"),
        12
    );
    let dropped = |reason| m.value("mqtt_bridge_messages_dropped_total", &[("reason", reason)]);
    assert_eq!(dropped("queue_full"), 3.0);
    for reason in ["expired", "too_large", "slow_qos0", "not_authorized"] {
        assert_eq!(dropped(reason), 0.0, "{reason}");
    }
    let refused = |code| m.value("mqtt_bridge_connects_refused_total", &[("code", code)]);
    assert_eq!(refused("0x84"), 1.0, "unsupported protocol version");
    assert_eq!(refused("0x8C"), 1.0, "bad authentication method");
    let open = |transport, version| {
        m.value(
            "mqtt_bridge_connections",
            &[("transport", transport), ("version", version)],
        )
    };
    assert_eq!(open("tcp", "5.0"), 2.0, "s1 and p");
    assert_eq!(open("websocket", "3.1.1"), 1.0, "s2");
    assert_eq!(open("tcp", "3.1.1"), 0.0);
    assert_eq!(open("websocket", "5.0"), 0.0);
    // s1, s2, q, p, the raw client and the refused one.
    assert_eq!(m.value("mqtt_bridge_connections_accepted_total", &[]), 6.0);
    let sessions = |state| m.value("mqtt_bridge_sessions", &[("state", state)]);
    assert_eq!(sessions("online"), 3.0);
    assert_eq!(sessions("offline"), 1.0);
    assert_eq!(m.value("mqtt_bridge_messages_queued", &[]), 2.0);
    assert_eq!(m.value("mqtt_bridge_messages_inflight", &[]), 0.0);
    assert!(m.histogram_count("mqtt_bridge_engine_batch_size_commands") > 0);
    assert!(m.value("process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.value("process_open_fds", &[]) >= 3.0);

    // A retained message and its bytes; and a gone subscriber leaves the gauge.
    p.publish("r/t", vec![b'r'; 42], QoS::AtLeastOnce, true)
        .await;
    s2.disconnect().await;
    let m = Metrics::scrape(&bridge).await;
    assert_eq!(m.value("mqtt_bridge_retained_messages", &[]), 1.0);
    assert_eq!(m.value("mqtt_bridge_retained_payload_bytes", &[]), 42.0);
    assert_eq!(
        m.value(
            "mqtt_bridge_connections",
            &[("transport", "websocket"), ("version", "3.1.1")]
        ),
        0.0
    );
    s1.disconnect().await;
    p.disconnect().await;
}

#[tokio::test]
async fn with_an_api_token_metrics_need_a_bearer_token_and_the_scrape_token_opens_only_metrics() {
    let bridge = Bridge::start_with_config(&config());
    let (status, _, _) = get(&bridge, "/metrics", None).await;
    assert_eq!(status, 401, "no token");
    let (status, _, _) = get(&bridge, "/metrics", Some("wrong-token-0123456789abcdef")).await;
    assert_eq!(status, 401, "a wrong token");
    let (status, _, body) = get(&bridge, "/metrics", Some(SCRAPER)).await;
    assert_eq!(status, 200, "the [metrics] token");
    assert!(
        body.contains("# TYPE mqtt_bridge_messages_received_total counter"),
        "{body}"
    );
    let (status, _, _) = get(&bridge, "/metrics", Some(ADMIN)).await;
    assert_eq!(status, 200, "the [api] token");
    let (status, _, _) = get(&bridge, "/api/v1/stats", Some(SCRAPER)).await;
    assert_eq!(status, 401, "the scrape token does not open the admin API");
}

#[tokio::test]
async fn without_any_token_metrics_answer_a_client_on_this_machine() {
    let bridge = Bridge::start();
    let (status, _, body) = get(&bridge, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("mqtt_bridge_connections_accepted_total 0"),
        "{body}"
    );
}

/// Review 15: the latency histogram is PUBLISH→delivery; a retained message handed to a new
/// subscriber is not a delivery that took as long as the message is old. Fails today: the
/// retained message's age (here over a second) is observed as its latency.
#[tokio::test]
async fn a_retained_message_sent_to_a_later_subscriber_is_not_observed_as_its_age() {
    let bridge = Bridge::start_with_config(&config());
    let mut p = bridge.client(Transport::Tcp, clean(V5, "rp")).await;
    p.publish("old/r", b"v".to_vec(), QoS::AtLeastOnce, true)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut s = bridge.client(Transport::Tcp, clean(V5, "rs")).await;
    s.subscribe("old/r", QoS::AtLeastOnce).await;
    s.recv_payloads(1).await;
    let m = Metrics::scrape(&bridge).await;
    let s =
        m.0.iter()
            .find(|s| s.metric == "mqtt_bridge_delivery_latency_seconds")
            .unwrap();
    let Value::Histogram(buckets) = &s.value else {
        panic!("not a histogram")
    };
    let total = buckets.last().unwrap().count;
    let within_1s = buckets.iter().find(|b| b.less_than == 1.0).unwrap().count;
    assert_eq!(
        total - within_1s,
        0.0,
        "observations over 1 s: the retained message's age counted as a delivery latency"
    );
}
