#![allow(clippy::unwrap_used)]

use super::*;

fn connected(id: &str) -> SessionEvent {
    SessionEvent::Connected {
        client_id: id.to_owned(),
        session: view::SessionSummary {
            client_id: id.to_owned(),
            protocol_version: Some(5),
            connected: true,
            clean_start: true,
            persistent: false,
            queued: 0,
            inflight: 0,
            subscriptions: 0,
            connected_at_ms: Some(1),
            disconnected_at_ms: None,
            expires_at_ms: None,
            node: None,
        },
    }
}

#[tokio::test]
async fn a_listener_that_falls_behind_is_told_to_resync_and_then_gets_the_newest_events() {
    let (tx, rx) = broadcast::channel(2);
    for id in ["a", "b", "c", "d", "e"] {
        tx.send(connected(id)).unwrap();
    }
    drop(tx);
    let got: Vec<Notice> = notices(rx).collect().await;
    assert_eq!(
        got,
        [
            Notice::Resync { skipped: 3 },
            Notice::Change(connected("d")),
            Notice::Change(connected("e")),
        ]
    );
}

use cluster::record::{DeliveryRecord, MetaRecord, SubRecord};

fn summary(id: &str, online: bool, persistent: bool) -> SessionSummary {
    let mut e = connected(id);
    SessionSummary {
        connected: online,
        persistent,
        ..e.session_mut().unwrap().clone()
    }
}

fn delivery(seq: u64, state: u8) -> DeliveryRecord {
    DeliveryRecord {
        seq,
        msg: seq + 100,
        state,
        packet_id: if state == 0 { 0 } else { 7 },
        qos: 1,
        retain: false,
        sub_ids: Vec::new(),
    }
}

/// An offline persistent session's record: 5.0, one subscription, one message queued
/// and one in flight.
fn offline_record(node: &str) -> SessionRecord {
    SessionRecord {
        node: node.to_owned(),
        epoch: 2,
        meta: Some(MetaRecord {
            version: 5,
            username: Some("u".into()),
            expiry_interval: 300,
            expires_at: Some(1_700_000_300_000),
            disconnected_at: Some(1_700_000_000_000),
            dropped: 4,
            ..MetaRecord::default()
        }),
        subs: vec![SubRecord {
            filter: "s/+".into(),
            qos: 1,
            no_local: false,
            retain_as_published: true,
            retain_handling: 2,
            id: Some(3),
            since: 1,
        }],
        upto: 9,
        deliveries: vec![delivery(1, 1), delivery(2, 0)],
        inbound_qos2: vec![5],
    }
}

fn listed(id: &str, record: SessionRecord) -> Listed {
    Listed {
        client_id: id.to_owned(),
        record,
    }
}

fn cluster_of(node: &str) -> ClusterSessions {
    ClusterSessions {
        node: Arc::from(node),
        directory: cluster::Directory::default(),
    }
}

fn ids(page: &SessionPage) -> Vec<&str> {
    page.sessions.iter().map(|s| s.client_id.as_str()).collect()
}

#[test]
fn a_single_bridges_summaries_name_no_node_and_a_clusters_do() {
    let single = serde_json::to_value(connected("x")).unwrap();
    assert!(single["session"].get("node").is_none(), "{single}");
    let mut e = connected("x");
    e.session_mut().unwrap().node = Some("a".into());
    assert_eq!(serde_json::to_value(e).unwrap()["session"]["node"], "a");
}

#[test]
fn the_cluster_list_has_this_nodes_sessions_and_every_other_once_sorted_then_filtered() {
    let own = vec![summary("b", true, false), summary("d", false, true)];
    let clean_elsewhere = SessionRecord {
        node: "n3".into(),
        ..SessionRecord::default()
    };
    // Back online: no end, but when it last went offline stays.
    let mut back = offline_record("n3");
    back.meta.as_mut().unwrap().expires_at = None;
    let records = || {
        vec![
            listed("a", offline_record("n2")),
            // A record that lags behind this node's engine: the engine's is listed.
            listed("b", offline_record("n2")),
            listed("c", clean_elsewhere.clone()),
            listed("e", back.clone()),
        ]
    };
    let cluster = cluster_of("n1");
    let all = SessionFilter {
        limit: 100,
        ..SessionFilter::default()
    };
    let page = cluster_page(&cluster, own.clone(), records(), &all);
    assert_eq!(page.node.as_deref(), Some("n1"));
    assert_eq!(page.total, 5);
    assert_eq!(ids(&page), ["a", "b", "c", "d", "e"]);
    let nodes: Vec<_> = page.sessions.iter().map(|s| s.node.as_deref()).collect();
    assert_eq!(
        nodes,
        [Some("n2"), Some("n1"), Some("n3"), Some("n1"), Some("n3")]
    );

    let a = &page.sessions[0];
    assert_eq!(a.protocol_version, Some(5));
    assert!(!a.connected && a.persistent && !a.clean_start);
    assert_eq!((a.queued, a.inflight, a.subscriptions), (1, 1, 1));
    assert_eq!(a.disconnected_at_ms, Some(1_700_000_000_000));
    assert_eq!(a.expires_at_ms, Some(1_700_000_300_000));
    assert_eq!(a.connected_at_ms, None, "not in the record");
    let c = &page.sessions[2];
    assert_eq!(c.protocol_version, None, "a clean record keeps no version");
    assert!(c.connected && !c.persistent && c.clean_start);
    let e = &page.sessions[4];
    assert!(e.connected && e.persistent, "{e:?}");
    assert_eq!(e.expires_at_ms, None);
    assert_eq!(e.disconnected_at_ms, Some(1_700_000_000_000));

    let select = |online, persistent, prefix: Option<&str>, offset, limit| SessionFilter {
        online,
        persistent,
        prefix: prefix.map(str::to_owned),
        offset,
        limit,
    };
    let page = |f: SessionFilter| cluster_page(&cluster, own.clone(), records(), &f);
    assert_eq!(
        ids(&page(select(Some(false), None, None, 0, 100))),
        ["a", "d"]
    );
    assert_eq!(
        ids(&page(select(Some(true), None, None, 0, 100))),
        ["b", "c", "e"]
    );
    assert_eq!(
        ids(&page(select(None, Some(false), None, 0, 100))),
        ["b", "c"]
    );
    assert_eq!(
        ids(&page(select(None, Some(true), Some("a"), 0, 100))),
        ["a"]
    );
    let paged = page(select(None, None, None, 1, 2));
    assert_eq!((paged.total, paged.offset, paged.limit), (5, 1, 2));
    assert_eq!(ids(&paged), ["b", "c"]);
    assert_eq!(
        ids(&page(select(None, None, None, 9, 2))),
        Vec::<&str>::new()
    );
}

#[test]
fn a_recorded_detail_has_the_keys_of_a_held_one_and_its_node() {
    let held = view::SessionDetail {
        client_id: "a".into(),
        username: None,
        protocol_version: 5,
        clean_start: false,
        connected: false,
        connected_at_ms: None,
        disconnected_at_ms: None,
        session_expiry_interval: 0,
        expires_at_ms: None,
        keep_alive: None,
        peer: None,
        subscriptions: Vec::new(),
        inflight: view::InflightCounts { count: 0, max: 1 },
        queue: view::QueueCounts {
            length: 0,
            max: 1,
            dropped: 0,
        },
        awaiting_pubrel: 0,
        msgs_in: 0,
        msgs_out: 0,
        bytes_in: 0,
        bytes_out: 0,
        node: Some("n1".into()),
    };
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let held = serde_json::to_value(Detail::Held(held)).unwrap();
    let recorded = RecordDetail::of("a".into(), offline_record("n2"));
    let recorded = serde_json::to_value(Detail::Recorded(recorded)).unwrap();
    assert_eq!(keys(&held), keys(&recorded));
    for part in ["inflight", "queue"] {
        assert_eq!(keys(&held[part]), keys(&recorded[part]));
    }
    assert_eq!(recorded["node"], "n2");
    assert_eq!(recorded["username"], "u");
    assert_eq!(recorded["protocol_version"], 5);
    assert_eq!(recorded["session_expiry_interval"], 300);
    assert_eq!(recorded["expires_at_ms"], 1_700_000_300_000u64);
    assert_eq!(recorded["inflight"]["count"], 1);
    assert_eq!(recorded["queue"]["length"], 1);
    assert_eq!(recorded["queue"]["dropped"], 4);
    assert_eq!(recorded["awaiting_pubrel"], 1);
    assert_eq!(recorded["subscriptions"][0]["filter"], "s/+");
    assert_eq!(recorded["subscriptions"][0]["subscription_identifier"], 3);
    for unknown in [
        "connected_at_ms",
        "keep_alive",
        "peer",
        "msgs_in",
        "bytes_out",
    ] {
        assert!(recorded[unknown].is_null(), "{unknown}: {recorded}");
    }
}

#[test]
fn message_rates_are_measured_over_at_least_a_second() {
    let mut t = RateTracker::default();
    let start = Instant::now();
    assert_eq!(t.sample(start, 0, 0), (0.0, 0.0));
    assert_eq!(
        t.sample(start + Duration::from_millis(500), 10, 10),
        (0.0, 0.0),
        "too soon: the last measurement"
    );
    assert_eq!(t.sample(start + Duration::from_secs(2), 20, 4), (10.0, 2.0));
    assert_eq!(
        t.sample(start + Duration::from_millis(2100), 99, 99),
        (10.0, 2.0)
    );
}
