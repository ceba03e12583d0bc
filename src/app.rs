//! The state shared by every route: the presence core, the token verifier,
//! settings and the shutdown signal.

use std::sync::Arc;

use crate::auth::{JwtVerifier, SingleUseGuard};
use crate::presence::Presence;
use crate::shutdown::ShutdownController;
use crate::transport::TransportConfig;

/// Each front end's shared transport settings, by protocol name.
pub type ProtocolTransports = Vec<(&'static str, Arc<TransportConfig>)>;

/// Settings every front end shares, resolved once at start (each front
/// end keeps its own: see [`crate::frontends`]).
#[derive(Clone, Debug)]
pub struct Settings {
    /// WebSocket transport limits and timings.
    pub transport: TransportConfig,
    /// Bearer key of the HTTP API.
    pub api_key: String,
    /// [`Settings::transport`] with each front end's counters, one copy
    /// per front end shared by its connections.
    pub transports: Arc<std::sync::Mutex<ProtocolTransports>>,
}

impl Settings {
    /// The transport settings of `protocol`'s connections, with its
    /// counters: one shared copy (a connection holds a pointer, where a
    /// copy of its own was 128 bytes).
    pub fn transport_for(&self, protocol: &'static str) -> Arc<TransportConfig> {
        let mut cache = self.transports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, transport)) = cache.iter().find(|(p, _)| *p == protocol) {
            return transport.clone();
        }
        let mut transport = self.transport.clone();
        if let Some(metrics) = &transport.metrics {
            transport.counters = metrics.live().protocol(protocol);
        }
        let transport = Arc::new(transport);
        cache.push((protocol, transport.clone()));
        transport
    }
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
