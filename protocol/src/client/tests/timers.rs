//! The keep-alive and the CONNACK deadline.

use super::*;

#[test]
fn keep_alive_sends_pingreq_when_idle_and_gives_up_without_pingresp_mqtt_3_1_2_23() {
    let mut c = Client::new(ClientOptions::new(ProtocolVersion::V311, "c", true));
    c.connect(t(0)).unwrap();
    c.handle_packet(
        Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
        t(10),
    )
    .unwrap();
    sent(&mut c);
    // PINGREQ at three quarters of the 60 s keep-alive after the last packet sent.
    assert_eq!(c.poll_timeout(), Some(t(45_000)));
    c.handle_timeout(t(44_999)).unwrap();
    assert!(sent(&mut c).is_empty());
    c.handle_timeout(t(45_000)).unwrap();
    assert_eq!(sent(&mut c), vec![Packet::PingReq]);
    c.handle_packet(Packet::PingResp, t(45_100)).unwrap();
    assert_eq!(c.poll_timeout(), Some(t(90_000)));
    c.handle_timeout(t(90_000)).unwrap();
    assert_eq!(sent(&mut c), vec![Packet::PingReq]);
    // No PINGRESP within the keep-alive: the connection is given up.
    assert_eq!(c.poll_timeout(), Some(t(150_000)));
    assert_eq!(
        c.handle_timeout(t(150_000)),
        Err(ClientError::KeepAliveTimeout)
    );
    assert!(!c.is_connected());
}

#[test]
fn sending_anything_postpones_the_pingreq() {
    let mut c = connected(ProtocolVersion::V311, true, Properties::default());
    publish(&mut c, QoS::AtMostOnce, 30_000);
    assert_eq!(c.poll_timeout(), Some(t(75_000)));
}

#[test]
fn server_keep_alive_replaces_ours_mqtt_3_2_2_21() {
    let props = Properties {
        server_keep_alive: Some(8),
        ..Default::default()
    };
    let c = connected(ProtocolVersion::V5, true, props);
    assert_eq!(c.poll_timeout(), Some(t(6_000)));
}

#[test]
fn a_missing_connack_times_out() {
    let mut c = Client::new(ClientOptions::new(ProtocolVersion::V311, "c", true));
    c.connect(t(0)).unwrap();
    assert_eq!(c.poll_timeout(), Some(t(30_000)));
    assert_eq!(
        c.handle_timeout(t(30_000)),
        Err(ClientError::ConnectTimeout)
    );
}
