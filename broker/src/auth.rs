//! The place for authentication and topic authorization on the connection path.
//!
//! The engine asks an [`Authenticator`] at CONNECT, at each PUBLISH and at each
//! SUBSCRIBE. The default, [`AllowAll`], allows everything; a deployment facing the open web
//! supplies its own (user database, JWT, ACL file) without touching the engine.

use std::fmt::Debug;
use std::net::SocketAddr;

use protocol::{Connect, ReasonCode, TopicFilter, TopicName};

/// Which transport a connection came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over WebSocket.
    WebSocket,
}

/// What the transport knows about a connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// TCP or WebSocket.
    pub transport: Transport,
}

/// Decides who may connect, publish and subscribe.
pub trait Authenticator: Send + Sync + Debug {
    /// May this CONNECT proceed? An error is sent in CONNACK (folded into a 3.1.1 return
    /// code), e.g. [`ReasonCode::BadUserNameOrPassword`] or [`ReasonCode::NotAuthorized`].
    fn authenticate(&self, connect: &Connect, info: &ConnectionInfo) -> Result<(), ReasonCode>;
    /// May this client publish to `topic`?
    fn authorize_publish(&self, client_id: &str, username: Option<&str>, topic: &TopicName)
        -> bool;
    /// May this client subscribe to `filter`?
    fn authorize_subscribe(
        &self,
        client_id: &str,
        username: Option<&str>,
        filter: &TopicFilter,
    ) -> bool;
}

/// Allows every client everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _: &Connect, _: &ConnectionInfo) -> Result<(), ReasonCode> {
        Ok(())
    }
    fn authorize_publish(&self, _: &str, _: Option<&str>, _: &TopicName) -> bool {
        true
    }
    fn authorize_subscribe(&self, _: &str, _: Option<&str>, _: &TopicFilter) -> bool {
        true
    }
}
