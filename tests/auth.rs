//! Who may connect and what they may touch, seen from outside: password files made by the
//! real `mosquitto_passwd` and by `bridge passwd`, an ACL file in mosquitto's syntax, session
//! ownership (also across a restart on `--data`), anonymous clients, the per-address limit on
//! failed logins; with the project's Rust client, `mosquitto_pub` and paho-mqtt.
//!
//! Every test starts one bridge with an `[auth]` table over files made in a temporary
//! directory ([`Fixture`]) and runs its cases against it, concurrently where they do not
//! interfere (each case has topics and client ids of its own).
//!
//! # Needs
//! `mosquitto_passwd` and `mosquitto_pub` (Debian `mosquitto` and `mosquitto-clients`),
//! `python3` with paho-mqtt 2.x: `scripts/setup.sh` installs them.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use e2e::protocol::{Connect, ProtocolVersion, QoS, ReasonCode, Subscription};
use e2e::{
    clean, filter, persistent, run_cases, text, version_name, Bridge, TempDir, TestClient,
    Transport, TRANSPORTS, VERSIONS,
};

#[path = "auth/fixture.rs"]
mod fixture;

use fixture::*;

/// The ACL of the ACL tests, in mosquitto's syntax.
const ACL: &str = "\
# Anonymous clients (rules before the first `user` line): the public topics.
topic read public/#

user alice
topic readwrite alice/#
topic read shared/#
topic deny shared/+/secret/#

user bob
topic read alice/#
topic readwrite bob/#

# carol may do everything.
user carol
topic readwrite #

# Everyone: their own subtree.
pattern readwrite users/%u/#
";

// ----- password authentication -------------------------------------------------------------

/// [MQTT-3.1.4-2]: failed authentication closes the connection, after CONNACK 0x86 Bad User
/// Name or Password (5.0) or return code 4 (3.1.1), with Session Present 0 [MQTT-3.2.2-6]
/// and the connection then closed [MQTT-3.2.2-7] (3.1.1: [MQTT-3.2.2-5]).
#[tokio::test]
async fn wrong_or_missing_credentials_get_bad_user_name_or_password_and_the_connection_closed() {
    let fixture = Fixture::new("auth-refused", None);
    let bridge = Arc::new(Bridge::start_with_config(
        &fixture.config("max_failed_attempts = 0\n"),
    ));
    let mut cases: Vec<(String, Case)> = Vec::new();
    for t in TRANSPORTS {
        for v in VERSIONS {
            let bridge = bridge.clone();
            let name = format!("{t}, MQTT {}", version_name(v));
            let tag = format!("{t}-{}", version_name(v));
            cases.push((
                name,
                Box::pin(async move {
                    let mut attempts = vec![
                        ("a wrong password", Some("alice"), Some("alice-pw!")),
                        ("another user's password", Some("carol"), Some("dave-pw")),
                        ("an unknown user", Some("mallory"), Some("alice-pw")),
                        ("a user name without a password", Some("bob"), None),
                        ("no credentials at all", None, None),
                    ];
                    if v == V5 {
                        // 3.1.1 cannot send a password without a user name [MQTT-3.1.2-22].
                        attempts.push(("a password without a user name", None, Some("bob-pw")));
                    }
                    for (what, name, password) in attempts {
                        let o =
                            with_credentials(clean(v, &format!("refused-{tag}")), name, password);
                        let ack = bridge.expect_refused(t, o).await;
                        assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword, "{what}");
                        assert!(!ack.session_present, "{what}: [MQTT-3.2.2-6]");
                        let wire = connack_code_on_the_wire(&ack, v);
                        assert_eq!(wire, if v == V5 { 0x86 } else { 4 }, "{what}");
                    }
                    // The connection is closed right after the CONNACK.
                    let mut raw = bridge.raw(t).await;
                    let mut connect = Connect::new(v, format!("raw-{tag}"), true);
                    connect.username = Some("alice".to_owned());
                    connect.password = Some(Bytes::from_static(b"nope"));
                    let ack = raw.connect(connect).await;
                    assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword);
                    let after = raw.expect_closed_within(Duration::from_secs(5)).await;
                    assert!(
                        after.is_empty(),
                        "nothing after a refusing CONNACK: {after:?}"
                    );
                }) as Case,
            ));
        }
    }
    run_cases(cases).await;
}

/// A password file made by the real `mosquitto_passwd` (`$7$` and `-H sha512` `$6$` lines)
/// works unchanged, and so do lines written by `bridge passwd` in the same file.
#[tokio::test]
async fn password_files_from_mosquitto_passwd_and_bridge_passwd_both_work() {
    let fixture = Fixture::new("auth-files", None);
    let text = std::fs::read_to_string(&fixture.passwd).unwrap();
    let hash_of = |user: &str| {
        let prefix = format!("{user}:");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no line for {user} in:\n{text}"))
            .to_owned()
    };
    assert!(hash_of("alice").starts_with("$7$"), "{text}");
    assert!(hash_of("bob").starts_with("$6$"), "{text}");
    assert!(hash_of("carol").starts_with("$argon2id$"), "{text}");
    assert!(!text.contains("carol-pw"), "never the password itself");
    let bridge = Arc::new(Bridge::start_with_config(&fixture.config("")));
    let mut cases: Vec<(String, Case)> = Vec::new();
    for t in TRANSPORTS {
        for v in VERSIONS {
            for (name, password) in USERS {
                let bridge = bridge.clone();
                let id = format!("{name}-{t}-{}", version_name(v));
                cases.push((
                    format!("{name} over {t}, MQTT {}", version_name(v)),
                    Box::pin(async move {
                        let (c, ack) = bridge
                            .connect(t, login(v, &id, name, password))
                            .await
                            .unwrap_or_else(|e| panic!("{name} refused: {e}"));
                        assert_eq!(ack.reason, ReasonCode::Success);
                        c.disconnect().await;
                    }) as Case,
                ));
            }
        }
    }
    run_cases_a_few_at_once(cases).await;
}

/// `mosquitto_pub` says "bad user name or password" and exits with the CONNACK code (4 in
/// 3.1.1, 134 = 0x86 in 5.0); paho-mqtt reports the same reason; both connect and publish
/// with the right password.
#[tokio::test]
async fn mosquitto_pub_and_paho_are_refused_with_a_wrong_password_and_accepted_with_the_right_one()
{
    let fixture = Fixture::new("auth-interop", None);
    let bridge = Bridge::start_with_config(&fixture.config("max_failed_attempts = 0\n"));
    let port = bridge.mqtt_addr().port().to_string();
    for (flag, code) in [("mqttv311", 4), ("mqttv5", 134)] {
        for (user, password, ok) in [
            ("alice", "wrong", false),
            ("alice", "alice-pw", true),
            ("carol", "carol-pw", true),
        ] {
            let out = tokio::process::Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-V",
                    flag,
                    "-u",
                    user,
                    "-P",
                    password,
                ])
                .args(["-t", "interop/auth", "-m", "hello", "-q", "1"])
                .output();
            let out = tokio::time::timeout(Duration::from_secs(10), out)
                .await
                .expect("mosquitto_pub finished")
                .expect("mosquitto_pub ran (scripts/setup.sh installs it)");
            let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
            let what = format!("mosquitto_pub {flag} {user}/{password}: {out:?}");
            if ok {
                assert!(out.status.success(), "{what}");
            } else {
                assert_eq!(out.status.code(), Some(code), "{what}");
                assert!(stderr.contains("bad user name or password"), "{what}");
            }
        }
    }
    let mut cases: Vec<(String, Case)> = Vec::new();
    for t in TRANSPORTS {
        for v in VERSIONS {
            for (password, ok) in [("wrong", false), ("bob-pw", true)] {
                let url = match t {
                    Transport::Tcp => format!("mqtt://{}", bridge.mqtt_addr()),
                    Transport::Ws => bridge.ws_url().to_owned(),
                };
                cases.push((
                    format!("paho over {t}, MQTT {}, {password}", version_name(v)),
                    Box::pin(async move {
                        let line = paho_connack(&url, v, "bob", password).await;
                        if ok {
                            assert_eq!(line, "CONNACK 0 Success");
                        } else {
                            // paho reports 3.1.1's return code 4 as the 5.0 reason 134.
                            assert_eq!(line, "CONNACK 134 Bad user name or password");
                        }
                    }) as Case,
                ));
            }
        }
    }
    run_cases(cases).await;
}

// ----- anonymous clients and the limit on failures ----------------------------------------

/// With authentication configured, a client without credentials is refused unless
/// `allow_anonymous = true`; then it gets the ACL's anonymous rules, and wrong credentials
/// are still refused.
#[tokio::test]
async fn anonymous_clients_are_let_in_only_with_allow_anonymous_and_get_the_anonymous_rules() {
    let fixture = Fixture::new("auth-anon", Some(ACL));
    let bridge = Arc::new(Bridge::start_with_config(
        &fixture.config("allow_anonymous = true\nmax_failed_attempts = 0\n"),
    ));
    let mut cases: Vec<(String, Case)> = Vec::new();
    for v in VERSIONS {
        let bridge = bridge.clone();
        cases.push((
            format!("MQTT {}", version_name(v)),
            Box::pin(async move {
                let tag = version_name(v);
                let mut anon = bridge.client(TCP, clean(v, &format!("anon-{tag}"))).await;
                let ack = anon
                    .subscribe(&format!("public/{tag}/#"), QoS::AtLeastOnce)
                    .await;
                assert_eq!(ack.reasons, [granted(QoS::AtLeastOnce)]);
                let ack = anon.subscribe("alice/#", QoS::AtLeastOnce).await;
                assert_eq!(ack.reasons, [not_authorized_suback(v)]);
                let mut carol = user(&bridge, v, &format!("carol-anon-{tag}"), "carol").await;
                carol
                    .publish(&format!("public/{tag}/news"), "hi", QoS::AtLeastOnce, false)
                    .await;
                let got = anon.recv().await;
                assert_eq!(text(&got), "hi");
                let wrong = login(v, &format!("wrong-{tag}"), "alice", "bob-pw");
                let ack = bridge.expect_refused(TCP, wrong).await;
                assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword);
                let no_password =
                    with_credentials(clean(v, &format!("np-{tag}")), Some("alice"), None);
                let ack = bridge.expect_refused(TCP, no_password).await;
                assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword);
            }) as Case,
        ));
    }
    run_cases(cases).await;
    drop(bridge);

    let closed = Bridge::start_with_config(&fixture.config(""));
    for v in VERSIONS {
        let ack = closed.expect_refused(TCP, clean(v, "anonymous")).await;
        assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword);
    }
}

/// After `max_failed_attempts` failures from one address, even the right password is
/// refused from it (0x86, without checking it) until the window has passed; other addresses
/// are not affected.
#[tokio::test]
async fn repeated_failures_from_one_address_refuse_it_until_the_window_passes() {
    let fixture = Fixture::new("auth-limit", None);
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let neighbour = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let bridge = Bridge::start_with_config(
        &fixture.config("max_failed_attempts = 3\nfailed_attempts_window_secs = 600\n"),
    );
    for i in 0..3 {
        let ack = connect_from(
            attacker,
            &bridge,
            connect_as(&format!("guess-{i}"), "bob", "guess"),
        )
        .await;
        assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword);
    }
    let ack = connect_from(attacker, &bridge, connect_as("right", "bob", "bob-pw")).await;
    assert_eq!(
        ack.reason,
        ReasonCode::BadUserNameOrPassword,
        "refused while limited"
    );
    let ack = connect_from(neighbour, &bridge, connect_as("right", "bob", "bob-pw")).await;
    assert_eq!(
        ack.reason,
        ReasonCode::Success,
        "another address is not limited"
    );
    drop(bridge);

    let window = Duration::from_secs(2);
    let bridge = Bridge::start_with_config(
        &fixture.config("max_failed_attempts = 3\nfailed_attempts_window_secs = 2\n"),
    );
    for i in 0..3 {
        let ack = connect_from(
            attacker,
            &bridge,
            connect_as(&format!("guess-{i}"), "bob", "guess"),
        )
        .await;
        assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword);
    }
    tokio::time::sleep(window + Duration::from_millis(500)).await;
    let ack = connect_from(attacker, &bridge, connect_as("right", "bob", "bob-pw")).await;
    assert_eq!(
        ack.reason,
        ReasonCode::Success,
        "accepted once the window has passed"
    );
}

// ----- topic ACLs --------------------------------------------------------------------------

/// An ACL file in mosquitto's syntax: a SUBSCRIBE no rule lets the user read is refused
/// (SUBACK 0x87 in 5.0, 0x80 in 3.1.1, in the order of the filters [MQTT-3.9.3-1]); a
/// PUBLISH the user may not write gets PUBACK 0x87 in 5.0, is acknowledged and dropped in
/// 3.1.1 ([MQTT-3.3.5-2] of 3.1.1), and reaches no subscriber in either; `%u` gives each user
/// their own subtree; a wildcard subscription overlapping readable topics is granted and
/// filtered on delivery; retained messages are filtered by `read` too.
#[tokio::test]
async fn an_acl_file_in_mosquitto_syntax_governs_subscribe_publish_and_delivery() {
    let fixture = Fixture::new("auth-acl", Some(ACL));
    let bridge = Arc::new(Bridge::start_with_config(&fixture.config("")));
    let mut cases: Vec<(String, Case)> = Vec::new();
    for v in VERSIONS {
        let b = bridge.clone();
        cases.push((
            format!("denied subscriptions, MQTT {}", version_name(v)),
            Box::pin(async move {
                let tag = version_name(v);
                let mut alice = user(&b, v, &format!("alice-sub-{tag}"), "alice").await;
                let ack = alice
                    .subscribe_with(
                        vec![
                            Subscription::new(filter("bob/#"), QoS::AtLeastOnce),
                            Subscription::new(filter("alice/#"), QoS::AtLeastOnce),
                            Subscription::new(
                                filter(&format!("shared/{tag}/secret/#")),
                                QoS::AtLeastOnce,
                            ),
                            Subscription::new(filter("users/bob/#"), QoS::AtLeastOnce),
                            Subscription::new(filter("$SYS/#"), QoS::AtLeastOnce),
                        ],
                        Default::default(),
                    )
                    .await;
                let no = not_authorized_suback(v);
                assert_eq!(ack.reasons, [no, granted(QoS::AtLeastOnce), no, no, no]);
            }) as Case,
        ));
        let b = bridge.clone();
        cases.push((
            format!("a denied publish reaches no one, MQTT {}", version_name(v)),
            Box::pin(async move {
                let tag = version_name(v);
                let topic = format!("alice/{tag}/denied");
                let mut carol = user(&b, v, &format!("carol-watch-{tag}"), "carol").await;
                carol
                    .subscribe(&format!("alice/{tag}/#"), QoS::AtLeastOnce)
                    .await;
                let mut bob = user(&b, v, &format!("bob-pub-{tag}"), "bob").await;
                let reason = bob.publish(&topic, "stolen", QoS::AtLeastOnce, false).await;
                let expected = if v == V5 {
                    ReasonCode::NotAuthorized
                } else {
                    ReasonCode::Success
                };
                assert_eq!(reason, expected);
                let reason = bob
                    .publish(&topic, "stolen-2", QoS::ExactlyOnce, false)
                    .await;
                assert_eq!(reason, expected, "QoS 2: PUBREC");
                // alice may write there: her message is the first carol gets.
                let mut alice = user(&b, v, &format!("alice-pub-{tag}"), "alice").await;
                alice
                    .publish(
                        &format!("alice/{tag}/after"),
                        "after",
                        QoS::AtLeastOnce,
                        false,
                    )
                    .await;
                let first = carol.recv().await;
                assert_eq!(text(&first), "after", "the denied messages were routed");
                assert!(drain(&mut carol).await.is_empty());
            }) as Case,
        ));
        let b = bridge.clone();
        cases.push((
            format!(
                "%u: each user reads only their own subtree, MQTT {}",
                version_name(v)
            ),
            Box::pin(async move {
                let tag = version_name(v);
                let inbox = |who: &str| format!("users/{who}/{tag}/inbox");
                let mut alice = user(&b, v, &format!("alice-inbox-{tag}"), "alice").await;
                let mut bob = user(&b, v, &format!("bob-inbox-{tag}"), "bob").await;
                let any_inbox = format!("users/+/{tag}/inbox");
                for c in [&mut alice, &mut bob] {
                    // Overlaps their own subtree: granted, filtered on delivery.
                    let ack = c.subscribe(&any_inbox, QoS::AtLeastOnce).await;
                    assert_eq!(ack.reasons, [granted(QoS::AtLeastOnce)]);
                }
                let mut dave = user(&b, v, &format!("dave-inbox-{tag}"), "dave").await;
                // dave may write only his own subtree.
                let reason = dave
                    .publish(&inbox("alice"), "from-dave", QoS::AtLeastOnce, false)
                    .await;
                if v == V5 {
                    assert_eq!(reason, ReasonCode::NotAuthorized);
                }
                let mut carol = user(&b, v, &format!("carol-inbox-{tag}"), "carol").await;
                carol
                    .publish(&inbox("bob"), "for-bob", QoS::AtLeastOnce, false)
                    .await;
                carol
                    .publish(&inbox("alice"), "for-alice", QoS::AtLeastOnce, false)
                    .await;
                assert_eq!(text(&alice.recv().await), "for-alice");
                assert_eq!(text(&bob.recv().await), "for-bob");
                assert!(drain(&mut alice).await.is_empty());
                assert!(drain(&mut bob).await.is_empty());
            }) as Case,
        ));
        let b = bridge.clone();
        cases.push((
            format!(
                "wildcards filtered on delivery, retained too, MQTT {}",
                version_name(v)
            ),
            Box::pin(async move {
                let tag = version_name(v);
                let mut carol = user(&b, v, &format!("carol-retain-{tag}"), "carol").await;
                for (topic, payload) in [
                    (format!("shared/{tag}/secret/r"), "secret-retained"),
                    (format!("shared/{tag}/open/r"), "open-retained"),
                ] {
                    carol.publish(&topic, payload, QoS::AtLeastOnce, true).await;
                }
                let mut alice = user(&b, v, &format!("alice-wild-{tag}"), "alice").await;
                let ack = alice
                    .subscribe(&format!("shared/{tag}/#"), QoS::AtLeastOnce)
                    .await;
                assert_eq!(ack.reasons, [granted(QoS::AtLeastOnce)]);
                let retained = drain(&mut alice).await;
                assert_eq!(
                    retained,
                    [(format!("shared/{tag}/open/r"), "open-retained".to_owned())]
                );
                carol
                    .publish(
                        &format!("shared/{tag}/secret/x"),
                        "secret",
                        QoS::AtLeastOnce,
                        false,
                    )
                    .await;
                carol
                    .publish(
                        &format!("shared/{tag}/open/x"),
                        "open",
                        QoS::AtLeastOnce,
                        false,
                    )
                    .await;
                assert_eq!(text(&alice.recv().await), "open");
                assert!(drain(&mut alice).await.is_empty());
            }) as Case,
        ));
    }
    run_cases_a_few_at_once(cases).await;
}

// ----- session ownership ------------------------------------------------------------------

/// A session belongs to the user who made it: another user connecting with its client id,
/// clean session 0 or 1, is refused (0x87 Not authorized in 5.0, 5 in 3.1.1) and the owner's
/// session, with its queued messages, stays intact; also after a restart on the same data.
#[tokio::test]
async fn another_user_cannot_resume_take_over_or_discard_a_session_even_after_a_restart() {
    let fixture = Fixture::new("auth-owner", None);
    let data = TempDir::new("auth-owner-data");
    let mut bridge =
        Bridge::start_with_data(data.path(), &fixture.config("max_failed_attempts = 0\n"));
    let id = |v: ProtocolVersion| format!("alices-session-{}", version_name(v));
    let topic = |v: ProtocolVersion| format!("alice/queue/{}", version_name(v));
    let alice_persistent = |v: ProtocolVersion| {
        with_credentials(persistent(v, &id(v)), Some("alice"), Some("alice-pw"))
    };
    for v in VERSIONS {
        let mut alice = bridge.client(TCP, alice_persistent(v)).await;
        alice.subscribe(&topic(v), QoS::AtLeastOnce).await;
        alice.disconnect().await;
        let mut carol = user(
            &bridge,
            v,
            &format!("carol-queue-{}", version_name(v)),
            "carol",
        )
        .await;
        for n in ["one", "two"] {
            carol.publish(&topic(v), n, QoS::AtLeastOnce, false).await;
        }
        carol.disconnect().await;
    }
    theft(&bridge.endpoint(TCP), &id).await;
    bridge.stop();
    bridge.restart();
    theft(&bridge.endpoint(TCP), &id).await;
    for v in VERSIONS {
        let (mut alice, ack) = bridge.connect(TCP, alice_persistent(v)).await.unwrap();
        assert!(ack.session_present, "alice's session survived");
        assert_eq!(alice.recv_payloads(2).await, ["one", "two"]);
        alice.disconnect().await;
    }
    // The refusal on the wire: 0x87 in 5.0, return code 5 in 3.1.1.
    for (v, code) in [(V5, 0x87), (V311, 5)] {
        let mut raw = bridge.raw(TCP).await;
        let mut connect = Connect::new(v, id(v), false);
        connect.username = Some("bob".to_owned());
        connect.password = Some(Bytes::from_static(b"bob-pw"));
        let ack = raw.connect(connect).await;
        assert_eq!(connack_code_on_the_wire(&ack, v), code);
    }
}

/// bob, with the right password, tries alice's client id with clean session 0 and 1, in
/// both versions: each refused with Not authorized.
async fn theft(endpoint: &e2e::Endpoint, id: &impl Fn(ProtocolVersion) -> String) {
    for v in VERSIONS {
        for clean_start in [false, true] {
            let o = if clean_start {
                clean(v, &id(v))
            } else {
                persistent(v, &id(v))
            };
            let o = with_credentials(o, Some("bob"), Some("bob-pw"));
            match TestClient::connect(endpoint, o).await {
                Err(e) => assert_eq!(
                    e.refused_reason(),
                    Some(ReasonCode::NotAuthorized),
                    "bob with alice's id, clean {clean_start}: {e}"
                ),
                Ok(_) => panic!("bob took alice's session (clean {clean_start}, {v:?})"),
            }
        }
    }
}

// ----- bridge passwd and start-up errors ---------------------------------------------------

/// `bridge passwd` replaces a user's line in place (a mosquitto line too) and keeps the
/// others; bad input is refused with a message and a non-zero exit.
#[tokio::test]
async fn bridge_passwd_updates_a_user_in_place_and_refuses_bad_input() {
    let fixture = Fixture::new("auth-passwd", None);
    let before = std::fs::read_to_string(&fixture.passwd).unwrap();
    let out = bridge_passwd(&fixture.passwd, "alice", "new-alice-pw\r\n");
    assert!(out.status.success(), "{out:?}");
    let after = std::fs::read_to_string(&fixture.passwd).unwrap();
    let users = |t: &str| {
        t.lines()
            .map(|l| l.split(':').next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(users(&after), users(&before), "same users, same order");
    assert!(after
        .lines()
        .next()
        .unwrap()
        .starts_with("alice:$argon2id$"));
    assert_eq!(
        after.lines().nth(1),
        before.lines().nth(1),
        "bob's line untouched"
    );
    #[cfg(unix)]
    {
        // A new file is the owner's alone; an existing one keeps its permissions.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let fresh = fixture.dir.path().join("fresh");
        assert!(bridge_passwd(&fresh, "erin", "erin-pw\n").status.success());
        assert_eq!(mode(&fresh), 0o600);
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(bridge_passwd(&fresh, "erin", "erin-pw2\n").status.success());
        assert_eq!(mode(&fresh), 0o640);
    }
    for (user, stdin, needle) in [
        ("erin", "", "empty"),
        ("a:b", "pw\n", "':'"),
        ("", "pw\n", "empty"),
    ] {
        let out = bridge_passwd(&fixture.passwd, user, stdin);
        assert!(!out.status.success(), "{user:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{user:?}: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(&fixture.passwd).unwrap(), after);

    let bridge = Bridge::start_with_config(&fixture.config(""));
    let ack = bridge
        .expect_refused(TCP, login(V5, "old", "alice", "alice-pw"))
        .await;
    assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword);
    bridge
        .client(TCP, login(V5, "new", "alice", "new-alice-pw"))
        .await
        .disconnect()
        .await;
}

/// A password or ACL file the bridge cannot use stops it at start: exit 2, and the message
/// names the file and the line.
#[test]
fn unusable_auth_files_stop_the_bridge_with_exit_2_naming_file_and_line() {
    let fixture = Fixture::new(
        "auth-startup",
        Some("user alice\ntopic read a\ntopic sometimes b\n"),
    );
    let bad_passwd = fixture.dir.path().join("bad-passwd");
    std::fs::write(&bad_passwd, "# users\nalice:alice-pw\n").unwrap();
    let cases = [
        (
            format!(
                "[auth]\npassword_file = {:?}\n",
                bad_passwd.display().to_string()
            ),
            format!("{}:2:", bad_passwd.display()),
        ),
        (
            fixture.config(""),
            format!("{}:3:", fixture.acl.as_ref().unwrap().display()),
        ),
        (
            "[auth]\npassword_file = \"/nonexistent/passwd\"\n".to_owned(),
            "/nonexistent/passwd".to_owned(),
        ),
        ("[auth]\n[auth.jwt]\n".to_owned(), "[auth.jwt]".to_owned()),
    ];
    for (i, (toml, needle)) in cases.iter().enumerate() {
        let config = fixture.dir.path().join(format!("config-{i}.toml"));
        std::fs::write(&config, toml).unwrap();
        let out = Command::new(Bridge::binary())
            .args([
                "--http",
                "127.0.0.1:0",
                "--mqtt",
                "127.0.0.1:0",
                "--data",
                "none",
                "--config",
            ])
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {stderr}");
        assert!(stderr.contains(needle.as_str()), "{toml}: {stderr}");
    }
}

#[tokio::test]
async fn sighup_reads_the_password_and_acl_files_again_and_a_broken_file_changes_nothing() {
    // As mosquitto's SIGHUP: users and rules change without a restart, for new connections
    // and for every later decision; a file that cannot be used keeps the previous ones.
    let fixture = Fixture::new("auth-reload", Some("user alice\ntopic read before/#\n"));
    let bridge = Bridge::start_with_config(&fixture.config("max_failed_attempts = 0\n"));
    let erin = || login(V5, "erin", "erin", "erin-pw");
    assert_eq!(
        bridge.expect_refused(TCP, erin()).await.reason,
        ReasonCode::BadUserNameOrPassword,
        "erin is not a user yet"
    );
    let mut alice = user(&bridge, V5, "alice-reload", "alice").await;
    let no = not_authorized_suback(V5);
    let ack = alice.subscribe("after/#", QoS::AtLeastOnce).await;
    assert_eq!(ack.reasons, [no], "not readable before the reload");

    let out = bridge_passwd(&fixture.passwd, "erin", "erin-pw\n");
    assert!(out.status.success(), "bridge passwd: {out:?}");
    let acl = fixture.acl.clone().unwrap();
    std::fs::write(
        &acl,
        "user alice\ntopic read after/#\nuser erin\ntopic read #\n",
    )
    .unwrap();
    bridge.reload();
    // The reload runs beside the connections: wait for erin to be let in.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut erin_client = loop {
        match bridge.connect(TCP, erin()).await {
            Ok((c, _)) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("erin still refused after SIGHUP: {e}"),
        }
    };
    // The open connection follows the new rules too.
    let ack = alice.subscribe("after/#", QoS::AtLeastOnce).await;
    assert_eq!(ack.reasons, [granted(QoS::AtLeastOnce)]);
    let ack = alice.subscribe("before/#", QoS::AtLeastOnce).await;
    assert_eq!(ack.reasons, [no], "the old rule is gone");

    // A broken ACL file beside a new user: reported, and nothing changes (the files are
    // put in force together or not at all): frank stays unknown, the rules stay.
    std::fs::write(&acl, "usr alice\ntopic read after/#\n").unwrap();
    let out = bridge_passwd(&fixture.passwd, "frank", "frank-pw\n");
    assert!(out.status.success(), "bridge passwd: {out:?}");
    bridge.reload();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = bridge
            .expect_refused(TCP, login(V5, "frank", "frank", "frank-pw"))
            .await;
        assert_eq!(refused.reason, ReasonCode::BadUserNameOrPassword);
    }
    let ack = alice.subscribe("after/x", QoS::AtLeastOnce).await;
    assert_eq!(ack.reasons, [granted(QoS::AtLeastOnce)], "rules kept");
    let ack = erin_client.subscribe("anything/#", QoS::AtLeastOnce).await;
    assert_eq!(ack.reasons, [granted(QoS::AtLeastOnce)], "erin kept");
    alice.disconnect().await;
    erin_client.disconnect().await;
}
