//! `GET /api/admin/stats`: this node's live counters for the dashboard,
//! read from the same atomics `/metrics` reports (so the page needs no
//! access to `/metrics`, which may be on its own `--metrics-listen`).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ErrorBody, errors};
use crate::app::App;

/// Open connections of one front end on this node.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProtocolConnections {
    /// Connections open now.
    open: u64,
    /// The front end's protocol, e.g. `hotsock`.
    protocol: &'static str,
}

/// `GET /api/admin/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NodeStats {
    /// Per front end, the compiled-in ones first.
    connections: Vec<ProtocolConnections>,
    /// Channel messages delivered to connections on this node since it
    /// started (`rollcall_deliveries_total`).
    deliveries: u64,
    /// Channel messages published on this node since it started
    /// (`rollcall_messages_published_total`).
    messages_published: u64,
    /// This node's cluster id.
    node: String,
    /// Seconds since the server started.
    uptime_seconds: f64,
}

/// `GET /api/admin/stats`.
#[utoipa::path(
    get,
    path = "/api/admin/stats",
    operation_id = "nodeStats",
    tag = "admin",
    summary = "This node's live counters",
    description = "What the dashboard charts: open connections per front end on the node asked, and since it started the channel messages published on it (`messages_published`, as `rollcall_messages_published_total`) and the deliveries of channel messages to its connections (`deliveries`, `rollcall_deliveries_total`). Rates are the difference of two reads over the time between them.",
    security(("apiKey" = [])),
    responses(
        (status = 200, description = "The counters", body = NodeStats,
            example = json!({"connections": [{"open": 12, "protocol": "hotsock"}, {"open": 3, "protocol": "socketio"}], "deliveries": 9045, "messages_published": 1520, "node": "node-a", "uptime_seconds": 3600.5})),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody)
    )
)]
pub(super) async fn node_stats(State(app): State<App>) -> Json<NodeStats> {
    let observed = app.metrics.snapshot();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    Json(NodeStats {
        connections: observed
            .protocols
            .iter()
            .map(|p| ProtocolConnections {
                open: p.open(),
                protocol: p.protocol,
            })
            .collect(),
        deliveries: app.metrics.live().deliveries(),
        messages_published: observed.published,
        node: app.cluster.node_id(),
        uptime_seconds: (now - app.metrics.started()).max(0.0),
    })
}
