//! The state every HTTP handler can reach: the broker, the shutdown tracker, the MQTT
//! connection limits, the access rules and, in cluster mode, the cluster's sessions. A leaf
//! module, so the router, the API and the WebSocket endpoint each depend on it and not on one
//! another.

use std::sync::Arc;

use broker::Broker;

use crate::guard::Guard;
use crate::limits::ConnectionLimiter;
use crate::shutdown::WeakTracker;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// The one broker engine, shared with the TCP listener.
    pub(crate) broker: Broker,
    /// Upgraded into every WebSocket connection task, so shutdown can wait for it.
    pub(crate) tracker: WeakTracker,
    /// The MQTT connection limits, shared with the TCP listener: a WebSocket upgrade takes
    /// its permit before it is answered.
    pub(crate) limits: ConnectionLimiter,
    /// Who may reach what: `Host`, `Origin`, the API's tokens, trusted proxies.
    pub(crate) guard: Arc<Guard>,
    /// In cluster mode, the sessions of the other nodes, which the API lists with this
    /// node's own; `None` on a single bridge.
    pub(crate) cluster: Option<ClusterSessions>,
}

/// What the API needs to list the whole cluster's sessions.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSessions {
    /// This node's name (`[cluster] node`): the `node` of the engine's own sessions.
    pub(crate) node: Arc<str>,
    /// Every session record of the cluster, kept up to date by its watch task (spawned with
    /// the broker): eventually consistent, within the watch's delay.
    pub(crate) directory: cluster::Directory,
}

/// A request extension the HTTP listener puts on every request that came over TLS (HTTPS,
/// and WSS at `/mqtt`): its absence means plain HTTP. The WebSocket endpoint passes it on to
/// the broker ([`broker::ConnectionInfo::secure`], [`broker::ConnectionInfo::certificate_name`]),
/// and the own-origin checks build `https://` + `Host` from it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsConnection {
    /// The common name (CN) of the client certificate verified against `[tls] client_ca_file`,
    /// if the client presented one.
    pub(crate) certificate_name: Option<String>,
}
