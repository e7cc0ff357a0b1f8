//! Wills: on network loss, not after a normal DISCONNECT, delayed wills.

use super::*;

#[test]
fn the_will_is_published_on_network_loss_but_not_after_a_normal_disconnect_mqtt_3_1_2_8_and_10() {
    let mut w = world(BrokerConfig::default());
    let (mut s, _) = w.connect(V3, "S", true, None);
    w.subscribe(&mut s, "will/#", QoS::AtLeastOnce);
    let a = connect_with_will(&mut w, V3, "A", None, None);
    w.disconnect(&a);
    assert!(s.publishes().is_empty());
    let a = connect_with_will(&mut w, V3, "A", None, None);
    w.close(&a);
    assert_eq!(payloads(&s.publishes()), [b"gone"]);
}

#[test]
fn disconnect_with_will_message_publishes_the_will() {
    let mut w = world(BrokerConfig::default());
    let (mut s, _) = w.connect(V5, "S", true, None);
    w.subscribe(&mut s, "will/#", QoS::AtLeastOnce);
    let a = connect_with_will(&mut w, V5, "A", None, None);
    w.packet(
        &a,
        Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)),
    );
    assert_eq!(payloads(&s.publishes()), [b"gone"]);
}

#[test]
fn a_delayed_will_waits_and_a_reconnect_in_time_cancels_it_mqtt_3_1_3_9() {
    let mut w = world(BrokerConfig::default());
    let (mut s, _) = w.connect(V5, "S", true, None);
    w.subscribe(&mut s, "will/#", QoS::AtLeastOnce);
    let a = connect_with_will(&mut w, V5, "A", Some(10), Some(600));
    w.close(&a);
    w.advance(5);
    assert!(s.publishes().is_empty());
    let _a = w.connect(V5, "A", false, Some(600));
    w.advance(10);
    assert!(s.publishes().is_empty());
    // Without a reconnect it is published when the delay runs out.
    let b = connect_with_will(&mut w, V5, "B", Some(10), Some(600));
    w.close(&b);
    w.advance(9);
    assert!(s.publishes().is_empty());
    w.advance(1);
    assert_eq!(payloads(&s.publishes()), [b"gone"]);
}
