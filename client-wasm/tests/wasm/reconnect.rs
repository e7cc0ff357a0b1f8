//! Auto-reconnect: the server drops the connection (the bridge's kick API, or a takeover by
//! another connection with the same client id), the client comes back by itself after its
//! backoff and carries on with its subscriptions: kept by the server when it answers session
//! present 1, sent again by the client when it answers 0, also with clean = false.

use js_sys::Array;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

use crate::support::{
    connect_ok, end, eventually, get, kick, obj, options, publish, session, set, subscribe, unique,
    ws_url, Events, Inbox, V4, V5,
};

async fn the_client_reconnects_after_the_server_drops_it(version: u8, clean: bool) {
    let tag = unique(&format!("reconnect-v{version}-{clean}"));
    let id = format!("{tag}-r");
    let opts = options(&id, version, clean);
    // Short, fixed delays (no jitter) keep the test fast; the backoff itself is the
    // client's business, only its outcome is checked.
    let backoff = obj(&[
        ("initialDelay", 200.into()),
        ("maxDelay", 1000.into()),
        ("jitter", 0.into()),
    ]);
    set(&opts, "reconnect", backoff);
    let client = connect_ok(ws_url(), &opts, "connect").await;
    let events = Events::listen(&client);
    let inbox = Inbox::listen(&client);
    let filter = format!("{tag}/#");
    subscribe(&client, &filter, 1).await;

    kick(&id).await;
    let back = eventually(|| events.position("connect").is_some() && client.connected()).await;
    assert!(back, "not reconnected: events {:?}", events.names());
    let names = events.names();
    let at = |name: &str| {
        events
            .position(name)
            .unwrap_or_else(|| panic!("no {name} event: {names:?}"))
    };
    assert!(
        at("close") < at("reconnect") && at("offline") < at("reconnect"),
        "close and offline, then reconnect: {names:?}"
    );
    assert!(
        at("reconnect") < at("connect"),
        "reconnect, then connect: {names:?}"
    );
    if version == V5 {
        // 5.0: DISCONNECT 0x98 (Administrative action) came first, reported as an error.
        let codes: Vec<JsValue> = events
            .args("error")
            .iter()
            .map(|e| get(e, "reasonCode"))
            .collect();
        assert_eq!(codes, [JsValue::from(0x98)], "error events: {names:?}");
    }

    // clean = true: a new session, session present 0 (3.1.1 [MQTT-3.2.2-1], 5.0
    // [MQTT-3.2.2-2]). clean = false: the kicked session was kept, session present 1
    // (3.1.1 [MQTT-3.2.2-2], 5.0 [MQTT-3.2.2-3]).
    let connack = &events.args("connect")[0];
    assert_eq!(
        get(connack, "sessionPresent").as_bool(),
        Some(!clean),
        "session present on reconnect with clean = {clean}: {connack:?}"
    );
    let subs = Array::from(&session(&client, "subscriptions"));
    assert_eq!(subs.length(), 1, "the client still holds its subscription");
    assert_eq!(get(&subs.get(0), "topic").as_string(), Some(filter));

    // A message published after the reconnection arrives. With clean = true the server forgot
    // the subscription, so only the client's resubscription can bring it. The client sent
    // that SUBSCRIBE on receiving the CONNACK, before this PUBLISH on the same connection,
    // and the server handles a connection's packets in order.
    let after = format!("{tag}/after");
    publish(&client, &after, "after", 1, false).await;
    let got = inbox
        .until_topic(&after, "the message published after reconnecting")
        .await;
    assert_eq!(got.len(), 1, "only the new message: {got:?}");
    assert_eq!(got[0].text(), "after");

    end(&client, "the reconnected client").await;
}

#[wasm_bindgen_test]
async fn with_clean_true_the_client_reconnects_and_resubscribes_v4() {
    the_client_reconnects_after_the_server_drops_it(V4, true).await;
}

#[wasm_bindgen_test]
async fn with_clean_true_the_client_reconnects_and_resubscribes_v5() {
    the_client_reconnects_after_the_server_drops_it(V5, true).await;
}

#[wasm_bindgen_test]
async fn with_clean_false_the_client_reconnects_to_its_kept_session_v4() {
    the_client_reconnects_after_the_server_drops_it(V4, false).await;
}

#[wasm_bindgen_test]
async fn with_clean_false_the_client_reconnects_to_its_kept_session_v5() {
    the_client_reconnects_after_the_server_drops_it(V5, false).await;
}

async fn with_clean_false_the_client_resubscribes_when_its_session_is_gone(version: u8) {
    let tag = unique(&format!("resub-v{version}"));
    let id = format!("{tag}-r");
    let opts = options(&id, version, false);
    // Long enough for the takeover below to finish before the client comes back.
    let backoff = obj(&[
        ("initialDelay", 800.into()),
        ("maxDelay", 800.into()),
        ("jitter", 0.into()),
    ]);
    set(&opts, "reconnect", backoff);
    let client = connect_ok(ws_url(), &opts, "connect, clean = false").await;
    let events = Events::listen(&client);
    let inbox = Inbox::listen(&client);
    subscribe(&client, &format!("{tag}/#"), 1).await;

    // Another connection with the same client id and clean = true takes the connection over
    // [MQTT-3.1.4-3] and discards the session [MQTT-3.1.2-6] (3.1.1) / [MQTT-3.1.2-4] (5.0);
    // it ends with its clean session.
    let thief = connect_ok(
        ws_url(),
        &options(&id, version, true),
        "takeover, clean = true",
    )
    .await;
    end(&thief, "the client that took over").await;
    assert!(
        events.position("reconnect").is_none(),
        "the client came back before the takeover ended (a very slow machine?): {:?}",
        events.names()
    );

    let back = eventually(|| events.position("connect").is_some() && client.connected()).await;
    assert!(back, "not reconnected: events {:?}", events.names());
    let connack = &events.args("connect")[0];
    assert_eq!(
        get(connack, "sessionPresent").as_bool(),
        Some(false),
        "the session is gone: session present 0 [MQTT-3.2.2-3]: {connack:?}"
    );
    // Only a resubscription can bring this message: the client sends it on the CONNACK,
    // ahead of this PUBLISH on the same connection.
    let after = format!("{tag}/after");
    publish(&client, &after, "after", 1, false).await;
    let got = inbox
        .until_topic(&after, "the message published after reconnecting")
        .await;
    assert_eq!(got.len(), 1, "only the new message: {got:?}");
    end(&client, "the reconnected client").await;
}

both_versions!(with_clean_false_the_client_resubscribes_when_its_session_is_gone);
