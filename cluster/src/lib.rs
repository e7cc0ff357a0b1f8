//! Cluster mode: several bridges act as one broker through a NATS JetStream cluster.
//!
//! Each bridge keeps its own broker engine, as on one machine; what the bridges share goes
//! through NATS, an existing distributed engine built for this, rather than replication of
//! our own. Without a `[cluster]` table (or `--cluster URL`) none of this runs and the
//! embedded store is the whole story.
//!
//! # How a message travels
//! The engine hands every message a client publishes to its store ([`broker::Op::Route`])
//! instead of routing it; the [`ClusterStore`] sends it to NATS before the batch's
//! acknowledgements go out:
//! - QoS 1 and 2, and every retained message, into the stream `MQTT_MSGS` (subjects
//!   `mqtt.m.<topic>`), awaiting JetStream's acknowledgement: the PUBACK / PUBREC goes out
//!   only once the message is stored (replicated, with `replicas` above 1);
//! - QoS 0 on the core subject `mqtt.q.<topic>`, fire and forget, as QoS 0 is;
//! - retained messages also into `MQTT_RETAINED`, one message per subject (latest wins, an
//!   empty payload deletes), which a node reads when it starts.
//!
//! Every node, the publisher's included, reads both back ([`feed`]) and routes them to its
//! own sessions through its engine, so all nodes route the stream in one order and a message
//! reaches each session once, whichever node holds it.
//!
//! # Layout
//! - [`config`]: the `[cluster]` table.
//! - [`subject`]: MQTT topics as NATS subjects, reversibly.
//! - [`envelope`]: a message as one NATS message body.
//! - [`nats`]: the connection and the JetStream streams.
//! - [`store`]: the [`ClusterStore`], the engine's store in cluster mode.
//! - [`feed`]: the tasks that bring the cluster's messages to this node's engine.
//! - [`record`]: a session as the sessions bucket keeps it.
//! - [`claims`]: who owns a session; the claim at CONNECT, the release.
//! - [`adoption`]: sessions of dead nodes, taken by live ones.
//! - [`directory`]: every session of the cluster, for the dashboard and the API.
//! - [`groups`]: shared subscriptions across nodes.
//! - [`guard`]: what a node does while NATS cannot be reached.

pub mod adoption;
pub mod claims;
pub mod config;
pub mod directory;
pub mod envelope;
pub mod feed;
pub mod groups;
pub mod guard;
pub mod nats;
pub mod record;
pub mod store;
pub mod subject;

pub use claims::Claims;
pub use config::ClusterConfig;
pub use directory::Directory;
pub use nats::{ClusterError, Nats};
pub use store::ClusterStore;
