//! Connect, subscribe, unsubscribe, publish at QoS 0, 1 and 2 both ways, retained messages and
//! wills, for MQTT 3.1.1 (`protocolVersion: 4`) and 5.0 (`protocolVersion: 5`).
//!
//! Both ends of every message are wasm clients, so each QoS flow runs once from client to
//! broker (the publisher: PUBACK, or PUBREC/PUBREL/PUBCOMP) and once from broker to client
//! (the subscriber: PUBACK, or PUBREC/PUBREL/PUBCOMP the other way round).

use js_sys::{Array, Uint8Array};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

use crate::support::{
    connect_ok, end, eventually, get, kick, numbers, obj, ok, options, publish, session, set,
    subscribe, unique, ws_url, Events, Inbox, V4, V5,
};

async fn connect_resolves_with_a_connected_client(version: u8) {
    let id = unique(&format!("connect-v{version}"));
    let c = connect_ok(ws_url(), &options(&id, version, true), "connect").await;
    assert!(c.connected(), "`connected` once connect() resolved");
    assert_eq!(
        session(&c, "connected").as_bool(),
        Some(true),
        "session().connected"
    );
    // Clean session / clean start: session present 0, 3.1.1 [MQTT-3.2.2-1],
    // 5.0 [MQTT-3.2.2-2].
    assert_eq!(
        session(&c, "sessionPresent").as_bool(),
        Some(false),
        "session().sessionPresent after a clean connect"
    );
    end(&c, "the client").await;
    assert_eq!(
        session(&c, "connected").as_bool(),
        Some(false),
        "session().connected after end()"
    );
}

both_versions!(connect_resolves_with_a_connected_client);

async fn messages_at_qos_0_1_2_arrive_with_their_qos_and_payload(version: u8) {
    let tag = unique(&format!("qos-v{version}"));
    let sub = connect_ok(
        ws_url(),
        &options(&format!("{tag}-sub"), version, true),
        "subscriber connect",
    )
    .await;
    let inbox = Inbox::listen(&sub);
    let filter = format!("{tag}/#");
    assert_eq!(
        subscribe(&sub, &filter, 2).await,
        [2.0],
        "SUBACK grants QoS 2"
    );
    let subs = Array::from(&session(&sub, "subscriptions"));
    assert_eq!(subs.length(), 1, "session().subscriptions: {subs:?}");
    assert_eq!(get(&subs.get(0), "topic").as_string(), Some(filter.clone()));
    assert_eq!(get(&subs.get(0), "qos").as_f64(), Some(2.0));

    let publisher = connect_ok(
        ws_url(),
        &options(&format!("{tag}-pub"), version, true),
        "publisher connect",
    )
    .await;
    for qos in 0..=2u8 {
        // Resolved with reason code 0 (Success): at QoS 0 once sent, at QoS 1 on PUBACK, at
        // QoS 2 on PUBCOMP.
        let code = publish(
            &publisher,
            &format!("{tag}/q{qos}"),
            format!("hello {qos}"),
            qos,
            false,
        )
        .await;
        assert_eq!(code, 0.0, "publish at QoS {qos} resolved with {code}");
    }
    let binary = Uint8Array::from(&[0u8, 1, 255, 0][..]);
    publish(&publisher, &format!("{tag}/bin"), binary, 1, false).await;
    assert_eq!(
        Array::from(&session(&publisher, "outgoingInflight")).length(),
        0,
        "nothing in flight once every publish resolved"
    );

    let got = inbox.wait_for(4, "QoS 0, 1, 2 and binary messages").await;
    assert_eq!(got.len(), 4, "each message once: {got:?}");
    for qos in 0..=2u8 {
        let topic = format!("{tag}/q{qos}");
        let m = got
            .iter()
            .find(|m| m.topic == topic)
            .unwrap_or_else(|| panic!("no message on {topic}: {got:?}"));
        assert!(
            m.consistent,
            "listener arguments agree with the packet: {m:?}"
        );
        assert_eq!(m.text(), format!("hello {qos}"));
        assert_eq!(
            m.qos,
            Some(f64::from(qos)),
            "delivered at the published QoS"
        );
        assert_eq!(m.dup, Some(false), "first delivery: DUP 0");
        assert_eq!(m.retain, Some(false));
        // A packet identifier at QoS 1 and 2 only: 3.1.1 [MQTT-2.3.1-5], 5.0 [MQTT-2.2.1-2].
        assert_eq!(
            m.message_id.is_some(),
            qos > 0,
            "messageId at QoS {qos}: {m:?}"
        );
    }
    let bin = got
        .iter()
        .find(|m| m.topic == format!("{tag}/bin"))
        .unwrap_or_else(|| panic!("no binary message: {got:?}"));
    assert_eq!(bin.payload, [0, 1, 255, 0], "binary payload byte for byte");

    // The incoming QoS 2 flow completes: the server's PUBREL is answered and the packet
    // identifier released.
    let done =
        eventually(|| Array::from(&session(&sub, "incomingAwaitingPubrel")).length() == 0).await;
    assert!(
        done,
        "incoming QoS 2 still awaiting PUBREL: {:?}",
        session(&sub, "incomingAwaitingPubrel")
    );

    end(&publisher, "the publisher").await;
    end(&sub, "the subscriber").await;
}

both_versions!(messages_at_qos_0_1_2_arrive_with_their_qos_and_payload);

/// Subscribes to `{tag}/a` and `{tag}/b`, unsubscribes from `{tag}/a` and checks that the
/// client forgot it and the server stopped delivering it; returns the codes `unsubscribe`
/// resolved with.
async fn unsubscribe_stops_delivery(version: u8) -> Vec<f64> {
    let tag = unique(&format!("unsub-v{version}"));
    let (a, b) = (format!("{tag}/a"), format!("{tag}/b"));
    let client = connect_ok(
        ws_url(),
        &options(&format!("{tag}-c"), version, true),
        "connect",
    )
    .await;
    let inbox = Inbox::listen(&client);
    let both: Array = [a.as_str(), b.as_str()]
        .iter()
        .map(|f| JsValue::from(*f))
        .collect();
    let granted = numbers(
        &ok(
            client.subscribe(both.into(), obj(&[("qos", 1.into())]).into()),
            "subscribe to two filters",
        )
        .await,
    );
    assert_eq!(granted, [1.0, 1.0], "one SUBACK code per filter");

    let gone: Array = [JsValue::from(a.as_str())].into_iter().collect();
    let codes = numbers(&ok(client.unsubscribe(gone.into()), "unsubscribe").await);
    let subs = Array::from(&session(&client, "subscriptions"));
    assert_eq!(subs.length(), 1, "one subscription left: {subs:?}");
    assert_eq!(get(&subs.get(0), "topic").as_string(), Some(b.clone()));

    // The server removed it too, [MQTT-3.10.4-1] in both versions: a message on `a`
    // published before one on `b` would arrive first.
    publish(&client, &a, "unsubscribed", 1, false).await;
    publish(&client, &b, "subscribed", 1, false).await;
    let got = inbox
        .until_topic(&b, "the message on the remaining subscription")
        .await;
    assert_eq!(
        got.len(),
        1,
        "nothing from the removed subscription: {got:?}"
    );
    end(&client, "the client").await;
    codes
}

#[wasm_bindgen_test]
async fn unsubscribe_stops_delivery_and_resolves_with_one_code_per_filter_v5() {
    let codes = unsubscribe_stops_delivery(V5).await;
    assert_eq!(
        codes,
        [0.0],
        "UNSUBACK: Success for the one filter [MQTT-3.11.3-1]"
    );
}

#[wasm_bindgen_test]
async fn unsubscribe_stops_delivery_v4() {
    unsubscribe_stops_delivery(V4).await;
}

#[wasm_bindgen_test]
async fn unsubscribe_resolves_with_one_code_per_filter_v4() {
    let codes = unsubscribe_stops_delivery(V4).await;
    assert_eq!(codes, [0.0], "one code per filter, 0 (Success)");
}

async fn a_retained_message_reaches_later_subscribers_until_cleared(version: u8) {
    let tag = unique(&format!("retain-v{version}"));
    let state = format!("{tag}/state");
    let publisher = connect_ok(
        ws_url(),
        &options(&format!("{tag}-pub"), version, true),
        "publisher connect",
    )
    .await;
    publish(&publisher, &state, "on", 1, true).await;

    // A new subscription gets the retained message, RETAIN 1: 3.1.1 [MQTT-3.3.1-6] and
    // [MQTT-3.3.1-8], 5.0 [MQTT-3.3.1-9].
    let sub = connect_ok(
        ws_url(),
        &options(&format!("{tag}-sub"), version, true),
        "subscriber connect",
    )
    .await;
    let inbox = Inbox::listen(&sub);
    subscribe(&sub, &format!("{tag}/#"), 1).await;
    let got = inbox.wait_for(1, "the retained message").await;
    assert_eq!(got[0].topic, state);
    assert_eq!(got[0].text(), "on");
    assert_eq!(got[0].retain, Some(true), "retained: {:?}", got[0]);

    // On an established subscription RETAIN is 0: 3.1.1 [MQTT-3.3.1-9]; 5.0 [MQTT-3.3.1-12]
    // (Retain As Published 0).
    publish(&publisher, &state, "off", 1, true).await;
    let got = inbox.wait_for(2, "the live retained message").await;
    assert_eq!(got[1].text(), "off");
    assert_eq!(got[1].retain, Some(false), "live message: {:?}", got[1]);

    // An empty retained message clears it: 3.1.1 [MQTT-3.3.1-10], [MQTT-3.3.1-11];
    // 5.0 [MQTT-3.3.1-6], [MQTT-3.3.1-7]. A later subscriber gets no retained message: the
    // marker published after its SUBACK arrives first.
    publish(&publisher, &state, "", 1, true).await;
    let late = connect_ok(
        ws_url(),
        &options(&format!("{tag}-late"), version, true),
        "late subscriber connect",
    )
    .await;
    let late_inbox = Inbox::listen(&late);
    subscribe(&late, &format!("{tag}/#"), 1).await;
    let marker = format!("{tag}/marker");
    publish(&publisher, &marker, "m", 1, false).await;
    let got = late_inbox.until_topic(&marker, "the marker").await;
    assert_eq!(got.len(), 1, "no retained message after clearing: {got:?}");

    for (c, what) in [
        (&publisher, "the publisher"),
        (&sub, "the subscriber"),
        (&late, "the late subscriber"),
    ] {
        end(c, what).await;
    }
}

both_versions!(a_retained_message_reaches_later_subscribers_until_cleared);

async fn the_will_is_published_when_the_server_drops_the_client_not_after_end(version: u8) {
    let tag = unique(&format!("will-v{version}"));
    let watcher = connect_ok(
        ws_url(),
        &options(&format!("{tag}-watcher"), version, true),
        "watcher connect",
    )
    .await;
    let inbox = Inbox::listen(&watcher);
    subscribe(&watcher, &format!("{tag}/will/#"), 1).await;

    let with_will = |name: &str| {
        let o = options(&format!("{tag}-{name}"), version, true);
        let will = obj(&[
            ("topic", format!("{tag}/will/{name}").into()),
            ("payload", format!("{name} gone").into()),
            ("qos", 1.into()),
        ]);
        set(&o, "will", will);
        o
    };
    let dropped = connect_ok(ws_url(), &with_will("dropped"), "client with a will").await;
    let events = Events::listen(&dropped);
    let polite = connect_ok(ws_url(), &with_will("polite"), "second client with a will").await;

    // A normal DISCONNECT discards the will [MQTT-3.1.2-10]. The bridge handles it before
    // the kick below (end() resolves once the socket closed), so a will it wrongly published
    // would arrive before the other one.
    end(&polite, "the polite client").await;
    // The server closes the connection: not a DISCONNECT of the client, so the will is
    // published [MQTT-3.1.2-8].
    kick(&format!("{tag}-dropped")).await;
    let got = inbox
        .until_topic(
            &format!("{tag}/will/dropped"),
            "the will of the dropped client",
        )
        .await;
    assert_eq!(got.len(), 1, "only the dropped client's will: {got:?}");
    assert_eq!(got[0].text(), "dropped gone");
    assert_eq!(got[0].qos, Some(1.0), "the will's QoS");

    // The dropped client noticed, and (reconnect: false) stays down.
    let closed = eventually(|| events.position("close").is_some()).await;
    assert!(
        closed,
        "no close event after the kick: {:?}",
        events.names()
    );
    assert!(!dropped.connected(), "`connected` after the kick");
    if version == V5 {
        // 5.0: the server said why, DISCONNECT 0x98 (Administrative action); the client
        // reports it as an error with that reasonCode.
        let errors = events.args("error");
        let codes: Vec<JsValue> = errors.iter().map(|e| get(e, "reasonCode")).collect();
        assert_eq!(codes, [JsValue::from(0x98)], "error events {errors:?}");
    }
    end(&watcher, "the watcher").await;
}

both_versions!(the_will_is_published_when_the_server_drops_the_client_not_after_end);
