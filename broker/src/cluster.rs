//! What a cluster adds to a node, seen from the broker: the claim of a session before its
//! CONNECT reaches the engine.
//!
//! In cluster mode a session is owned by one node at a time. A CONNECT first claims its
//! client id through [`SessionClaims`], on the connection's own task (it waits on the
//! network: the node that held the session is told to close its connection and let go,
//! then the ownership is written). What the claim read comes to the engine with the
//! CONNECT, and the engine hands it to its store ([`crate::Store::install`]), which restores
//! the session from it. Without a cluster there are no claims and none of this runs.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use protocol::ReasonCode;

/// What a claim found: the store's own record of the session, opaque to the engine, handed
/// back to the store that made the claims.
pub struct Claim(pub Box<dyn Any + Send>);

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claim(..)")
    }
}

/// What a store made of a claim ([`crate::Store::install`]).
#[derive(Debug)]
pub enum Installed {
    /// This node holds the session already: the engine keeps what it has.
    Held,
    /// There is no session to resume: the engine starts a new one (or none, for clean start).
    Fresh,
    /// The session as stored elsewhere, now in this store (its queue by
    /// [`crate::Store::load_queue`]), to be restored by the engine; and, if its queue could
    /// not hold all that waited for it, the stream sequence the rest is read back from.
    Restored(Box<crate::store::RecoveredSession>, Option<u64>),
}

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Claims sessions for this node (cluster mode).
pub trait SessionClaims: Send + Sync + std::fmt::Debug {
    /// Makes this node the owner of `client_id`'s session (any other node that holds it
    /// closes its connection and lets go first). With `owner` (sessions belong to their
    /// user: `Authenticator::enforces_ownership`), a session another user made is refused
    /// before its holder is disturbed. `Err` is the CONNACK's refusal: not authorized, the
    /// cluster cannot be reached, or the claim lost every race.
    fn claim<'a>(
        &'a self,
        client_id: &'a str,
        owner: Option<Option<&'a str>>,
    ) -> BoxFuture<'a, Result<Claim, ReasonCode>>;
}
