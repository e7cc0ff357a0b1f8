//! The seed scenario, from the browser: with clean = false the broker keeps the session while
//! the client is away and delivers what was published meanwhile when it returns, answering
//! session present = 1; with clean = true nothing is kept.
//!
//! Each reconnection is a new `connect()` (a new client instance with the same client id), as
//! a page does after a reload.

use wasm_bindgen_test::wasm_bindgen_test;

use crate::support::{
    connect_ok, end, options, publish, session, subscribe, unique, ws_url, Inbox, V4, V5,
};

async fn clean_false_delivers_what_was_published_while_away(version: u8) {
    let tag = unique(&format!("seed-v{version}"));
    let id = format!("{tag}-away");
    let persistent = options(&id, version, false);
    let away = connect_ok(ws_url(), &persistent, "first connect, clean = false").await;
    // No session with this (new) id yet: session present 0, [MQTT-3.2.2-3] in both
    // versions.
    assert_eq!(
        session(&away, "sessionPresent").as_bool(),
        Some(false),
        "first connect: no session yet"
    );
    subscribe(&away, &format!("{tag}/#"), 2).await;
    end(&away, "the client going away").await;

    let publisher = connect_ok(
        ws_url(),
        &options(&format!("{tag}-pub"), version, true),
        "publisher connect",
    )
    .await;
    // Each publish resolves once the broker has the message (PUBACK / PUBCOMP), so all three
    // were published while the client was away.
    for (i, qos) in [1u8, 2, 1].into_iter().enumerate() {
        publish(
            &publisher,
            &format!("{tag}/x"),
            format!("away {i}"),
            qos,
            false,
        )
        .await;
    }

    let back = connect_ok(ws_url(), &persistent, "reconnect, clean = false").await;
    // The session was kept: session present 1, 3.1.1 [MQTT-3.2.2-2], 5.0 [MQTT-3.2.2-3].
    assert_eq!(
        session(&back, "sessionPresent").as_bool(),
        Some(true),
        "reconnect with clean = false: session present"
    );
    // The messages queued for the session arrive: 3.1.1 [MQTT-3.1.2-5], 5.0 [MQTT-3.1.2-23].
    // They may come in the CONNACK's frame, before this listener exists: the client keeps
    // them for the first `message` listener.
    let inbox = Inbox::listen(&back);
    let got = inbox.wait_for(3, "messages published while away").await;
    let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
    assert_eq!(texts, ["away 0", "away 1", "away 2"], "in order: {got:?}");
    let qos: Vec<Option<f64>> = got.iter().map(|m| m.qos).collect();
    assert_eq!(qos, [Some(1.0), Some(2.0), Some(1.0)], "at their QoS");

    end(&back, "the returning client").await;
    end(&publisher, "the publisher").await;
}

both_versions!(clean_false_delivers_what_was_published_while_away);

/// Connects as `id` with clean = `first_clean`, subscribes, leaves; three QoS 1 messages are
/// published; then reconnects with clean = true and checks that nothing was kept: session
/// present 0, and nothing arrives ahead of a marker published after subscribing again.
async fn clean_true_reconnect_gets_nothing(version: u8, first_clean: bool) {
    let tag = unique(&format!("clean-v{version}-{first_clean}"));
    let id = format!("{tag}-c");
    let first = connect_ok(
        ws_url(),
        &options(&id, version, first_clean),
        "first connect",
    )
    .await;
    subscribe(&first, &format!("{tag}/#"), 1).await;
    end(&first, "the client going away").await;

    let publisher = connect_ok(
        ws_url(),
        &options(&format!("{tag}-pub"), version, true),
        "publisher connect",
    )
    .await;
    for i in 0..3 {
        publish(
            &publisher,
            &format!("{tag}/x"),
            format!("lost {i}"),
            1,
            false,
        )
        .await;
    }

    let back = connect_ok(
        ws_url(),
        &options(&id, version, true),
        "reconnect, clean = true",
    )
    .await;
    // Any previous session is discarded: 3.1.1 [MQTT-3.1.2-6] and session present 0
    // [MQTT-3.2.2-1]; 5.0 [MQTT-3.1.2-4] and [MQTT-3.2.2-2].
    assert_eq!(
        session(&back, "sessionPresent").as_bool(),
        Some(false),
        "reconnect with clean = true: no session"
    );
    let inbox = Inbox::listen(&back);
    subscribe(&back, &format!("{tag}/#"), 1).await;
    let marker = format!("{tag}/marker");
    publish(&publisher, &marker, "m", 1, false).await;
    // Queued messages would have come with the CONNACK, before the marker.
    let got = inbox.until_topic(&marker, "the marker").await;
    assert_eq!(got.len(), 1, "clean = true: nothing kept, got {got:?}");

    end(&back, "the returning client").await;
    end(&publisher, "the publisher").await;
}

#[wasm_bindgen_test]
async fn clean_true_keeps_nothing_while_away_v4() {
    clean_true_reconnect_gets_nothing(V4, true).await;
}

#[wasm_bindgen_test]
async fn clean_true_keeps_nothing_while_away_v5() {
    clean_true_reconnect_gets_nothing(V5, true).await;
}

#[wasm_bindgen_test]
async fn clean_true_discards_a_session_left_with_queued_messages_v4() {
    clean_true_reconnect_gets_nothing(V4, false).await;
}

#[wasm_bindgen_test]
async fn clean_true_discards_a_session_left_with_queued_messages_v5() {
    clean_true_reconnect_gets_nothing(V5, false).await;
}
