//! Token authentication (`[auth.jwt]`), seen from outside: a JWT in the CONNECT password,
//! signed with a shared secret (HS256) or an EC key made in the test (ES256), its `exp`,
//! `nbf`, subject and `acl` claim, and the connection closed when the token expires.
//!
//! Tokens are signed here with the `jsonwebtoken` crate; the EC key pair comes from rcgen.
//! Each test starts one bridge and runs its cases against it concurrently (each case has its
//! own subject, client ids and topics).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use e2e::protocol::client::ClientOptions;
use e2e::protocol::{ProtocolVersion, QoS, ReasonCode};
use e2e::{clean, run_cases, text, version_name, Bridge, TRANSPORTS, VERSIONS};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

#[path = "auth/fixture.rs"]
mod fixture;

use fixture::*;

const SECRET: &str = "a shared secret for the tests";

/// For the token users: their own subtree and the news; dave, a password user, everything.
const ACL: &str = "\
pattern readwrite users/%u/#
pattern readwrite news/#
user dave
topic readwrite #
";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::default(), claims, &key).unwrap()
}

/// Options carrying `token` as the password. 3.1.1 cannot send a password without a user
/// name [MQTT-3.1.2-22], so there the user name is sent too (`user`, the token's subject).
fn with_token(v: ProtocolVersion, id: &str, user: &str, token: &str) -> ClientOptions {
    let mut o = clean(v, id);
    if v == ProtocolVersion::V311 {
        o.username = Some(user.to_owned());
    }
    o.password = Some(Bytes::copy_from_slice(token.as_bytes()));
    o
}

/// A bridge over the fixture's password file (dave, a password user) and [`ACL`], with
/// `jwt` as its `[auth.jwt]` table.
fn files(label: &str, jwt: &str) -> (Fixture, String) {
    let fixture = Fixture::new(label, Some(ACL));
    let toml = fixture.config(&format!("max_failed_attempts = 0\n[auth.jwt]\n{jwt}"));
    (fixture, toml)
}

/// A valid token connects as its subject (the `%u` of the ACL is the subject: its own
/// subtree is readable, another's is not); a CONNECT user name must equal the subject;
/// expired, not-yet-valid, wrongly signed or `exp`-less tokens are refused with 0x86 (3.1.1:
/// 4) [MQTT-3.1.4-2]; a password that is no JWT still goes to the password file.
#[tokio::test]
async fn a_token_connects_as_its_subject_and_bad_tokens_get_bad_user_name_or_password() {
    let (_dir, toml) = files("jwt-hs256", &format!("secret = {SECRET:?}\n"));
    let bridge = Arc::new(Bridge::start_with_config(&toml));
    let mut cases: Vec<(String, Case)> = Vec::new();
    for t in TRANSPORTS {
        for v in VERSIONS {
            let b = bridge.clone();
            cases.push((
                format!("{t}, MQTT {}", version_name(v)),
                Box::pin(async move {
                    let tag = format!("{t}-{}", version_name(v));
                    let sub = format!("web-{tag}");
                    let token = hs256(&json!({"sub": sub, "exp": now() + 600}));
                    let mut c = b
                        .client(t, with_token(v, &format!("ok-{tag}"), &sub, &token))
                        .await;
                    let ack = c
                        .subscribe(&format!("users/{sub}/#"), QoS::AtLeastOnce)
                        .await;
                    assert_eq!(
                        ack.reasons,
                        [granted(QoS::AtLeastOnce)],
                        "the subject is the user name"
                    );
                    let ack = c.subscribe("users/someone-else/#", QoS::AtLeastOnce).await;
                    assert_eq!(ack.reasons, [not_authorized_suback(v)]);
                    c.disconnect().await;

                    let mut named = with_token(v, &format!("named-{tag}"), &sub, &token);
                    named.username = Some(sub.clone());
                    b.client(t, named).await.disconnect().await;

                    let mut other_name = with_token(v, &format!("other-{tag}"), &sub, &token);
                    other_name.username = Some("dave".to_owned());
                    let t_now = now();
                    let bad = [
                        ("a user name other than the subject", other_name),
                        (
                            "an expired token",
                            with_token(
                                v,
                                "x",
                                &sub,
                                &hs256(&json!({"sub": sub, "exp": t_now - 5})),
                            ),
                        ),
                        (
                            "a token not valid yet",
                            with_token(
                                v,
                                "x",
                                &sub,
                                &hs256(
                                    &json!({"sub": sub, "exp": t_now + 600, "nbf": t_now + 300}),
                                ),
                            ),
                        ),
                        (
                            "a token without exp",
                            with_token(v, "x", &sub, &hs256(&json!({"sub": sub}))),
                        ),
                        ("a token signed with another secret", {
                            let key = EncodingKey::from_secret(b"another secret").unwrap();
                            let forged = jsonwebtoken::encode(
                                &Header::default(),
                                &json!({"sub": sub, "exp": t_now + 600}),
                                &key,
                            )
                            .unwrap();
                            with_token(v, "x", &sub, &forged)
                        }),
                        ("a token with its payload swapped", {
                            let mine: Vec<String> = token.split('.').map(str::to_owned).collect();
                            let admin = hs256(&json!({"sub": "dave", "exp": t_now + 600}));
                            let theirs: Vec<&str> = admin.split('.').collect();
                            let spliced = format!("{}.{}.{}", mine[0], theirs[1], mine[2]);
                            with_token(v, "x", "dave", &spliced)
                        }),
                    ];
                    for (what, o) in bad {
                        let ack = b.expect_refused(t, o).await;
                        assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword, "{what}");
                    }

                    let mut dave = clean(v, &format!("dave-{tag}"));
                    dave.username = Some("dave".to_owned());
                    dave.password = Some(Bytes::from_static(b"dave-pw"));
                    b.client(t, dave).await.disconnect().await;
                }) as Case,
            ));
        }
    }
    run_cases(cases).await;
}

/// The token's `acl` claim (EMQX's shape) narrows what the ACL file allows: subscriptions
/// outside its `sub` list are refused (0x87 / 0x80), a wildcard overlapping it is granted
/// and filtered on delivery, publishing outside its `pub` list is refused (PUBACK 0x87 in
/// 5.0) and reaches no one.
#[tokio::test]
async fn the_acl_claim_of_a_token_narrows_what_its_connection_may_do() {
    let (_dir, toml) = files("jwt-acl", &format!("secret = {SECRET:?}\n"));
    let bridge = Arc::new(Bridge::start_with_config(&toml));
    let mut cases: Vec<(String, Case)> = Vec::new();
    for v in VERSIONS {
        let b = bridge.clone();
        cases.push((
            format!("MQTT {}", version_name(v)),
            Box::pin(async move {
                let tag = version_name(v);
                let sub = format!("narrow-{tag}");
                let claims = json!({
                    "sub": sub,
                    "exp": now() + 600,
                    "acl": {
                        "sub": [format!("news/{tag}/sport/#")],
                        "pub": [format!("news/{tag}/sport/scores")],
                        "all": [format!("users/{sub}/inbox")],
                    }
                });
                let mut c = b
                    .client(
                        TCP,
                        with_token(v, &format!("narrow-{tag}"), &sub, &hs256(&claims)),
                    )
                    .await;
                // Allowed by the ACL file (news/# and the user's subtree), and by the claim:
                let ack = c
                    .subscribe(&format!("news/{tag}/#"), QoS::AtLeastOnce)
                    .await;
                assert_eq!(
                    ack.reasons,
                    [granted(QoS::AtLeastOnce)],
                    "overlaps the claim: granted"
                );
                let ack = c
                    .subscribe(&format!("users/{sub}/inbox"), QoS::AtLeastOnce)
                    .await;
                assert_eq!(
                    ack.reasons,
                    [granted(QoS::AtLeastOnce)],
                    "`all` counts for subscribe"
                );
                // Allowed by the ACL file, not by the claim:
                let ack = c
                    .subscribe(&format!("users/{sub}/outbox"), QoS::AtLeastOnce)
                    .await;
                assert_eq!(ack.reasons, [not_authorized_suback(v)]);
                // Allowed by the claim's filter shape but not by the ACL file: still refused.
                let mut dave = clean(v, &format!("dave-{tag}"));
                dave.username = Some("dave".to_owned());
                dave.password = Some(Bytes::from_static(b"dave-pw"));
                let mut dave = b.client(TCP, dave).await;
                dave.subscribe(&format!("news/{tag}/#"), QoS::AtLeastOnce)
                    .await;

                let denied = c
                    .publish(
                        &format!("news/{tag}/weather"),
                        "rain",
                        QoS::AtLeastOnce,
                        false,
                    )
                    .await;
                if v == V5 {
                    assert_eq!(denied, ReasonCode::NotAuthorized);
                }
                c.publish(
                    &format!("news/{tag}/sport/scores"),
                    "2-1",
                    QoS::AtLeastOnce,
                    false,
                )
                .await;
                assert_eq!(
                    text(&dave.recv().await),
                    "2-1",
                    "the denied publish was routed"
                );

                dave.publish(
                    &format!("news/{tag}/weather/today"),
                    "sun",
                    QoS::AtLeastOnce,
                    false,
                )
                .await;
                dave.publish(
                    &format!("news/{tag}/sport/today"),
                    "match",
                    QoS::AtLeastOnce,
                    false,
                )
                .await;
                // c hears its own score first (it subscribed to news/{tag}/#), then sport.
                let heard: Vec<String> = c.recv_payloads(2).await;
                assert_eq!(heard, ["2-1", "match"], "weather is outside the claim");
            }) as Case,
        ));
    }
    run_cases(cases).await;
}

/// When its token expires, the connection is closed: 5.0 with DISCONNECT 0x87 Not
/// authorized, 3.1.1 by closing the network connection.
#[tokio::test]
async fn a_connection_is_closed_when_its_token_expires() {
    let (_dir, toml) = files("jwt-expiry", &format!("secret = {SECRET:?}\n"));
    let bridge = Arc::new(Bridge::start_with_config(&toml));
    let mut cases: Vec<(String, Case)> = Vec::new();
    for v in VERSIONS {
        let b = bridge.clone();
        cases.push((
            format!("MQTT {}", version_name(v)),
            Box::pin(async move {
                let tag = version_name(v);
                let sub = format!("brief-{tag}");
                let token = hs256(&json!({"sub": sub, "exp": now() + 3}));
                let mut c = b
                    .client(TCP, with_token(v, &format!("brief-{tag}"), &sub, &token))
                    .await;
                c.sync().await;
                let disconnect = c.expect_closed_within(Duration::from_secs(10)).await;
                match v {
                    V5 => assert_eq!(
                        disconnect.map(|d| d.reason),
                        Some(ReasonCode::NotAuthorized)
                    ),
                    _ => assert_eq!(disconnect, None, "3.1.1 has no server DISCONNECT"),
                }
            }) as Case,
        ));
    }
    run_cases(cases).await;
}

/// With `public_key_file`, the algorithm family comes from the key (here EC P-256, made in
/// the test): an ES256 token signed with the matching private key connects; one signed with
/// another key, or an HS256 token using the public key as its secret, is refused.
#[tokio::test]
async fn a_public_key_file_verifies_es256_tokens_and_nothing_else() {
    let key = rcgen::KeyPair::generate().unwrap();
    let stranger = rcgen::KeyPair::generate().unwrap();
    let fixture = Fixture::new("jwt-es256", Some(ACL));
    let public = fixture.dir.path().join("public.pem");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let toml = fixture.config(&format!(
        "max_failed_attempts = 0\n[auth.jwt]\npublic_key_file = {:?}\n",
        public.display().to_string()
    ));
    let bridge = Bridge::start_with_config(&toml);
    let es256 = |pair: &rcgen::KeyPair, claims: &Value| {
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
    };
    let claims = json!({"sub": "device-1", "exp": now() + 600});
    for v in VERSIONS {
        let mut c = bridge
            .client(
                TCP,
                with_token(v, "device-1", "device-1", &es256(&key, &claims)),
            )
            .await;
        let ack = c.subscribe("users/device-1/#", QoS::AtLeastOnce).await;
        assert_eq!(ack.reasons, [granted(QoS::AtLeastOnce)]);
        c.disconnect().await;

        let forged = es256(&stranger, &claims);
        let confused = {
            let secret = EncodingKey::from_secret(key.public_key_pem().as_bytes()).unwrap();
            jsonwebtoken::encode(&Header::default(), &claims, &secret).unwrap()
        };
        for (what, token) in [
            ("another key", forged),
            ("HS256 with the public key", confused),
        ] {
            let ack = bridge
                .expect_refused(TCP, with_token(v, "device-1", "device-1", &token))
                .await;
            assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword, "{what}");
        }
    }
}
