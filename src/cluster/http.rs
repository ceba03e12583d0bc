//! `GET /readyz`: whether this node sees the whole cluster.
//!
//! ```text
//! GET /readyz -> 200 {"status":"ready","cluster":{…ClusterStats…}}
//!             -> 503 {"status":"not ready","reason":"…","cluster":{…}}
//!             -> 503 {"status":"draining","reason":"…","cluster":{…}} (shutting down)
//! ```
//!
//! A node whose bus is down still serves its own clients, but a load
//! balancer should prefer the nodes that answer 200 here. `/healthz` stays
//! 200 while the process runs.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{BusState, ClusterStats};
use crate::app::App;

/// The route.
pub fn routes() -> Router<App> {
    Router::new().route("/readyz", get(readyz))
}

/// Why a node is not ready, in words, or None if it is.
pub fn not_ready_reason(stats: &ClusterStats) -> Option<String> {
    if stats.ready {
        return None;
    }
    let error = stats
        .last_error
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    Some(match stats.bus_state {
        BusState::Connecting => format!(
            "connecting to the cluster bus {}{error}; serving local clients only until it answers",
            stats.bus_target
        ),
        BusState::Disconnected => format!(
            "the cluster bus {} is unreachable{error}; serving local clients only and retrying",
            stats.bus_target
        ),
        BusState::Stalled => format!(
            "the cluster bus {} stopped delivering this node's heartbeats; serving local clients only",
            stats.bus_target
        ),
        BusState::Left => "this node has left the cluster (shutting down)".to_string(),
        BusState::Connected | BusState::Standalone => {
            "the cluster bus is connected but this node has not heard its own heartbeat yet"
                .to_string()
        }
    })
}

async fn readyz(State(app): State<App>) -> Response {
    let stats = app.cluster_stats();
    if app.shutdown.draining.is_draining() {
        let reason = "this node is shutting down: it still serves its clients for --drain-grace, then closes them; send new clients to other nodes";
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "reason": reason, "cluster": stats})),
        )
            .into_response();
    }
    match not_ready_reason(&stats) {
        None => (
            StatusCode::OK,
            Json(json!({"status": "ready", "cluster": stats})),
        )
            .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": reason, "cluster": stats})),
        )
            .into_response(),
    }
}
