//! Operator actions: a user's connections on every node, and
//! disconnecting a user or one connection, cluster-wide. A disconnected
//! client is closed with code 4100 and the operator's reason (Socket.IO:
//! an error event with the reason, then a disconnect), and reported as
//! `connection_closed` with reason `kicked`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, ApiPath, check_channel, check_uid};
use crate::app::App;
use crate::cluster::wire::KickTarget;
use crate::ids::ConnId;
use crate::outbox::{CLOSE_KICKED, CloseReason};

/// What a client is told when no reason is given.
const DEFAULT_REASON: &str = "disconnected by the server's operator";

/// A WebSocket close reason must fit in 123 bytes.
const MAX_REASON_BYTES: usize = 120;

/// One connection of a user.
#[derive(Debug, Serialize)]
struct ConnectionInfo {
    id: String,
    node: String,
    protocol: String,
    /// Channels it is subscribed to (on another node: those it is a
    /// member of).
    channels: Vec<String>,
}

/// `GET /api/users/{uid}/connections`.
pub(super) async fn connections(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
) -> Result<Response, ApiError> {
    check_uid(&uid)?;
    let node = app.cluster.node_id();
    let mut list: Vec<ConnectionInfo> = app
        .presence
        .user_connection_details(&uid)
        .into_iter()
        .map(|(id, protocol, channels)| ConnectionInfo {
            id: id.to_string(),
            node: node.clone(),
            protocol: protocol.to_string(),
            channels,
        })
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    list.extend(
        app.cluster
            .remote_connections_of(&uid)
            .await
            .into_iter()
            .map(|c| ConnectionInfo {
                id: c.id,
                node: c.node,
                protocol: c.protocol,
                channels: c.channels,
            }),
    );
    Ok(Json(json!({"uid": uid, "connections": list})).into_response())
}

/// The optional body of the disconnect routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    reason: Option<String>,
}

/// The close reason from an optional JSON body (none, or `{}`: the
/// default).
fn close_reason(body: &Bytes) -> Result<CloseReason, ApiError> {
    Ok(CloseReason::new(
        CLOSE_KICKED,
        operator_reason(body, DEFAULT_REASON)?,
    ))
}

/// The reason the client is told, from an optional JSON body
/// `{"reason": …}` (none, or `{}`: `default`).
fn operator_reason(body: &Bytes, default: &str) -> Result<String, ApiError> {
    let parsed: DisconnectBody = match body.iter().all(u8::is_ascii_whitespace) {
        true => DisconnectBody::default(),
        false => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                "INVALID_BODY",
                format!("{e}; send nothing, or {{\"reason\": \"what the client is told\"}}"),
            )
        })?,
    };
    let reason = parsed.reason.unwrap_or_else(|| default.to_string());
    if reason.is_empty() || reason.len() > MAX_REASON_BYTES || reason.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "INVALID_REASON",
            format!(
                "reason must be 1 to {MAX_REASON_BYTES} bytes without control characters (it travels in the WebSocket close frame)"
            ),
        ));
    }
    Ok(reason)
}

/// `POST /api/users/{uid}/disconnect`.
pub(super) async fn disconnect_user(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_uid(&uid)?;
    let reason = close_reason(&body)?;
    let here = app.presence.close_user(&uid, &reason);
    app.cluster
        .forward_kick(KickTarget::User(uid.clone()), &reason.reason);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"uid": uid, "connections": here, "reason": reason.reason})),
    )
        .into_response())
}

/// `POST /api/connections/{id}/disconnect`.
pub(super) async fn disconnect_connection(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(conn) = ConnId::parse(&id).filter(|_| id.len() == 16) else {
        return Err(ApiError::bad_request(
            "INVALID_CONNECTION_ID",
            format!(
                "{id:?} is not a connection id (16 hex digits, as in GET /api/users/{{uid}}/connections)"
            ),
        ));
    };
    let reason = close_reason(&body)?;
    let here = app.presence.close_connection(conn, &reason);
    if !here {
        app.cluster
            .forward_kick(KickTarget::Connection(id.clone()), &reason.reason);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"connection": id, "here": here, "reason": reason.reason})),
    )
        .into_response())
}

/// What a removed client is told when no reason is given.
const DEFAULT_REMOVAL_REASON: &str = "removed from the channel by the server's operator";

/// `POST /api/channels/{name}/members/{uid}/remove`: ends the user's
/// subscriptions to the channel on every node; the connections stay open.
pub(super) async fn remove_member(
    State(app): State<App>,
    ApiPath((channel, uid)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_channel(&channel)?;
    check_uid(&uid)?;
    let reason = operator_reason(&body, DEFAULT_REMOVAL_REASON)?;
    let here = app.presence.remove_from_channel(&uid, &channel, &reason);
    app.cluster.forward_kick(
        KickTarget::Membership {
            user: uid.clone(),
            channel: channel.clone(),
        },
        &reason,
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"channel": channel, "uid": uid, "connections": here, "reason": reason})),
    )
        .into_response())
}

/// `POST /api/admin/reload-keys`: reads the JWT key files again, as
/// SIGHUP does, on the node asked.
pub(super) async fn reload_keys(State(app): State<App>) -> Result<Response, ApiError> {
    match app.verifier.reload() {
        Ok(keys) => {
            tracing::info!(%keys, "reloaded the JWT keys (HTTP API)");
            Ok(Json(json!({"keys": keys})).into_response())
        }
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "KEYS_NOT_RELOADED",
            format!("{e}; the previous keys stay in use"),
        )),
    }
}
