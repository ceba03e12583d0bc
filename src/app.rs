//! The state shared by every route: the presence core, the token verifier,
//! settings and the shutdown signal.

use std::sync::Arc;

use crate::auth::{JwtVerifier, SingleUseGuard};
use crate::presence::Presence;
use crate::shutdown::ShutdownController;
use crate::transport::TransportConfig;

/// Settings resolved once at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// WebSocket transport limits and timings.
    pub transport: TransportConfig,
    /// Hotsock adapter settings.
    #[cfg(feature = "hotsock")]
    pub hotsock: crate::hotsock::HotsockConfig,
    /// SocketCluster adapter settings.
    #[cfg(feature = "sc")]
    pub sc: crate::sc::ScConfig,
    /// Socket.IO adapter settings.
    #[cfg(feature = "socketio")]
    pub socketio: crate::socketio::SocketIoConfig,
    /// sgc adapter settings.
    #[cfg(feature = "sgc")]
    pub sgc: crate::sgc::SgcConfig,
    /// Bearer key of the HTTP API.
    pub api_key: String,
    /// The front ends served (`--frontends`), by name.
    pub frontends: Vec<&'static str>,
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
