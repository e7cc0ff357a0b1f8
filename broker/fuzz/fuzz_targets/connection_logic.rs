//! The body of the `connection` fuzz target, shared with
//! `broker/tests/connection_fuzz_corpus.rs` (which includes this file with `#[path]`), so the
//! ordinary test run replays the corpus and the crash reproducers through the same code.
//!
//! One input is a script for up to [`SLOTS`] concurrent connections to a real [`Broker`]
//! (engine thread, in-memory store), each served by [`Broker::serve`] over an in-memory
//! transport. Input layout:
//! - byte 0 chooses the configuration (see [`config`]);
//! - then operations, each one byte `op`: bits 6-7 name the slot (`% SLOTS`), bits 0-5 the
//!   kind:
//!   - `0..=47` send: a little-endian `u16` length follows, then that many bytes (clamped to
//!     what is left), delivered as one chunk. A slot with no connection opens one first, so
//!     a slot used again after a close reconnects (takeover, session resumption, wills);
//!   - `48..=51` close: the client ends its byte stream (half-close) and keeps reading;
//!   - `52..=55` reset: the transport fails (an `io::Error` item), then both ends are dropped;
//!   - `56..=59` stall: the client stops reading (or starts again): backpressure;
//!   - `60..=63` deaf: the client drops its reading end; the broker's next write fails.
//!
//! After every operation the harness lets the connection tasks run, then waits for the
//! engine to handle and send everything they sent so far (a `Broker::admin` round trip that
//! flushes is a barrier: the engine's command queue is FIFO), then collects what the broker
//! wrote. At the end every connection is closed and must end; a fresh connection must still
//! get CONNACK and PINGRESP (a dead or stuck engine fails here); then the broker is dropped
//! and its engine thread must stop. Any broken expectation panics, which the fuzzer reports as a crash.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use broker::{Broker, BrokerConfig, ConnectionInfo, OverflowPolicy, Transport};
use bytes::Bytes;
use futures_util::{Sink, Stream};
use protocol::{Decoder, Packet, ProtocolVersion};
use tokio::sync::mpsc;

/// Concurrent connections one input drives.
pub(crate) const SLOTS: usize = 3;

/// Connections one input may open in all (reconnections included).
pub(crate) const MAX_OPENED: usize = 12;

/// Bytes of output a client buffers before the broker's writes wait (when not drained).
const PIPE_CAPACITY: usize = 64 * 1024;

/// How long anything that should happen at once may take before the input fails. Only a
/// broken broker ever waits this long.
const GENEROUS: Duration = Duration::from_secs(20);

/// The maximum packet sizes byte 0 chooses from.
pub(crate) const MAX_PACKET_SIZES: [u32; 4] = [256, 2048, 16 * 1024, 64 * 1024];

/// Operation kinds (bits 0-5 of an operation byte).
pub(crate) const OP_SEND: u8 = 0;
pub(crate) const OP_CLOSE: u8 = 48;
pub(crate) const OP_RESET: u8 = 52;
pub(crate) const OP_STALL: u8 = 56;
pub(crate) const OP_DEAF: u8 = 60;

/// The broker configuration byte 0 selects: bits 0-1 the maximum packet size, bit 2 maximum
/// QoS 1 instead of 2, bit 3 no retained messages, bit 4 QoS 0 queued offline, bits 5-6 the
/// in-flight windows (2, 8, 32, 256), bit 7 drop the newest on overflow. Queues, retained
/// messages, sessions and subscriptions are kept small so their limits are reached.
pub(crate) fn config(byte: u8) -> BrokerConfig {
    let window = [2u16, 8, 32, 256][usize::from((byte >> 5) & 0x03)];
    BrokerConfig {
        max_packet_size: MAX_PACKET_SIZES[usize::from(byte & 0x03)],
        receive_maximum: window,
        max_inflight: window,
        max_queued_messages: 64,
        max_queued_bytes: 256 * 1024,
        overflow_policy: if byte & 0x80 == 0 {
            OverflowPolicy::DropOldest
        } else {
            OverflowPolicy::DropNewest
        },
        queue_qos0: byte & 0x10 != 0,
        maximum_qos: if byte & 0x04 == 0 { 2 } else { 1 },
        retain_available: byte & 0x08 == 0,
        topic_alias_maximum: 4,
        max_session_expiry: Some(600),
        max_keep_alive: Some(600),
        connect_timeout_secs: 5,
        packet_timeout_secs: 5,
        max_connections: 64,
        max_connections_per_address: 64,
        max_sessions: 64,
        max_subscriptions_per_session: 64,
        max_retained_messages: 64,
        max_retained_bytes: 1024 * 1024,
        engine_queue: 64,
        ..BrokerConfig::default()
    }
}

/// The most memory one input may use at its peak, in bytes, beyond what was allocated
/// before it: a constant for the runtime, engine and connection tasks, a share for each
/// connection's buffers (decoder, output batch, channels) sized by the maximum packet size,
/// and a factor on the input's length (what the clients sent may be held as messages,
/// retained messages, queued copies and their encodings).
#[allow(dead_code)] // used by the fuzz target (which counts allocations), not by the tests
pub(crate) fn memory_bound(data: &[u8]) -> usize {
    let max_packet = data
        .first()
        .map_or(MAX_PACKET_SIZES[0], |&b| config(b).max_packet_size) as usize;
    1024 * 1024 + (MAX_OPENED + 1) * 2 * max_packet + 32 * data.len()
}

/// What one input did, for the corpus tests.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Outcome {
    /// Connections opened by the script.
    pub(crate) opened: usize,
    /// Bytes the broker wrote to the script's connections.
    pub(crate) bytes_out: usize,
    /// Whole packets the broker wrote that the harness decoded (5.0 or 3.1.1 as announced).
    pub(crate) packets_out: usize,
}

thread_local! {
    /// One current-thread runtime per thread, built once and reused by every input.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build the tokio runtime: {e}"));
}

/// Runs one input; panics on any broken expectation.
pub(crate) fn run(data: &[u8]) -> Outcome {
    let Some((&cfg, script)) = data.split_first() else {
        return Outcome::default();
    };
    RUNTIME.with(|rt| rt.block_on(run_script(config(cfg), script)))
}

async fn run_script(config: BrokerConfig, mut script: &[u8]) -> Outcome {
    let broker = Broker::start(config);
    let mut events = broker.events();
    let mut slots: [Option<Client>; SLOTS] = Default::default();
    let mut finished: Vec<Client> = Vec::new();
    let mut outcome = Outcome::default();

    while let Some((&op, rest)) = script.split_first() {
        script = rest;
        let slot = usize::from(op >> 6) % SLOTS;
        match op & 0x3F {
            kind if kind < OP_CLOSE => {
                let (len, rest) = match script {
                    [lo, hi, rest @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), rest),
                    _ => (script.len(), &[][..]),
                };
                let (chunk, rest) = rest.split_at(len.min(rest.len()));
                script = rest;
                if slots[slot].is_none() && outcome.opened < MAX_OPENED {
                    slots[slot] = Some(Client::open(&broker));
                    outcome.opened += 1;
                }
                if let Some(client) = &slots[slot] {
                    client.send(Ok(Bytes::copy_from_slice(chunk)));
                }
            }
            kind if kind < OP_RESET => {
                if let Some(mut client) = slots[slot].take() {
                    client.input = None;
                    finished.push(client);
                }
            }
            kind if kind < OP_STALL => {
                if let Some(mut client) = slots[slot].take() {
                    client.send(Err(io::Error::from(io::ErrorKind::ConnectionReset)));
                    client.input = None;
                    client.drop_reader();
                    finished.push(client);
                }
            }
            kind if kind < OP_DEAF => {
                if let Some(client) = &mut slots[slot] {
                    client.stalled = !client.stalled;
                }
            }
            _ => {
                if let Some(client) = &mut slots[slot] {
                    client.drop_reader();
                }
            }
        }
        settle(&broker).await;
        for client in slots.iter_mut().flatten().chain(finished.iter_mut()) {
            client.collect(&mut outcome);
        }
    }

    // Every connection ends once its client closes and reads.
    for mut client in slots.into_iter().flatten().chain(finished) {
        client.input = None;
        client.stalled = false;
        let ended = tokio::time::timeout(GENEROUS, async {
            loop {
                client.collect(&mut outcome);
                let (wait, closed) = {
                    let mut pipe = client.pipe();
                    (pipe.wait_for_output(), pipe.closed)
                };
                if closed {
                    // Nothing more is written: the task is ending.
                    let _ = (&mut client.task).await;
                    break;
                }
                tokio::select! {
                    _ = &mut client.task => break,
                    () = wait => {}
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "a connection did not end after its client closed"
        );
        client.collect(&mut outcome);
    }

    check_alive(&broker).await;

    // The engine thread stops once the last handle is gone (the event sender it owns closes).
    drop(broker);
    let stopped = tokio::time::timeout(GENEROUS, async {
        loop {
            match events.recv().await {
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            }
        }
    })
    .await;
    assert!(
        stopped.is_ok(),
        "the engine did not stop after the broker was dropped"
    );
    outcome
}

/// Lets the connection tasks take their input, waits until the engine has handled what they
/// sent, then lets the tasks write what the engine answered.
async fn settle(broker: &Broker) {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    // A request is handled after every command sent before it (one FIFO queue), and the
    // engine writes and sends what those produced before it answers a request.
    let answered = tokio::time::timeout(GENEROUS, broker.stats()).await;
    match answered {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => panic!("the engine has stopped"),
        Err(_) => panic!("the engine did not answer within {GENEROUS:?}"),
    }
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// A fresh connection gets CONNACK, and PINGRESP if accepted: the engine is alive.
async fn check_alive(broker: &Broker) {
    let client = Client::open(broker);
    let mut bytes = Vec::new();
    Packet::Connect(Box::new(protocol::Connect::new(
        ProtocolVersion::V311,
        "",
        true,
    )))
    .encode(ProtocolVersion::V311, &mut bytes)
    .unwrap_or_else(|e| panic!("cannot encode CONNECT: {e}"));
    Packet::PingReq
        .encode(ProtocolVersion::V311, &mut bytes)
        .unwrap_or_else(|e| panic!("cannot encode PINGREQ: {e}"));
    client.send(Ok(Bytes::from(bytes)));
    let mut decoder = Decoder::with_version(ProtocolVersion::V311, u32::MAX);
    let answered = tokio::time::timeout(GENEROUS, async {
        let mut accepted = None;
        loop {
            let chunks = client.pipe().take();
            for chunk in chunks {
                let mut input = &chunk[..];
                while let Some(packet) = decoder
                    .decode_from_server(&mut input)
                    .unwrap_or_else(|e| panic!("the broker sent a malformed packet: {e}"))
                {
                    match (packet, accepted) {
                        (Packet::ConnAck(ack), None) => {
                            accepted = Some(ack.reason == protocol::ReasonCode::Success);
                            if accepted == Some(false) {
                                return;
                            }
                        }
                        (Packet::PingResp, Some(true)) => return,
                        (other, _) => panic!("unexpected answer to CONNECT, PINGREQ: {other:?}"),
                    }
                }
            }
            let (wait, closed) = {
                let mut pipe = client.pipe();
                (
                    pipe.wait_for_output(),
                    pipe.closed && pipe.chunks.is_empty(),
                )
            };
            assert!(
                !closed,
                "the broker closed a fresh connection without answering"
            );
            wait.await;
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "the broker did not answer CONNECT and PINGREQ within {GENEROUS:?}"
    );
}

/// One client connection: its byte stream into the broker, the broker's output, the task.
struct Client {
    /// The client's side of the byte stream; `None` once it closed.
    input: Option<mpsc::UnboundedSender<io::Result<Bytes>>>,
    output: Arc<Mutex<Pipe>>,
    task: tokio::task::JoinHandle<()>,
    /// Not reading: the broker's writes wait once [`PIPE_CAPACITY`] bytes are unread.
    stalled: bool,
    /// Decodes the output as the client would, once the version is known.
    decoder: Option<Decoder>,
    /// Output not yet decoded because the version was not known.
    early: Vec<u8>,
}

impl Client {
    fn open(broker: &Broker) -> Client {
        // Unbounded: the script's own length bounds what the client sends.
        let (input, rx) = mpsc::unbounded_channel();
        let output = Arc::new(Mutex::new(Pipe::default()));
        let transport = MemoryTransport {
            input: rx,
            output: output.clone(),
        };
        let broker = broker.clone();
        let task = tokio::spawn(async move {
            let info = ConnectionInfo::new(None, Transport::Tcp);
            // How a connection ends (protocol errors included) is the broker's business.
            let _ = broker.serve(transport, info).await;
        });
        Client {
            input: Some(input),
            output,
            task,
            stalled: false,
            decoder: None,
            early: Vec::new(),
        }
    }

    fn send(&self, item: io::Result<Bytes>) {
        if let Some(input) = &self.input {
            // The connection may have ended already: then nobody reads, as with a socket.
            let _ = input.send(item);
        }
    }

    fn pipe(&self) -> MutexGuard<'_, Pipe> {
        lock(&self.output)
    }

    fn drop_reader(&mut self) {
        let mut pipe = self.pipe();
        pipe.reader_gone = true;
        pipe.chunks.clear();
        pipe.buffered = 0;
        if let Some(w) = pipe.writer.take() {
            w.wake();
        }
    }

    /// Reads what the broker wrote (unless stalled) and checks it decodes as MQTT.
    fn collect(&mut self, outcome: &mut Outcome) {
        if self.stalled {
            return;
        }
        let chunks = self.pipe().take();
        for chunk in chunks {
            outcome.bytes_out += chunk.len();
            self.early.extend_from_slice(&chunk);
        }
        if self.decoder.is_none() {
            // The first byte the broker sends is CONNACK's; a 5.0 CONNACK has a properties
            // length after its two bytes, which 3.1.1's never has (remaining length 2).
            match self.early.as_slice() {
                [0x20, 0x02, ..] => {
                    self.decoder = Some(Decoder::with_version(ProtocolVersion::V311, u32::MAX))
                }
                [0x20, _, ..] => {
                    self.decoder = Some(Decoder::with_version(ProtocolVersion::V5, u32::MAX))
                }
                [] | [0x20] => return,
                other => panic!("the broker's first bytes are not CONNACK: {other:02X?}"),
            }
        }
        if let Some(decoder) = &mut self.decoder {
            let mut input = &self.early[..];
            loop {
                match decoder.decode_from_server(&mut input) {
                    Ok(Some(_)) => outcome.packets_out += 1,
                    Ok(None) => break,
                    Err(e) => panic!("the broker sent a malformed packet: {e}"),
                }
            }
            self.early.clear();
        }
    }
}

/// The broker's output towards one client.
#[derive(Debug, Default)]
struct Pipe {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    /// The client no longer reads: writes fail.
    reader_gone: bool,
    /// The broker has closed its side.
    closed: bool,
    /// The connection task, waiting for room.
    writer: Option<Waker>,
    /// The harness, waiting for output.
    reader: Option<Waker>,
}

impl Pipe {
    fn take(&mut self) -> VecDeque<Bytes> {
        self.buffered = 0;
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        std::mem::take(&mut self.chunks)
    }

    /// Resolves once the broker writes or closes (at once, if it already has).
    fn wait_for_output(&mut self) -> impl std::future::Future<Output = ()> {
        let ready = !self.chunks.is_empty() || self.closed;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        if !ready {
            self.reader = Some(waker_for(tx));
        }
        async move {
            if !ready {
                let _ = rx.await;
            }
        }
    }
}

/// A waker that completes `tx` (so the harness can wait on the pipe from async code).
fn waker_for(tx: tokio::sync::oneshot::Sender<()>) -> Waker {
    struct Notify(Mutex<Option<tokio::sync::oneshot::Sender<()>>>);
    impl std::task::Wake for Notify {
        fn wake(self: Arc<Self>) {
            if let Some(tx) = lock(&self.0).take() {
                let _ = tx.send(());
            }
        }
    }
    Waker::from(Arc::new(Notify(Mutex::new(Some(tx)))))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The broker's side of a client connection: a `Stream` of the client's chunks and a `Sink`
/// into the client's [`Pipe`].
struct MemoryTransport {
    input: mpsc::UnboundedReceiver<io::Result<Bytes>>,
    output: Arc<Mutex<Pipe>>,
}

impl Stream for MemoryTransport {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.input.poll_recv(cx)
    }
}

impl Sink<Bytes> for MemoryTransport {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut pipe = lock(&self.output);
        if pipe.reader_gone || pipe.closed {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        } else if pipe.buffered >= PIPE_CAPACITY {
            pipe.writer = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Bytes) -> io::Result<()> {
        let mut pipe = lock(&self.output);
        if pipe.reader_gone || pipe.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        pipe.buffered += item.len();
        pipe.chunks.push_back(item);
        if let Some(w) = pipe.reader.take() {
            w.wake();
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut pipe = lock(&self.output);
        pipe.closed = true;
        if let Some(w) = pipe.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        let mut pipe = lock(&self.output);
        pipe.closed = true;
        if let Some(w) = pipe.reader.take() {
            w.wake();
        }
    }
}

/// Builds inputs for [`run`] (the seed corpus is written with it).
#[allow(dead_code)] // used by the corpus tests, not by the fuzz target
#[derive(Debug, Clone)]
pub(crate) struct Script(pub(crate) Vec<u8>);

#[allow(dead_code)]
impl Script {
    /// A script on the configuration chosen by `config_byte`.
    pub(crate) fn new(config_byte: u8) -> Script {
        Script(vec![config_byte])
    }

    fn op(mut self, slot: usize, kind: u8) -> Script {
        self.0.push(((slot as u8) << 6) | kind);
        self
    }

    /// `bytes` from the client in `slot`, in chunks of at most `u16::MAX` bytes.
    pub(crate) fn send(mut self, slot: usize, bytes: &[u8]) -> Script {
        for chunk in bytes.chunks(usize::from(u16::MAX)) {
            self = self.op(slot, OP_SEND);
            self.0
                .extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            self.0.extend_from_slice(chunk);
        }
        self
    }

    /// `bytes` in chunks of `size` bytes.
    pub(crate) fn send_in_chunks(mut self, slot: usize, bytes: &[u8], size: usize) -> Script {
        for chunk in bytes.chunks(size.max(1)) {
            self = self.send(slot, chunk);
        }
        self
    }

    /// The packets, encoded for `version`, as one chunk.
    pub(crate) fn packets(
        self,
        slot: usize,
        version: ProtocolVersion,
        packets: &[Packet],
    ) -> Script {
        let mut bytes = Vec::new();
        for p in packets {
            p.encode(version, &mut bytes)
                .unwrap_or_else(|e| panic!("cannot encode {p:?}: {e}"));
        }
        self.send(slot, &bytes)
    }

    pub(crate) fn close(self, slot: usize) -> Script {
        self.op(slot, OP_CLOSE)
    }

    pub(crate) fn reset(self, slot: usize) -> Script {
        self.op(slot, OP_RESET)
    }

    pub(crate) fn stall(self, slot: usize) -> Script {
        self.op(slot, OP_STALL)
    }

    pub(crate) fn deaf(self, slot: usize) -> Script {
        self.op(slot, OP_DEAF)
    }
}
