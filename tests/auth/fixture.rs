//! What the authentication tests (`auth.rs`, `jwt.rs`) share: the users and their password
//! file made by the real `mosquitto_passwd` and by `bridge passwd`, clients with credentials,
//! and small checks on what the broker sends.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use e2e::protocol::client::ClientOptions;
use e2e::protocol::{ConnAck, Connect, Packet, ProtocolVersion, QoS, ReasonCode};
use e2e::{clean, encode, text, Bridge, TempDir, TestClient, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const V311: ProtocolVersion = ProtocolVersion::V311;
pub(crate) const V5: ProtocolVersion = ProtocolVersion::V5;
pub(crate) const TCP: Transport = Transport::Tcp;

pub(crate) type Case = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Logins the tests send at once from their one address (127.0.0.1): below the default
/// `max_failed_attempts` (5), since the bridge counts checks in flight against an address's
/// failure budget and refuses logins past it as busy (0x89) until those checks end.
const LOGINS_AT_ONCE: usize = 4;

/// [`e2e::run_cases`], [`LOGINS_AT_ONCE`] cases at a time, for cases that log in one
/// connection at a time.
pub(crate) async fn run_cases_a_few_at_once(cases: Vec<(String, Case)>) {
    let mut cases = cases.into_iter().peekable();
    while cases.peek().is_some() {
        e2e::run_cases(cases.by_ref().take(LOGINS_AT_ONCE).collect()).await;
    }
}

// ----- the files -------------------------------------------------------------------------

/// The users of every test: alice's line is written by `mosquitto_passwd` (its default,
/// `$7$` PBKDF2-SHA512), bob's by `mosquitto_passwd -H sha512` (`$6$`), carol's and dave's by
/// `bridge passwd` (argon2id).
pub(crate) const USERS: [(&str, &str); 4] = [
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
    ("dave", "dave-pw"),
];

/// A temporary directory with a password file (and an ACL file when asked).
pub(crate) struct Fixture {
    pub(crate) dir: TempDir,
    pub(crate) passwd: PathBuf,
    pub(crate) acl: Option<PathBuf>,
}

impl Fixture {
    pub(crate) fn new(label: &str, acl: Option<&str>) -> Fixture {
        let dir = TempDir::new(label);
        let passwd = dir.path().join("passwd");
        let path = passwd.to_str().unwrap();
        run_ok(Command::new("mosquitto_passwd").args(["-b", "-c", path, "alice", "alice-pw"]));
        run_ok(
            Command::new("mosquitto_passwd").args(["-H", "sha512", "-b", path, "bob", "bob-pw"]),
        );
        let out = bridge_passwd(&passwd, "carol", "carol-pw\n");
        assert!(out.status.success(), "bridge passwd: {out:?}");
        let out = bridge_passwd(&passwd, "dave", "dave-pw\n");
        assert!(out.status.success(), "bridge passwd: {out:?}");
        let acl = acl.map(|text| {
            let path = dir.path().join("acl");
            std::fs::write(&path, text).unwrap();
            path
        });
        Fixture { dir, passwd, acl }
    }

    /// The `--config` text: `[auth]` with these files, plus `extra` keys of `[auth]`.
    pub(crate) fn config(&self, extra: &str) -> String {
        let mut toml = format!(
            "[auth]\npassword_file = {:?}\n",
            self.passwd.display().to_string()
        );
        if let Some(acl) = &self.acl {
            toml.push_str(&format!("acl_file = {:?}\n", acl.display().to_string()));
        }
        toml.push_str(extra);
        toml
    }
}

/// Runs a command to success, saying what failed otherwise.
pub(crate) fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); scripts/setup.sh installs it"));
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
    out
}

/// `bridge passwd FILE USER` with `stdin` on its standard input (a pipe, not a terminal).
pub(crate) fn bridge_passwd(file: &Path, user: &str, stdin: &str) -> Output {
    let mut child = Command::new(Bridge::binary())
        .arg("passwd")
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the bridge ({e}): cargo build -p bridge first"));
    let mut input = child.stdin.take().unwrap();
    // A refusal of the arguments (a bad user name) may come before stdin is read: the pipe
    // is then closed under the write, which is not the test's business.
    if let Err(e) = input.write_all(stdin.as_bytes()) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing the password: {e}"
        );
    }
    drop(input);
    child.wait_with_output().unwrap()
}

// ----- clients -----------------------------------------------------------------------------

/// Clean-session options with a user name and password.
pub(crate) fn login(v: ProtocolVersion, id: &str, user: &str, password: &str) -> ClientOptions {
    with_credentials(clean(v, id), Some(user), Some(password))
}

pub(crate) fn with_credentials(
    mut o: ClientOptions,
    user: Option<&str>,
    password: Option<&str>,
) -> ClientOptions {
    o.username = user.map(str::to_owned);
    o.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    o
}

pub(crate) fn password_of(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap()
}

/// A connected client of `user` (panics if refused).
pub(crate) async fn user(bridge: &Bridge, v: ProtocolVersion, id: &str, name: &str) -> TestClient {
    bridge
        .client(TCP, login(v, id, name, password_of(name)))
        .await
}

/// The refusal of a SUBSCRIBE, as each version says it: 0x87 Not authorized (5.0), 0x80
/// Failure (3.1.1) [MQTT-3.9.3-2].
pub(crate) fn not_authorized_suback(v: ProtocolVersion) -> ReasonCode {
    match v {
        V5 => ReasonCode::NotAuthorized,
        V311 => ReasonCode::UnspecifiedError,
    }
}

pub(crate) fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

/// The messages that arrived before a PINGREQ round trip: everything the broker had queued
/// for this connection by then.
pub(crate) async fn drain(c: &mut TestClient) -> Vec<(String, String)> {
    c.sync().await;
    let mut out = Vec::new();
    while let Some(p) = c.try_recv_within(Duration::ZERO).await {
        out.push((p.topic.to_string(), text(&p)));
    }
    out
}

/// The CONNACK's wire bytes for its version: byte 3 is the 3.1.1 return code or the 5.0
/// reason code.
pub(crate) fn connack_code_on_the_wire(ack: &ConnAck, v: ProtocolVersion) -> u8 {
    encode(&Packet::ConnAck(ack.clone()), v)[3]
}

/// paho-mqtt connects with a user name and password and prints `CONNACK <code> <reason>`.
pub(crate) const PAHO_CONNECT: &str = r#"
import sys, time
from urllib.parse import urlparse
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
url, version, user, password = urlparse(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-auth-" + str(time.time_ns()),
                     protocol=mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311,
                     transport="websockets" if url.scheme == "ws" else "tcp")
if url.scheme == "ws":
    client.ws_set_options(path=url.path)
client.username_pw_set(user, password)
result = []
client.on_connect = lambda c, u, flags, rc, props: result.append(rc)
client.connect(url.hostname, url.port)
deadline = time.time() + 10
while not result and time.time() < deadline:
    client.loop(0.1)
if not result:
    print("NO CONNACK")
    sys.exit(3)
print(f"CONNACK {result[0].value} {result[0]}")
client.disconnect()
"#;

pub(crate) async fn paho_connack(
    url: &str,
    v: ProtocolVersion,
    user: &str,
    password: &str,
) -> String {
    let version = if v == V5 { "5" } else { "4" };
    let out = tokio::process::Command::new("python3")
        .args(["-c", PAHO_CONNECT, url, version, user, password])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("paho finished")
        .expect("python3 ran (scripts/setup.sh installs it with paho-mqtt)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// CONNECT from `source` (a loopback address of our choosing) to `bridge`; the CONNACK.
pub(crate) async fn connect_from(source: IpAddr, bridge: &Bridge, connect: Connect) -> ConnAck {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(bridge.mqtt_addr()).await.unwrap();
    let v = connect.protocol;
    stream
        .write_all(&encode(&Packet::Connect(Box::new(connect)), v))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some((Packet::ConnAck(ack), _)) = Packet::decode(&buf, v, u32::MAX).unwrap() {
            return ack;
        }
        let mut chunk = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("a CONNACK in time")
            .unwrap();
        assert!(n > 0, "closed before CONNACK");
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub(crate) fn connect_as(id: &str, user: &str, password: &str) -> Connect {
    let mut c = Connect::new(V5, id, true);
    c.username = Some(user.to_owned());
    c.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    c
}
