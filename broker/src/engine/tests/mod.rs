//! The engine's rules, driven without sockets or sleeping: a [`World`] holds an engine on
//! a store, its clock, and connections as channels.

#![allow(clippy::unwrap_used)]

mod access;
mod backpressure;
mod delivery;
mod limits;
mod recovery;
mod retained;
mod sessions;
mod sys;
mod wills;

use super::*;
use crate::auth::{AllowAll, Identity, Transport};
use crate::command::{connection_channel_capacity, CloseReason};
use bytes::Bytes;
use protocol::{Properties, Subscription, SubscriptionOptions, TopicFilter};

struct Conn {
    id: ConnId,
    /// The flow signals the engine was given for this connection.
    flow: Arc<crate::command::Flow>,
    rx: mpsc::Receiver<Outgoing>,
    buf: std::collections::VecDeque<Packet>,
    closed: bool,
}

impl Conn {
    fn fill(&mut self) {
        while let Ok(item) = self.rx.try_recv() {
            match item {
                Outgoing::Packet(p) => self.buf.push_back(*p),
                Outgoing::Close => self.closed = true,
            }
        }
    }

    /// Everything sent to this connection since the last call.
    fn packets(&mut self) -> Vec<Packet> {
        self.fill();
        self.buf.drain(..).collect()
    }

    /// The first SUBACK, leaving what came after it.
    fn suback(&mut self) -> SubAck {
        self.fill();
        let i = self
            .buf
            .iter()
            .position(|p| matches!(p, Packet::SubAck(_)))
            .unwrap();
        let rest = self.buf.split_off(i + 1);
        let ack = self.buf.pop_back();
        self.buf = rest;
        match ack {
            Some(Packet::SubAck(a)) => a,
            _ => unreachable!(),
        }
    }

    fn publishes(&mut self) -> Vec<Publish> {
        self.packets()
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }
}

struct World {
    engine: Engine,
    now: Instant,
    next_conn: u64,
}

fn world_on(config: BrokerConfig, store: Box<dyn Store>) -> World {
    world_with(config, Arc::new(AllowAll), store)
}

/// A world whose engine asks `auth` (and has recovered what `store` holds).
fn world_with(config: BrokerConfig, auth: Arc<dyn Authenticator>, store: Box<dyn Store>) -> World {
    let mut engine = Engine::new(Arc::new(config), auth, store);
    let now = Instant::now();
    engine.recover(now).unwrap();
    World {
        engine,
        now,
        next_conn: 0,
    }
}

fn world(config: BrokerConfig) -> World {
    World {
        engine: Engine::new(
            Arc::new(config),
            Arc::new(AllowAll),
            Box::new(crate::store::MemoryStore::new()),
        ),
        now: Instant::now(),
        next_conn: 0,
    }
}

impl World {
    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.engine.tick(self.now);
        self.engine.flush(self.now);
    }

    fn connect_with(&mut self, connect: Connect) -> (Conn, ConnAck) {
        let identity = Identity {
            username: connect.username.as_deref().map(Arc::from),
            ..Identity::default()
        };
        self.connect_as(connect, identity)
    }

    /// Connects with the identity an authenticator would have proved.
    fn connect_as(&mut self, connect: Connect, identity: Identity) -> (Conn, ConnAck) {
        let (tx, rx) = mpsc::channel(connection_channel_capacity(&self.engine.config));
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let info = ConnectionInfo::new(None, Transport::Tcp);
        let flow = Arc::new(crate::command::Flow::default());
        self.engine.handle(
            Command::Connect {
                conn: id,
                connect: Box::new(connect),
                info: Box::new(info),
                identity: Box::new(identity),
                tx,
                flow: Arc::clone(&flow),
                claim: None,
            },
            self.now,
        );
        self.engine.flush(self.now);
        let mut conn = Conn {
            id,
            flow,
            rx,
            buf: Default::default(),
            closed: false,
        };
        let ack = match conn.rx.try_recv() {
            Ok(Outgoing::Packet(p)) if matches!(*p, Packet::ConnAck(_)) => match *p {
                Packet::ConnAck(ack) => ack,
                _ => unreachable!(),
            },
            other => panic!("expected CONNACK, got {other:?}"),
        };
        (conn, ack)
    }

    fn connect(
        &mut self,
        v: ProtocolVersion,
        id: &str,
        clean: bool,
        expiry: Option<u32>,
    ) -> (Conn, ConnAck) {
        let mut c = Connect::new(v, id, clean);
        c.properties.session_expiry_interval = expiry;
        self.connect_with(c)
    }

    fn packet(&mut self, conn: &Conn, packet: Packet) {
        self.engine.handle(
            Command::Packet {
                conn: conn.id,
                packet,
            },
            self.now,
        );
        self.engine.flush(self.now);
    }

    fn subscribe(&mut self, conn: &mut Conn, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_with(
            conn,
            filter,
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
            None,
        )
    }

    fn subscribe_with(
        &mut self,
        conn: &mut Conn,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> SubAck {
        let mut properties = Properties::default();
        properties.subscription_identifiers.extend(id);
        let sub = Subscribe {
            packet_id: pid(100),
            subscriptions: vec![Subscription {
                filter: TopicFilter::new(filter).unwrap(),
                options,
            }],
            properties,
        };
        self.packet(conn, Packet::Subscribe(sub));
        conn.suback()
    }

    fn publish(
        &mut self,
        conn: &Conn,
        topic: &str,
        payload: &'static [u8],
        qos: QoS,
        retain: bool,
        id: u16,
    ) {
        let mut p = Publish::new(TopicName::new(topic).unwrap(), Bytes::from_static(payload));
        p.qos = qos;
        p.retain = retain;
        p.packet_id = (qos != QoS::AtMostOnce).then(|| pid(id));
        self.packet(conn, Packet::Publish(p));
    }

    fn close(&mut self, conn: &Conn) {
        self.engine.handle(
            Command::Closed {
                conn: conn.id,
                reason: CloseReason::NetworkLoss,
            },
            self.now,
        );
        self.engine.flush(self.now);
    }

    fn disconnect(&mut self, conn: &Conn) {
        self.packet(conn, Packet::Disconnect(Disconnect::default()));
    }
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn payloads(ps: &[Publish]) -> Vec<&[u8]> {
    ps.iter().map(|p| &p.payload[..]).collect()
}

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn connect_with_will(
    w: &mut World,
    v: ProtocolVersion,
    id: &str,
    delay: Option<u32>,
    expiry: Option<u32>,
) -> Conn {
    let mut c = Connect::new(v, id, false);
    c.properties.session_expiry_interval = expiry;
    let mut will = Will {
        topic: TopicName::new("will/t").unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    };
    will.properties.will_delay_interval = delay;
    c.will = Some(will);
    w.connect_with(c).0
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn sqlite(dir: &std::path::Path) -> Box<dyn Store> {
    Box::new(crate::store::SqliteStore::open(dir, crate::store::Durability::Always).unwrap())
}

// ----- limits (issue: no input can crash, stall or exhaust the broker) -----

fn deep(levels: usize) -> String {
    vec!["a"; levels].join("/")
}
