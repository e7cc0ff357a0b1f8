//! What a node does while NATS cannot be reached: it acknowledges nothing it cannot store.
//!
//! Every write waits for JetStream, so a batch written while NATS is away fails and its
//! connections are closed without their acknowledgements (see `store`). The guard does the
//! rest: once the connection to NATS has been down for [`GRACE`] (the client reconnects on
//! its own meanwhile, to any server of the cluster), new CONNECTs are refused with 0x88
//! Server unavailable (3.1.1: return code 3) and every open connection is closed (5.0:
//! DISCONNECT 0x9C Use another server, since a DISCONNECT cannot carry 0x88). When NATS is
//! back, CONNECTs are let in again.

use std::time::Duration;

use async_nats::connection::State;
use broker::Broker;
use protocol::ReasonCode;

use crate::nats::Nats;

/// How long NATS may be away before clients are turned away: longer than a reconnect to
/// another server of the cluster takes.
pub const GRACE: Duration = Duration::from_secs(2);

/// How often the connection's state is read.
const EVERY: Duration = Duration::from_millis(200);

/// Watches the connection to NATS until the broker stops.
pub async fn run(nats: Nats, broker: Broker) {
    let mut down_since: Option<tokio::time::Instant> = None;
    let mut available = true;
    loop {
        tokio::time::sleep(EVERY).await;
        let connected = nats.client.connection_state() == State::Connected;
        let now = tokio::time::Instant::now();
        if connected {
            down_since = None;
            if !available {
                available = true;
                broker.set_available(true);
                tracing::info!("NATS reachable again; accepting connections");
            }
            continue;
        }
        let since = *down_since.get_or_insert(now);
        if available && now.duration_since(since) >= GRACE {
            available = false;
            broker.set_available(false);
            match broker.disconnect_all(ReasonCode::UseAnotherServer).await {
                Ok(n) => tracing::error!(
                    closed = n,
                    "NATS unreachable: connections closed, new ones refused (server unavailable) until it is back"
                ),
                Err(_) => return,
            }
        }
    }
}
