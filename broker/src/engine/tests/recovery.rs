//! Recovery from the SQLite store after a restart.

use super::*;

#[test]
fn a_restart_gives_back_the_session_its_queue_its_inflight_messages_and_qos2_state() {
    let dir = temp_dir("restart");
    let config = BrokerConfig::default();
    {
        let mut w = world_on(config.clone(), sqlite(&dir));
        let mut c = Connect::new(V5, "A", false);
        c.properties.session_expiry_interval = Some(600);
        c.properties.receive_maximum = Some(2);
        let (mut a, _) = w.connect_with(c);
        w.subscribe(&mut a, "t", QoS::ExactlyOnce);
        let (mut p, _) = w.connect(V5, "P", false, Some(600));
        w.publish(&p, "t", b"1", QoS::ExactlyOnce, false, 1); // in flight, PUBREC below
        w.publish(&p, "t", b"2", QoS::AtLeastOnce, false, 2); // in flight, unacked
        w.publish(&p, "t", b"3", QoS::AtLeastOnce, false, 3); // queued (window 2)
        let sent = a.publishes();
        assert_eq!(payloads(&sent), [b"1", b"2"]);
        w.packet(&a, Packet::PubRec(PubResp::new(sent[0].packet_id.unwrap())));
        // The publisher's QoS 2 message 1 awaits its PUBREL.
        p.packets();
        w.close(&a);
        w.publish(&p, "t", b"4", QoS::AtLeastOnce, false, 4); // queued while offline
        assert!(
            w.engine.session("A").unwrap().queue.is_empty(),
            "offline queue on disk"
        );
        assert_eq!(w.engine.session("A").unwrap().stored_queue.len(), 2);
    }
    // The engine (and its store) is gone, as after a crash: a new one reads it back.
    let mut w = world_on(config, sqlite(&dir));
    let (mut p, ack) = w.connect(V5, "P", false, Some(600));
    assert!(ack.session_present);
    // The publisher's PUBREL is answered: the id was still known [MQTT-4.3.3-9].
    w.packet(&p, Packet::PubRel(PubResp::new(pid(1))));
    assert_eq!(p.packets(), vec![Packet::PubComp(PubResp::new(pid(1)))]);
    let mut c = Connect::new(V5, "A", false);
    c.properties.session_expiry_interval = Some(600);
    let (mut a, ack) = w.connect_with(c);
    assert!(ack.session_present); // [MQTT-3.2.2-3]
    let out = a.packets();
    // PUBREL for 1, PUBLISH 2 again with DUP [MQTT-4.4.0-1], then the queued 3 and 4.
    assert!(matches!(&out[0], Packet::PubRel(_)), "{out:?}");
    let ps: Vec<&Publish> = out
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    let got: Vec<(&[u8], bool)> = ps.iter().map(|p| (&p.payload[..], p.dup)).collect();
    assert_eq!(
        got,
        [(&b"2"[..], true), (&b"3"[..], false), (&b"4"[..], false)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_session_that_expired_while_the_broker_was_down_is_gone_after_recovery() {
    let dir = temp_dir("expiry");
    {
        let mut w = world_on(BrokerConfig::default(), sqlite(&dir));
        let (a, _) = w.connect(V5, "short", false, Some(1));
        w.disconnect(&a);
        let (b, _) = w.connect(V5, "long", false, Some(3600));
        w.disconnect(&b);
    }
    std::thread::sleep(Duration::from_millis(1100));
    let mut w = world_on(BrokerConfig::default(), sqlite(&dir));
    assert!(w.engine.session("short").is_none());
    let (_b, ack) = w.connect(V5, "long", false, Some(3600));
    assert!(ack.session_present);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_takeover_in_the_same_batch_as_new_messages_loses_none_of_them() {
    let dir = temp_dir("takeover-batch");
    let mut w = world_on(BrokerConfig::default(), sqlite(&dir));
    let mut c = Connect::new(V3, "A", false);
    c.properties.receive_maximum = Some(1);
    let (mut a, _) = w.connect_with(c.clone());
    w.subscribe(&mut a, "t", QoS::AtLeastOnce);
    let (p, _) = w.connect(V3, "P", true, None);
    // One batch: three messages (one sent, two queued) and the takeover.
    for (i, m) in [b"1", b"2", b"3"].into_iter().enumerate() {
        let mut publish = Publish::new(TopicName::new("t").unwrap(), Bytes::from_static(m));
        publish.qos = QoS::AtLeastOnce;
        publish.packet_id = Some(pid(i as u16 + 1));
        let cmd = Command::Packet {
            conn: p.id,
            packet: Packet::Publish(publish),
        };
        w.engine.handle(cmd, w.now);
    }
    let (tx, rx) = mpsc::channel(connection_channel_capacity(&w.engine.config));
    let info = ConnectionInfo::new(None, Transport::Tcp);
    let flow = Arc::new(crate::command::Flow::default());
    let cmd = Command::Connect {
        conn: ConnId(99),
        connect: Box::new(c),
        info: Box::new(info),
        identity: Box::default(),
        tx,
        flow: Arc::clone(&flow),
        claim: None,
    };
    w.engine.handle(cmd, w.now);
    w.engine.flush(w.now);
    let mut b = Conn {
        id: ConnId(99),
        flow,
        rx,
        buf: Default::default(),
        closed: false,
    };
    let out = b.packets();
    assert!(matches!(&out[0], Packet::ConnAck(ack) if ack.session_present));
    let got: Vec<&[u8]> = out
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(&p.payload[..]),
            _ => None,
        })
        .collect();
    // "1" again (it was in flight); "2" and "3" wait for the window of one.
    assert_eq!(got, [b"1"]);
    assert_eq!(w.engine.session("A").unwrap().queued_len(), 2);
    let first = out.iter().find_map(|p| match p {
        Packet::Publish(p) => p.packet_id,
        _ => None,
    });
    w.packet(&b, Packet::PubAck(PubResp::new(first.unwrap())));
    let mut rest = Vec::new();
    for _ in 0..3 {
        let sent = b.publishes();
        let Some(last) = sent.last() else { break };
        rest.extend(sent.iter().map(|p| p.payload.clone()));
        w.packet(&b, Packet::PubAck(PubResp::new(last.packet_id.unwrap())));
    }
    assert_eq!(rest, [Bytes::from_static(b"2"), Bytes::from_static(b"3")]);
    let _ = std::fs::remove_dir_all(&dir);
}
