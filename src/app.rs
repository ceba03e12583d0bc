//! The state shared by every route: the presence core, the token verifier,
//! settings and the shutdown signal.

use std::sync::Arc;

use crate::auth::{JwtVerifier, SingleUseGuard};
use crate::presence::Presence;
use crate::shutdown::ShutdownController;
use crate::transport::TransportConfig;

/// Settings every front end shares, resolved once at start (each front
/// end keeps its own: see [`crate::frontends`]).
#[derive(Clone, Debug)]
pub struct Settings {
    /// WebSocket transport limits and timings.
    pub transport: TransportConfig,
    /// Bearer key of the HTTP API.
    pub api_key: String,
}

/// Shared state, cheap to clone (axum router state).
#[derive(Clone)]
pub struct App {
    /// The presence core.
    pub presence: Presence,
    /// Verifies client tokens.
    pub verifier: JwtVerifier,
    /// Remembers the `jti` of `singleUse` tokens already used.
    pub single_use: Arc<SingleUseGuard>,
    /// Settings.
    pub config: Arc<Settings>,
    /// Server-wide shutdown.
    pub shutdown: Arc<ShutdownController>,
    /// This node's cluster membership (standalone with `--bus memory`).
    pub cluster: crate::cluster::Cluster,
    /// Presence services: leases, user presence, privacy, webhooks.
    pub services: crate::services::Services,
    /// Presence counters for `/metrics`.
    pub metrics: Arc<crate::metrics::MetricsObserver>,
    /// Connection caps and their refusal counts.
    pub admission: crate::listener::Admission,
}

impl App {
    /// The cluster's figures. A standalone node runs no replication, which
    /// is what counts connections in a cluster: its own are counted here.
    pub fn cluster_stats(&self) -> crate::cluster::ClusterStats {
        let mut stats = self.cluster.stats();
        if stats.bus_state == crate::cluster::BusState::Standalone {
            stats.cluster_connections = self.presence.stats().connections;
        }
        stats
    }
}
