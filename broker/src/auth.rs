//! Who a connection is, and what it may touch: the authentication and authorization hook.
//!
//! Two questions, asked in two places:
//! - **Who is this?** [`Authenticator::authenticate`] checks a CONNECT's credentials on the
//!   connection's own task, before the engine hears of the CONNECT, because proving a
//!   password is deliberately slow (argon2) and the engine thread must never wait on it.
//!   The answer is an [`Identity`], which the engine keeps with the session.
//! - **May it?** [`Authenticator::authorize`] is asked on the engine thread for each
//!   PUBLISH, each SUBSCRIBE filter, each will, and each message routed to a subscription
//!   or sent as retained, so it must be quick and must not block.
//!
//! The default, [`AllowAll`], allows everything and owns nothing: today's behaviour for a
//! bridge with no authentication configured. The bridge's file- and token-based
//! authenticator lives in the bridge; the engine only ever sees this trait.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use protocol::{Connect, ReasonCode, TopicFilter};

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
    /// The client's address: the socket's peer, or the address a trusted reverse proxy
    /// forwarded (`X-Forwarded-For` / `Forwarded`).
    pub peer: Option<SocketAddr>,
    /// TCP or WebSocket.
    pub transport: Transport,
    /// Whether the connection is encrypted (MQTT over TLS, or WSS).
    pub secure: bool,
    /// The common name (CN) of the client certificate the TLS layer verified against the
    /// configured CA, if the client presented one.
    pub certificate_name: Option<String>,
}

impl ConnectionInfo {
    /// A plain (unencrypted) connection from `peer`, with no client certificate.
    pub fn new(peer: Option<SocketAddr>, transport: Transport) -> ConnectionInfo {
        ConnectionInfo {
            peer,
            transport,
            secure: false,
            certificate_name: None,
        }
    }
}

/// Who a connection is, as its credentials proved: the answer of
/// [`Authenticator::authenticate`], kept with the session for every later decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user the connection acts as. With authentication configured, the proven name (a
    /// password file's user, a token's subject, a certificate's CN), `None` for an
    /// anonymous client; with none configured ([`AllowAll`]), the user name the client sent.
    pub username: Option<Arc<str>>,
    /// When the credentials stop being valid (a token's `exp`). The connection is closed
    /// then: 5.0 with DISCONNECT 0x87 Not authorized.
    pub expires_at: Option<SystemTime>,
    /// Topic grants carried by the credentials themselves (a token's `acl` claim). They
    /// narrow, never widen, what the authorizer's own rules allow; `None`: no narrowing.
    pub grants: Option<Arc<Grants>>,
}

/// Topic grants carried by a credential: what it allows, as filters. A topic no filter of
/// the list matches is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Topics the connection may publish to.
    pub publish: Vec<TopicFilter>,
    /// Topics the connection may subscribe to and receive.
    pub subscribe: Vec<TopicFilter>,
}

/// What a connection wants to do, on which topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// Publish to this topic name (a PUBLISH, or a will at CONNECT).
    Publish(&'a str),
    /// Subscribe with this filter. Allowed when at least one topic the filter matches may be
    /// read: a wildcard filter that only overlaps the readable topics is granted, and what
    /// it must not see is held back on delivery by [`Access::Read`], as mosquitto does.
    Subscribe(&'a str),
    /// Receive a message published to this topic name: routed to a subscription, or sent
    /// as a retained message on subscribe.
    Read(&'a str),
}

/// What [`Authenticator::authenticate`] returns: boxed, so the trait stays object safe.
pub type Authentication<'a> =
    Pin<Box<dyn Future<Output = Result<Identity, ReasonCode>> + Send + 'a>>;

/// Decides who may connect, publish, subscribe and receive.
pub trait Authenticator: Send + Sync + Debug {
    /// Checks a CONNECT's credentials (user name, password, the client certificate in
    /// `info`). Called on the connection's task before the engine sees the CONNECT; slow
    /// work belongs on a blocking thread, bounded by the implementation. An error is sent
    /// in CONNACK (folded into a 3.1.1 return code) and the connection closed, e.g.
    /// [`ReasonCode::BadUserNameOrPassword`] (3.1.1: 4) or [`ReasonCode::NotAuthorized`]
    /// (3.1.1: 5).
    fn authenticate<'a>(
        &'a self,
        connect: &'a Connect,
        info: &'a ConnectionInfo,
    ) -> Authentication<'a>;

    /// May `who`, connected as `client_id`, do `access`? Asked on the engine thread, for
    /// every message delivered among others: must be quick and must not block.
    fn authorize(&self, who: &Identity, client_id: &str, access: Access<'_>) -> bool;

    /// Whether a session belongs to the user who created it: when true, a CONNECT whose
    /// [`Identity::username`] differs from the session's cannot resume it, take it over or
    /// discard it (CONNACK 0x87 / 3.1.1: 5). True for any real authentication; false only
    /// when user names are unproven ([`AllowAll`]), where comparing them would refuse
    /// honest clients and stop no one.
    fn enforces_ownership(&self) -> bool {
        true
    }
}

/// Allows every client everything; user names are taken as sent, and own nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate<'a>(
        &'a self,
        connect: &'a Connect,
        _: &'a ConnectionInfo,
    ) -> Authentication<'a> {
        let identity = Identity {
            username: connect.username.as_deref().map(Arc::from),
            ..Identity::default()
        };
        Box::pin(std::future::ready(Ok(identity)))
    }

    fn authorize(&self, _: &Identity, _: &str, _: Access<'_>) -> bool {
        true
    }

    fn enforces_ownership(&self) -> bool {
        false
    }
}
