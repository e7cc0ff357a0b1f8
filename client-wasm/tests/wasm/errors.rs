//! A first connection that cannot be made rejects `connect()` with an `Error` that says why
//! (and, for a CONNACK refusal, carries its `reasonCode`), instead of hanging or retrying.

use client_wasm::connect;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

use crate::support::{
    get, no_retain_ws_url, obj, options, refused_ws_url, rejection, set, unique, ws_url, V4, V5,
};

/// Expects `connect(url, opts)` to reject with an Error whose message contains `needle`.
async fn rejects_saying(url: &str, opts: &JsValue, needle: &str, what: &str) -> js_sys::Error {
    let e = rejection(connect(url.to_owned(), opts.clone()), what).await;
    let msg = String::from(e.message());
    assert!(
        msg.contains(needle),
        "{what}: the message {msg:?} should mention {needle:?}"
    );
    e
}

#[wasm_bindgen_test]
async fn a_malformed_url_rejects_with_an_error_naming_it() {
    // What `new WebSocket()` refuses: a scheme other than ws/wss/http/https, a URL that
    // cannot be parsed. (A relative string like "mqtt" is no bad URL for a browser: it
    // resolves against the page's address.)
    for url in [
        "ftp://127.0.0.1/mqtt",
        "ws://[::1/mqtt",
        "ws://127.0.0.1:99999/mqtt",
    ] {
        rejects_saying(url, &JsValue::UNDEFINED, url, &format!("connect({url:?})")).await;
    }
}

#[wasm_bindgen_test]
async fn a_refused_connection_rejects_rather_than_retrying() {
    // Auto-reconnect is on (the default): it is for connections lost later, a first
    // connection that fails rejects.
    let opts = obj(&[("clientId", unique("refused").into())]);
    let e = rejects_saying(
        refused_ws_url(),
        &opts.into(),
        "WebSocket",
        "connect to a port with nothing listening",
    )
    .await;
    assert!(
        get(&e, "reasonCode").is_undefined(),
        "no MQTT reason code without a CONNACK: {e:?}"
    );
}

#[wasm_bindgen_test]
async fn a_url_without_an_mqtt_endpoint_rejects() {
    // The bridge's HTTP port answers a WebSocket upgrade anywhere but /mqtt with 404.
    let url = ws_url().replace("/mqtt", "/no-such-endpoint");
    let opts = obj(&[("clientId", unique("no-endpoint").into())]);
    rejects_saying(
        &url,
        &opts.into(),
        "WebSocket",
        "connect to a non-MQTT path",
    )
    .await;
}

#[wasm_bindgen_test]
async fn invalid_options_reject_naming_the_option() {
    let bad_version = obj(&[("protocolVersion", 3.into())]);
    rejects_saying(
        ws_url(),
        &bad_version.into(),
        "protocolVersion",
        "protocolVersion 3",
    )
    .await;
    let will_without_topic = obj(&[("will", obj(&[("payload", "x".into())]).into())]);
    rejects_saying(
        ws_url(),
        &will_without_topic.into(),
        "will.topic",
        "a will without a topic",
    )
    .await;
}

#[wasm_bindgen_test]
async fn a_connack_refusal_rejects_with_its_reason_code_v4() {
    // 3.1.1: a zero-byte client id needs clean session 1; the server answers CONNACK return
    // code 0x02 (identifier rejected) [MQTT-3.1.3-8]. The client reports 3.1.1 return codes
    // as their 5.0 reason codes, here 0x85 (Client Identifier not valid), so that
    // `reasonCode` means the same for both versions.
    let opts = options("", V4, false);
    let e = rejection(
        connect(ws_url().to_owned(), opts.into()),
        "connect with an empty client id and clean = false",
    )
    .await;
    assert_eq!(get(&e, "reasonCode"), JsValue::from(0x85), "{e:?}");
    assert!(!String::from(e.message()).is_empty(), "a message: {e:?}");
}

#[wasm_bindgen_test]
async fn a_connack_refusal_rejects_with_its_reason_code_v5() {
    // A server without retained messages refuses a retained will with CONNACK 0x9A (Retain
    // not supported) [MQTT-3.2.2-13].
    let opts = options(&unique("retained-will"), V5, true);
    let will = obj(&[
        ("topic", "will/t".into()),
        ("payload", "x".into()),
        ("retain", true.into()),
    ]);
    set(&opts, "will", will);
    let e = rejection(
        connect(no_retain_ws_url().to_owned(), opts.into()),
        "connect with a retained will to a server without retain",
    )
    .await;
    assert_eq!(get(&e, "reasonCode"), JsValue::from(0x9A), "{e:?}");
    assert!(!String::from(e.message()).is_empty(), "a message: {e:?}");
}
