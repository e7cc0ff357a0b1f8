//! The numbers that name sessions and connections inside the broker.
//!
//! A leaf module: the session table, the subscription index, the engine and the connection
//! tasks all name sessions and connections, and none of them should have to import another
//! to do it.

/// A session's number, stable for its life (client ids are looked up once, at CONNECT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(pub(crate) u64);

/// A network connection's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(pub(crate) u64);
