//! The deadlines of a connection: connect timeout, keep-alive and the deadline of a packet
//! once begun, driven through `Broker::serve` over an in-memory transport against a real
//! engine.
//!
//! Time: tokio's clock is paused and moved only by `tokio::time::advance`, so nothing here
//! depends on the machine's speed. The engine runs on an OS thread of its own and answers
//! in real time; while the test waits for such an answer the paused clock must not jump
//! ahead to the next timer on its own (tokio's auto-advance), so every test holds the clock
//! with [`hold_clock`]. Waits for something that should happen are bounded in real time
//! (so a broken deadline fails the test rather than hanging it); checks that something has
//! *not* happened are made after letting every ready task run.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use broker::{Broker, BrokerConfig, ConnectionError, ConnectionInfo, Transport};
use bytes::{Bytes, BytesMut};
use futures_util::{Sink, Stream};
use protocol::{
    Connect, Decoder, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    Subscription, TopicFilter, TopicName, Will,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::advance;

use ProtocolVersion::{V311, V5};

/// How long a test waits, in real time, for something the engine or the connection task
/// must do, before it fails.
const REAL_LIMIT: Duration = Duration::from_secs(20);

/// Keeps tokio's paused clock from auto-advancing while it lives: a blocking task inhibits
/// auto-advance for as long as it runs (see `tokio::time::pause`, "Preventing
/// auto-advance"). Dropping the guard (also on a panic) ends the task.
struct ClockHold(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

fn hold_clock() -> ClockHold {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = rx.recv();
    });
    ClockHold(tx)
}

/// Awaits `f`, failing the test if it takes more than [`REAL_LIMIT`] of real time.
async fn within_real_time<F: std::future::Future>(what: &str, f: F) -> F::Output {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(REAL_LIMIT);
        let _ = tx.send(());
    });
    tokio::select! {
        biased;
        out = f => out,
        _ = rx => panic!("{what}: nothing within {REAL_LIMIT:?} of real time"),
    }
}

/// Lets every task that is ready run (the connection tasks react to a clock advance).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// The broker's end of an in-memory connection: chunks in from the test, chunks out to it.
struct Pipe {
    inbound: mpsc::UnboundedReceiver<Bytes>,
    outbound: Option<mpsc::UnboundedSender<Bytes>>,
    /// A peer that stopped reading: while set, every write waits (for ever).
    stalled: Arc<Stall>,
}

/// Whether a [`Pipe`]'s peer reads, and a signal once a write has had to wait.
#[derive(Default)]
struct Stall {
    on: AtomicBool,
    waited: tokio::sync::Notify,
}

impl Stream for Pipe {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inbound.poll_recv(cx).map(|chunk| chunk.map(Ok))
    }
}

impl Sink<Bytes> for Pipe {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stalled.on.load(Ordering::Relaxed) {
            self.stalled.waited.notify_one();
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, chunk: Bytes) -> io::Result<()> {
        match &self.outbound {
            Some(tx) if tx.send(chunk).is_ok() => Ok(()),
            _ => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbound = None;
        Poll::Ready(Ok(()))
    }
}

/// What the test's end of a connection has seen, without waiting.
#[derive(Debug, PartialEq)]
enum Seen {
    Nothing,
    Packet(Box<Packet>),
    Closed,
}

/// The test's end of a connection served by `Broker::serve` on a task of its own.
struct Client {
    version: ProtocolVersion,
    tx: mpsc::UnboundedSender<Bytes>,
    rx: mpsc::UnboundedReceiver<Bytes>,
    decoder: Decoder,
    received: VecDeque<Packet>,
    stall: Arc<Stall>,
    task: JoinHandle<Result<(), ConnectionError>>,
}

impl Client {
    /// A new connection, nothing sent yet; its task has started (its connect timeout runs
    /// from the current paused time).
    async fn open(broker: &Broker, version: ProtocolVersion) -> Client {
        let (to_broker, inbound) = mpsc::unbounded_channel();
        let (outbound, from_broker) = mpsc::unbounded_channel();
        let stall = Arc::new(Stall::default());
        let pipe = Pipe {
            inbound,
            outbound: Some(outbound),
            stalled: stall.clone(),
        };
        let broker = broker.clone();
        let task = tokio::spawn(async move {
            let info = ConnectionInfo::new(None, Transport::Tcp);
            broker.serve(pipe, info).await
        });
        settle().await;
        Client {
            version,
            tx: to_broker,
            rx: from_broker,
            decoder: Decoder::with_version(version, 1 << 20),
            received: VecDeque::new(),
            stall,
            task,
        }
    }

    /// A connection that has sent CONNECT and received CONNACK 0x00.
    async fn connect(
        broker: &Broker,
        version: ProtocolVersion,
        client_id: &str,
        keep_alive: u16,
        will: Option<Will>,
    ) -> Client {
        let mut client = Client::open(broker, version).await;
        let mut connect = Connect::new(version, client_id, true);
        connect.keep_alive = keep_alive;
        connect.will = will;
        client.send(&Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason, ReasonCode::Success),
            other => panic!("{client_id}: expected CONNACK, got {other:?}"),
        }
        client
    }

    /// Sends `packet` and lets the connection task take it in, so that it is seen at the
    /// current (paused) time, not after the next `advance`.
    async fn send(&self, packet: &Packet) {
        let mut buf = BytesMut::new();
        packet.encode(self.version, &mut buf).unwrap();
        self.send_bytes(&buf).await;
    }

    /// Sends `bytes` as one chunk, as [`Client::send`] does.
    async fn send_bytes(&self, bytes: &[u8]) {
        self.tx.send(Bytes::copy_from_slice(bytes)).unwrap();
        settle().await;
    }

    /// Subscribes to `filter` at QoS 0 and waits for the SUBACK.
    async fn subscribe(&mut self, filter: &str) {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: PacketId::MIN,
            subscriptions: vec![Subscription::new(
                TopicFilter::new(filter).unwrap(),
                QoS::AtMostOnce,
            )],
            properties: Default::default(),
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => assert_eq!(ack.reasons, [ReasonCode::Success]),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    fn decode(&mut self, chunk: &[u8]) {
        let mut input = chunk;
        while let Some(p) = self.decoder.decode_from_server(&mut input).unwrap() {
            self.received.push_back(p);
        }
    }

    /// The next packet from the broker, or `None` once it has closed the connection;
    /// bounded in real time.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self.received.pop_front() {
                return Some(p);
            }
            let chunk = within_real_time("waiting for the broker", self.rx.recv()).await?;
            self.decode(&chunk);
        }
    }

    /// What has arrived so far, without waiting.
    fn seen(&mut self) -> Seen {
        loop {
            if let Some(p) = self.received.pop_front() {
                return Seen::Packet(Box::new(p));
            }
            match self.rx.try_recv() {
                Ok(chunk) => self.decode(&chunk),
                Err(mpsc::error::TryRecvError::Empty) => return Seen::Nothing,
                Err(mpsc::error::TryRecvError::Disconnected) => return Seen::Closed,
            }
        }
    }

    /// Asserts that the broker has neither sent anything nor closed the connection.
    async fn assert_open(&mut self, when: &str) {
        settle().await;
        assert_eq!(self.seen(), Seen::Nothing, "{when}");
        assert!(
            !self.task.is_finished(),
            "{when}: the connection task ended"
        );
    }

    /// Waits for the connection to be closed, after a DISCONNECT with `reason` if given,
    /// and returns how `serve` ended.
    async fn assert_closed(
        mut self,
        disconnect: Option<ReasonCode>,
    ) -> Result<(), ConnectionError> {
        if let Some(reason) = disconnect {
            match self.recv().await {
                Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason),
                other => panic!("expected DISCONNECT {reason:?}, got {other:?}"),
            }
        }
        assert_eq!(self.recv().await, None, "the broker closes the connection");
        within_real_time("the connection task's end", self.task)
            .await
            .unwrap()
    }
}

fn publish(topic: &str, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish::new(TopicName::new(topic).unwrap(), payload))
}

/// The bytes of a 3.1.1 / 5.0 QoS 0 PUBLISH to "t" with `payload_len` bytes of payload.
fn publish_bytes(version: ProtocolVersion, payload_len: usize) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let payload = Bytes::from(vec![b'x'; payload_len]);
    Packet::Publish(Publish::new(TopicName::new("t").unwrap(), payload))
        .encode(version, &mut buf)
        .unwrap();
    buf.to_vec()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_only_receives_is_closed_after_one_and_a_half_times_its_keep_alive_while_messages_flow_to_it(
) {
    // [MQTT-3.1.2-24]: "If the Keep Alive value is non-zero and the Server does not receive
    // an MQTT Control Packet from the Client within one and a half times the Keep Alive
    // time period, it MUST close the Network Connection"; 5.0 sends DISCONNECT 0x8D first.
    // What the server sends does not count.
    let _hold = hold_clock();
    let broker = Broker::start(BrokerConfig::default());
    let mut publisher = Client::connect(&broker, V5, "publisher", 0, None).await;
    publisher.subscribe("will/subscriber").await;
    let will = Will {
        topic: TopicName::new("will/subscriber").unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    };
    let mut subscriber = Client::connect(&broker, V5, "subscriber", 2, Some(will)).await;
    // The subscriber's last packet: from here it has 3 s.
    subscriber.subscribe("t").await;

    for _ in 0..5 {
        advance(ms(500)).await;
        publisher.send(&publish("t", b"m")).await;
        match subscriber.recv().await {
            Some(Packet::Publish(p)) => assert_eq!(p.topic.as_str(), "t"),
            other => panic!("expected the message, got {other:?}"),
        }
    }
    // 2.5 s: a message every 0.5 s, none of them from the subscriber.
    advance(ms(490)).await;
    subscriber.assert_open("2.99 s after its last packet").await;
    advance(ms(20)).await;
    let ended = subscriber
        .assert_closed(Some(ReasonCode::KeepAliveTimeout))
        .await;
    assert!(
        matches!(ended, Err(ConnectionError::KeepAliveTimeout)),
        "{ended:?}"
    );

    // The engine was told it was a keep-alive timeout, not a normal close: the will goes out.
    match publisher.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(
                (p.topic.as_str(), &p.payload[..]),
                ("will/subscriber", &b"gone"[..])
            )
        }
        other => panic!("expected the will, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_neither_reads_nor_sends_is_closed_while_a_write_to_it_waits() {
    // [MQTT-3.1.2-24] again, for a peer whose socket is full: the write that waits for it
    // must not hold the connection open past its keep-alive.
    let _hold = hold_clock();
    let broker = Broker::start(BrokerConfig::default());
    let publisher = Client::connect(&broker, V5, "publisher", 0, None).await;
    let mut subscriber = Client::connect(&broker, V5, "subscriber", 2, None).await;
    subscriber.subscribe("t").await;
    subscriber.stall.on.store(true, Ordering::Relaxed);
    publisher.send(&publish("t", b"m")).await;
    within_real_time("the write to wait", subscriber.stall.waited.notified()).await;
    advance(ms(2_990)).await;
    subscriber.assert_open("2.99 s, a write waiting").await;
    advance(ms(20)).await;
    settle().await;
    // The DISCONNECT cannot be written either: it gets a bounded time, then the close.
    assert_eq!(subscriber.seen(), Seen::Nothing);
    advance(ms(1_010)).await;
    settle().await;
    assert_eq!(subscriber.seen(), Seen::Closed);
    let ended = within_real_time("the connection task's end", subscriber.task)
        .await
        .unwrap();
    assert!(
        matches!(ended, Err(ConnectionError::KeepAliveTimeout)),
        "{ended:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_trickle_of_bytes_that_never_completes_a_packet_does_not_keep_a_connection_alive() {
    // [MQTT-3.1.2-24] speaks of Control Packets, not bytes: one byte a second of a packet
    // that is never finished is not a packet. The packet deadline is set far off so that
    // only the keep-alive (5 s: closed after 7.5 s) can close it.
    let _hold = hold_clock();
    let config = BrokerConfig {
        packet_timeout_secs: 600,
        ..Default::default()
    };
    let broker = Broker::start(config);
    let mut client = Client::connect(&broker, V311, "trickle", 5, None).await;
    let bytes = publish_bytes(V311, 100);
    for (second, byte) in bytes.iter().take(7).enumerate() {
        advance(ms(1000)).await;
        client.send_bytes(std::slice::from_ref(byte)).await;
        client
            .assert_open(&format!("byte {}, {} s", second + 1, second + 1))
            .await;
    }
    advance(ms(490)).await;
    client.assert_open("7.49 s after CONNECT").await;
    advance(ms(20)).await;
    let ended = client.assert_closed(None).await;
    assert!(
        matches!(ended, Err(ConnectionError::KeepAliveTimeout)),
        "{ended:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_partial_packet_on_a_connection_with_keep_alive_0_is_closed_after_packet_timeout_secs() {
    // Keep-alive 0 turns the keep-alive off [MQTT-3.1.2-23]; it does not allow holding half
    // a packet (and up to max_packet_size of the broker's memory) for ever.
    let _hold = hold_clock();
    let broker = Broker::start(BrokerConfig::default()); // packet_timeout_secs = 30
    let mut client = Client::connect(&broker, V5, "holder", 0, None).await;
    advance(ms(100_000)).await;
    client
        .assert_open("keep-alive 0: no deadline while nothing is held")
        .await;

    let bytes = publish_bytes(V5, 1 << 19);
    client.send_bytes(&bytes[..1000]).await;
    // More of the same packet does not move its deadline.
    for i in 1..=2 {
        advance(ms(10_000)).await;
        client.send_bytes(&bytes[i * 1000..(i + 1) * 1000]).await;
        client
            .assert_open(&format!("{} s into the packet", i * 10))
            .await;
    }
    advance(ms(9_990)).await;
    client.assert_open("29.99 s into the packet").await;
    advance(ms(20)).await;
    let ended = client
        .assert_closed(Some(ReasonCode::KeepAliveTimeout))
        .await;
    assert!(
        matches!(ended, Err(ConnectionError::PacketTimeout)),
        "{ended:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_packet_finished_in_time_clears_the_packet_deadline_and_the_next_one_gets_its_own() {
    let _hold = hold_clock();
    let config = BrokerConfig {
        packet_timeout_secs: 10,
        ..Default::default()
    };
    let broker = Broker::start(config);
    let mut client = Client::connect(&broker, V311, "slow", 0, None).await;
    client.subscribe("t").await;
    let bytes = publish_bytes(V311, 100);
    // One packet taking 8 s, ending with the first bytes of the next one.
    client.send_bytes(&bytes[..50]).await;
    advance(ms(8_000)).await;
    let mut rest = bytes[50..].to_vec();
    rest.extend_from_slice(&bytes[..10]);
    client.send_bytes(&rest).await;
    match client.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.payload.len(), 100),
        other => panic!("expected the message back, got {other:?}"),
    }
    // The second packet began at 8 s: its deadline is 18 s, not 10 s.
    advance(ms(9_990)).await;
    client.assert_open("9.99 s into the second packet").await;
    advance(ms(20)).await;
    let ended = client.assert_closed(None).await;
    assert!(
        matches!(ended, Err(ConnectionError::PacketTimeout)),
        "{ended:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_sending_pingreq_in_time_stays_connected() {
    // [MQTT-3.1.2-24] the other way round: a packet within 1.5 x the keep-alive, here a
    // PINGREQ every 2.9 s for a keep-alive of 2 s, keeps the connection for as long as it
    // goes on; the last one arrives in two chunks a second apart, and counts from its last
    // byte.
    let _hold = hold_clock();
    let broker = Broker::start(BrokerConfig::default());
    for version in [V311, V5] {
        let mut client = Client::connect(&broker, version, "pinger", 2, None).await;
        for _ in 0..10 {
            advance(ms(2_900)).await;
            client.send(&Packet::PingReq).await;
            assert_eq!(client.recv().await, Some(Packet::PingResp));
        }
        advance(ms(1_500)).await;
        client.send_bytes(&[0xC0]).await;
        advance(ms(1_000)).await;
        client.assert_open("2.5 s after the previous PINGREQ").await;
        client.send_bytes(&[0x00]).await;
        assert_eq!(client.recv().await, Some(Packet::PingResp));
        advance(ms(2_990)).await;
        client
            .assert_open("2.99 s after the last PINGREQ's last byte")
            .await;
        advance(ms(20)).await;
        let disconnect = (version == V5).then_some(ReasonCode::KeepAliveTimeout);
        let ended = client.assert_closed(disconnect).await;
        assert!(
            matches!(ended, Err(ConnectionError::KeepAliveTimeout)),
            "{ended:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_no_connect_within_connect_timeout_secs_is_closed() {
    // [MQTT-3.1.0-1]: the first packet must be CONNECT; the server does not wait for ever.
    let _hold = hold_clock();
    let broker = Broker::start(BrokerConfig::default()); // connect_timeout_secs = 10
    let mut client = Client::open(&broker, V311).await;
    advance(ms(9_990)).await;
    client.assert_open("9.99 s without CONNECT").await;
    advance(ms(20)).await;
    let ended = client.assert_closed(None).await;
    assert!(
        matches!(ended, Err(ConnectionError::ConnectTimeout)),
        "{ended:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connect_begun_and_not_finished_within_packet_timeout_secs_is_closed() {
    let _hold = hold_clock();
    let config = BrokerConfig {
        connect_timeout_secs: 60,
        packet_timeout_secs: 5,
        ..Default::default()
    };
    let broker = Broker::start(config);
    let mut client = Client::open(&broker, V5).await;
    advance(ms(20_000)).await;
    client.assert_open("20 s, nothing sent").await;
    let mut connect = BytesMut::new();
    Packet::Connect(Box::new(Connect::new(V5, "half", true)))
        .encode(V5, &mut connect)
        .unwrap();
    client.send_bytes(&connect[..5]).await;
    advance(ms(4_990)).await;
    client.assert_open("4.99 s into CONNECT").await;
    advance(ms(20)).await;
    // Before CONNECT there is no DISCONNECT to send: the connection is just closed.
    let ended = client.assert_closed(None).await;
    assert!(
        matches!(ended, Err(ConnectionError::PacketTimeout)),
        "{ended:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn garbage_right_behind_connect_in_its_chunk_never_puts_a_disconnect_before_the_connack() {
    // [MQTT-3.2.0-1]: the first packet the server sends is CONNACK. A protocol error in the
    // bytes that followed CONNECT may be found before the engine has answered it; the
    // connection then closes without a DISCONNECT rather than send one first.
    let _hold = hold_clock();
    let broker = Broker::start(BrokerConfig::default());
    let mut client = Client::open(&broker, V5).await;
    let mut chunk = BytesMut::new();
    Packet::Connect(Box::new(Connect::new(V5, "garbage", true)))
        .encode(V5, &mut chunk)
        .unwrap();
    chunk.extend_from_slice(&[0x00, 0x00]); // packet type 0 is reserved: malformed
    client.send_bytes(&chunk).await;
    let mut first = true;
    while let Some(p) = client.recv().await {
        if first {
            assert!(matches!(p, Packet::ConnAck(_)), "first packet {p:?}");
            first = false;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_with_keep_alive_0_that_stops_reading_is_closed_after_packet_timeout_secs() {
    // Keep-alive 0 cannot close it, so a write that waits has a deadline of its own: the
    // socket, the batch and the connection's permit are not held for ever.
    let _hold = hold_clock();
    let config = BrokerConfig {
        packet_timeout_secs: 5,
        ..Default::default()
    };
    let broker = Broker::start(config);
    let publisher = Client::connect(&broker, V5, "publisher", 0, None).await;
    let mut subscriber = Client::connect(&broker, V5, "stalled", 0, None).await;
    subscriber.subscribe("t").await;
    subscriber.stall.on.store(true, Ordering::Relaxed);
    publisher.send(&publish("t", b"m")).await;
    within_real_time("the write to wait", subscriber.stall.waited.notified()).await;
    advance(ms(4_990)).await;
    subscriber.assert_open("4.99 s, a write waiting").await;
    advance(ms(20)).await;
    settle().await;
    let ended = within_real_time("the connection task's end", subscriber.task)
        .await
        .unwrap();
    assert!(
        matches!(ended, Err(ConnectionError::WriteTimeout)),
        "{ended:?}"
    );
}
