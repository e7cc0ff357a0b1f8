//! The `persistence` option across a simulated page reload: a new client instance with the
//! same client id, over the same IndexedDB, takes up what the first one left unfinished.
//!
//! The first instance is cut off by the server (kick) and, with a long backoff, stays
//! offline while the application publishes at QoS 1 and 2: the messages wait in its queue
//! and in IndexedDB. It then goes away (`end()`, as a reload would), and a second instance
//! connects. The messages arrive at a subscriber exactly once, and the store and the
//! client's session are empty afterwards. The protocol crate's unit tests cover the other
//! cases one step at a time (in-flight messages resent with DUP and the same id, PUBREL
//! after PUBREC, duplicate incoming QoS 2 not delivered twice: `protocol/src/client.rs`).

use wasm_bindgen::JsValue;

use crate::support::{
    connect_ok, end, eventually, kick, obj, options, publish, rejection, session, set, subscribe,
    unique, ws_url, Inbox,
};

async fn unfinished_messages_are_sent_by_the_next_instance(version: u8) {
    let tag = unique(&format!("persist-v{version}"));
    let sub = connect_ok(
        ws_url(),
        &options(&format!("{tag}-s"), version, false),
        "sub",
    )
    .await;
    let inbox = Inbox::listen(&sub);
    subscribe(&sub, &format!("{tag}/#"), 2).await;

    let id = format!("{tag}-p");
    let opts = options(&id, version, false);
    set(&opts, "persistence", true);
    let slow = obj(&[
        ("initialDelay", 60_000.into()),
        ("maxDelay", 60_000.into()),
        ("jitter", 0.into()),
    ]);
    set(&opts, "reconnect", slow);
    let first = connect_ok(ws_url(), &opts, "first instance").await;
    kick(&id).await;
    assert!(
        eventually(|| !first.connected()).await,
        "first instance not cut off"
    );
    let qos = |q: u8| JsValue::from(obj(&[("qos", q.into())]));
    let one = first.publish(format!("{tag}/1"), "one".into(), qos(1));
    let two = first.publish(format!("{tag}/2"), "two".into(), qos(2));
    assert_eq!(session(&first, "queued").as_f64(), Some(2.0));
    // The page goes away: its promises never settle (here: end() rejects them), the store
    // keeps the messages for the next instance.
    end(&first, "first instance").await;
    rejection(one, "QoS 1 publish of the ended instance").await;
    rejection(two, "QoS 2 publish of the ended instance").await;

    let second = connect_ok(ws_url(), &opts, "second instance, same IndexedDB").await;
    let marker = format!("{tag}/marker");
    let got = inbox.until_topic(&marker, "stored messages, then a marker");
    // The marker is published after the restored messages went out on the same connection.
    assert!(
        eventually(|| session(&second, "queued").as_f64() == Some(0.0)).await,
        "the restored messages left the queue"
    );
    publish(&second, &marker, "end", 1, false).await;
    let got = got.await;
    let seen: Vec<(String, Option<f64>)> = got.iter().map(|m| (m.text(), m.qos)).collect();
    assert_eq!(
        seen,
        [
            ("one".to_owned(), Some(1.0)),
            ("two".to_owned(), Some(2.0)),
            ("end".to_owned(), Some(1.0))
        ],
        "each stored message once, in order, at its QoS"
    );
    assert!(
        eventually(|| js_sys::Array::from(&session(&second, "outgoingInflight")).length() == 0)
            .await,
        "acknowledged: nothing left in flight"
    );
    end(&second, "second instance").await;

    // A third instance finds nothing left to send: the acknowledgements emptied the store.
    let third = connect_ok(ws_url(), &opts, "third instance").await;
    assert_eq!(session(&third, "queued").as_f64(), Some(0.0));
    assert_eq!(
        js_sys::Array::from(&session(&third, "outgoingInflight")).length(),
        0
    );
    end(&third, "third instance").await;
    end(&sub, "subscriber").await;
}

both_versions!(unfinished_messages_are_sent_by_the_next_instance);
