//! Access over time: what a session receives must be what its owner may read *now* (after
//! the ACL file was reloaded), with the credentials it connects with *now* (a token's `acl`
//! claim, also after a restart). Found by an attack on issue 11's first version: both were
//! delivered.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use e2e::protocol::client::ClientOptions;
use e2e::protocol::{ProtocolVersion, QoS};
use e2e::{Bridge, TempDir};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

#[path = "auth/fixture.rs"]
mod fixture;

use fixture::*;

const SECRET: &str = "a shared secret for the review tests";

fn hs256(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::default(), claims, &key).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A persistent 3.1.1 session logging in with `token` (3.1.1 needs the user name with a
/// password [MQTT-3.1.2-22]).
fn token_session(id: &str, user: &str, token: &str) -> ClientOptions {
    let mut o = ClientOptions::new(ProtocolVersion::V311, id, false);
    o.username = Some(user.to_owned());
    o.password = Some(Bytes::copy_from_slice(token.as_bytes()));
    o
}

/// carol may read `carol/#`; a message is queued for her offline session; then the ACL file
/// takes her read access away and SIGHUP reloads it. The queued message was routed under the
/// old rules and is delivered anyway when she comes back: `read` no longer governs it.
#[tokio::test]
async fn a_message_queued_before_read_access_was_revoked_is_not_delivered_after_the_reload() {
    let fixture = Fixture::new(
        "review-revoke",
        Some("user carol\ntopic readwrite carol/#\n"),
    );
    let bridge = Bridge::start_with_config(&fixture.config("max_failed_attempts = 0\n"));
    let v = V311;
    let mut carol = bridge
        .client(TCP, {
            let mut o = login(v, "carol-queue", "carol", "carol-pw");
            o.clean_start = false;
            o
        })
        .await;
    carol.subscribe("carol/#", QoS::AtLeastOnce).await;
    carol.disconnect().await;
    let mut writer = bridge
        .client(TCP, login(v, "carol-writer", "carol", "carol-pw"))
        .await;
    writer
        .publish(
            "carol/secret",
            &b"queued before the revocation"[..],
            QoS::AtLeastOnce,
            false,
        )
        .await;
    writer.disconnect().await;

    std::fs::write(
        fixture.acl.as_ref().unwrap(),
        "user carol\ntopic write carol/#\n",
    )
    .unwrap();
    bridge.reload();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut carol = bridge
        .client(TCP, {
            let mut o = login(v, "carol-queue", "carol", "carol-pw");
            o.clean_start = false;
            o
        })
        .await;
    carol.expect_no_message(Duration::from_secs(1)).await;
}

/// A token's `acl` claim narrows what its session may receive, and does so while the bridge
/// runs (a message outside it is not queued). After a restart with `--data` the stored
/// session has lost the claim (only the user name is stored), so messages the token never
/// allowed are queued and delivered to it.
#[tokio::test]
async fn a_tokens_acl_claim_still_narrows_its_stored_session_after_a_restart() {
    let fixture = Fixture::new("review-grants", Some("pattern readwrite users/%u/#\n"));
    let data = TempDir::new("review-grants-data");
    let toml = fixture.config(&format!(
        "max_failed_attempts = 0\n[auth.jwt]\nsecret = {SECRET:?}\n"
    ));
    let mut bridge = Bridge::start_with_data(data.path(), &toml);
    let narrow = hs256(&json!({
        "sub": "webby", "exp": now() + 3600,
        "acl": {"sub": ["users/webby/a/#"], "pub": []}
    }));
    let wide = hs256(&json!({"sub": "webby", "exp": now() + 3600}));

    let mut s = bridge
        .client(TCP, token_session("webby-narrow", "webby", &narrow))
        .await;
    s.subscribe("users/webby/#", QoS::AtLeastOnce).await;
    s.disconnect().await;

    bridge.stop();
    bridge.restart();

    let mut writer = bridge
        .client(TCP, {
            let mut o = token_session("webby-writer", "webby", &wide);
            o.clean_start = true;
            o
        })
        .await;
    writer
        .publish(
            "users/webby/b/x",
            &b"outside the claim"[..],
            QoS::AtLeastOnce,
            false,
        )
        .await;
    writer.disconnect().await;

    let mut s = bridge
        .client(TCP, token_session("webby-narrow", "webby", &narrow))
        .await;
    s.expect_no_message(Duration::from_secs(1)).await;
}
