//! Operator actions: a user's connections on every node, disconnecting a
//! user or one connection, and removing a user from a channel,
//! cluster-wide. A disconnected
//! client is closed with code 4100 and the operator's reason (Socket.IO:
//! an error event with the reason, then a disconnect), and reported as
//! `connection_closed` with reason `kicked`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiPath, ErrorBody, check_channel, check_uid, errors};
use crate::app::App;
use crate::cluster::wire::KickTarget;
use crate::ids::ConnId;
use crate::outbox::{CLOSE_KICKED, CloseReason};

/// What a client is told when no reason is given.
const DEFAULT_REASON: &str = "disconnected by the server's operator";

/// A WebSocket close reason must fit in 123 bytes.
const MAX_REASON_BYTES: usize = 120;

/// One connection of a user.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConnectionInfo {
    /// Channels it is subscribed to (on another node: those it is a
    /// member of).
    channels: Vec<String>,
    /// The connection id (16 hex digits).
    id: String,
    /// The node it is on.
    node: String,
    /// Its front end: `hotsock`, `socketio`, `sc` or `sgc`.
    protocol: String,
}

/// `GET /api/users/{uid}/connections`.
#[derive(Serialize, ToSchema)]
pub(super) struct UserConnections {
    /// This node's first, each part sorted by id.
    connections: Vec<ConnectionInfo>,
    uid: String,
}

/// `GET /api/users/{uid}/connections`.
#[utoipa::path(
    get,
    path = "/api/users/{uid}/connections",
    operation_id = "listUserConnections",
    tag = "admin",
    summary = "A user's connections on every node",
    description = "Each with its `id`, `node`, `protocol` and `channels` (on this node every channel it is subscribed to; on another node the channels it is a member of). Sorted: this node's first.",
    security(("apiKey" = [])),
    params(("uid" = String, Path, description = "The user id", example = "alice")),
    responses(
        (status = 200, description = "The connections", body = UserConnections,
            example = json!({"connections": [{"channels": ["presence.room"], "id": "8c1f2a3b00000001", "node": "node-a", "protocol": "hotsock"}], "uid": "alice"})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_USER_ID`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody)
    )
)]
pub(super) async fn connections(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
) -> Result<Json<UserConnections>, ApiError> {
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
    Ok(Json(UserConnections {
        connections: list,
        uid,
    }))
}

/// The optional body of the disconnect routes: none, `{}`, or a reason.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DisconnectBody {
    /// What the client is told: 1-120 bytes without control characters
    /// (each route says its default).
    #[schema(min_length = 1, max_length = 120)]
    reason: Option<String>,
}

/// A user's connections were closed.
#[derive(Serialize, ToSchema)]
pub(super) struct UserDisconnected {
    /// Connections closed on the node asked; the other nodes close theirs.
    connections: usize,
    /// What the clients were told.
    reason: String,
    uid: String,
}

/// A connection was closed.
#[derive(Serialize, ToSchema)]
pub(super) struct ConnectionDisconnected {
    /// The connection id.
    connection: String,
    /// It was on the node asked (otherwise the other nodes were told).
    here: bool,
    /// What the client was told.
    reason: String,
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
#[utoipa::path(
    post,
    path = "/api/users/{uid}/disconnect",
    operation_id = "disconnectUser",
    tag = "admin",
    summary = "Disconnect every connection of a user",
    description = "On every node. Each client is closed with code 4100 and `reason` (default \"disconnected by the server's operator\"; at most 120 bytes), a Socket.IO client gets an error event with it and a disconnect; backends see `connection_closed` with reason `kicked`. The body is optional. `connections` counts those closed on the node asked. Clients may reconnect: revoke their tokens to keep them out.",
    security(("apiKey" = [])),
    params(("uid" = String, Path, description = "The user id", example = "alice")),
    request_body(content = Option<DisconnectBody>, description = "Optional", example = json!({"reason": "account suspended"})),
    responses(
        (status = 202, description = "Closed", body = UserDisconnected,
            example = json!({"connections": 2, "reason": "account suspended", "uid": "alice"})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_USER_ID`, `INVALID_BODY`, `INVALID_REASON`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody)
    )
)]
pub(super) async fn disconnect_user(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<UserDisconnected>), ApiError> {
    check_uid(&uid)?;
    let reason = close_reason(&body)?;
    let here = app.presence.close_user(&uid, &reason);
    app.cluster
        .forward_kick(KickTarget::User(uid.clone()), &reason.reason);
    Ok((
        StatusCode::ACCEPTED,
        Json(UserDisconnected {
            connections: here,
            reason: reason.reason.into_owned(),
            uid,
        }),
    ))
}

/// `POST /api/connections/{id}/disconnect`.
#[utoipa::path(
    post,
    path = "/api/connections/{id}/disconnect",
    operation_id = "disconnectConnection",
    tag = "admin",
    summary = "Disconnect one connection",
    description = "Wherever it is in the cluster, as `POST /api/users/{uid}/disconnect` does for one connection. `here`: it was on the node asked (otherwise the other nodes were told). The body is optional.",
    security(("apiKey" = [])),
    params(("id" = String, Path, description = "The connection id (16 hex digits, as in `GET /api/users/{uid}/connections`)", example = "8c1f2a3b00000001")),
    request_body(content = Option<DisconnectBody>, description = "Optional", example = json!({"reason": "duplicate session"})),
    responses(
        (status = 202, description = "Closed, or the other nodes were told", body = ConnectionDisconnected,
            example = json!({"connection": "8c1f2a3b00000001", "here": true, "reason": "duplicate session"})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_CONNECTION_ID`, `INVALID_BODY`, `INVALID_REASON`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody)
    )
)]
pub(super) async fn disconnect_connection(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ConnectionDisconnected>), ApiError> {
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
        Json(ConnectionDisconnected {
            connection: id,
            here,
            reason: reason.reason.into_owned(),
        }),
    ))
}

/// The keys accepted after a reload.
#[derive(Serialize, ToSchema)]
pub(super) struct ReloadedKeys {
    /// What is accepted now, for people.
    keys: String,
}

/// What a removed client is told when no reason is given.
const DEFAULT_REMOVAL_REASON: &str = "removed from the channel by the server's operator";

/// A user was removed from a channel.
#[derive(Serialize, ToSchema)]
pub(super) struct MemberRemoved {
    /// The channel.
    channel: String,
    /// Connections told on the node asked; the other nodes tell theirs.
    connections: usize,
    /// What the clients were told.
    reason: String,
    uid: String,
}

/// `POST /api/channels/{name}/members/{uid}/remove`: ends the user's
/// subscriptions to the channel on every node; the connections stay open.
#[utoipa::path(
    post,
    path = "/api/channels/{name}/members/{uid}/remove",
    operation_id = "removeMember",
    tag = "admin",
    summary = "Remove a user from a channel",
    description = "On every node, each of the user's connections subscribed to the channel is unsubscribed as if it had asked, and told `reason` (default \"removed from the channel by the server's operator\"; at most 120 bytes) in its protocol: Hotsock `hotsock.unsubscribed` with `data.reason`, Socket.IO `CHANNEL_UNSUBSCRIBED` with `reason`, SocketCluster `#kickOut` with the reason as `message` (for the channel and its `presence>` feed), sgc `channel@member@remove` with `reason: \"kicked\"` and the reason as `message.text`. The others see the member leave. The connections stay open, and may subscribe again if the channel policy allows: change their grants to keep them out. Presence leases are the backend's and are not ended. The body is optional. `connections` counts those told on the node asked.",
    security(("apiKey" = [])),
    params(
        ("name" = String, Path, description = "The channel", example = "presence.room"),
        ("uid" = String, Path, description = "The user id", example = "alice")
    ),
    request_body(content = Option<DisconnectBody>, description = "Optional", example = json!({"reason": "off-topic"})),
    responses(
        (status = 202, description = "Removed", body = MemberRemoved,
            example = json!({"channel": "presence.room", "connections": 1, "reason": "off-topic", "uid": "alice"})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_CHANNEL_NAME`, `INVALID_USER_ID`, `INVALID_BODY`, `INVALID_REASON`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody)
    )
)]
pub(super) async fn remove_member(
    State(app): State<App>,
    ApiPath((channel, uid)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<MemberRemoved>), ApiError> {
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
        Json(MemberRemoved {
            channel,
            connections: here,
            reason,
            uid,
        }),
    ))
}

/// `POST /api/admin/reload-keys`: reads the JWT key files again, as
/// SIGHUP does, on the node asked.
#[utoipa::path(
    post,
    path = "/api/admin/reload-keys",
    operation_id = "reloadKeys",
    tag = "admin",
    summary = "Reload the JWT keys",
    description = "Reads `--jwt-secrets-file` and the `--jwt-public-key` files again on the node asked (as SIGHUP does), for key rotation without a restart; `keys` says what is accepted now. The body is ignored. 422 if a file is unreadable or invalid: the previous keys stay in use.",
    security(("apiKey" = [])),
    responses(
        (status = 200, description = "Reloaded", body = ReloadedKeys,
            example = json!({"keys": "HS256/HS384/HS512 (secret), HS* by kid (2026-11, 2026-12)"})),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`KEYS_NOT_RELOADED`: a key file is unreadable or invalid; the previous keys stay in use", body = ErrorBody)
    )
)]
pub(super) async fn reload_keys(State(app): State<App>) -> Result<Json<ReloadedKeys>, ApiError> {
    match app.verifier.reload() {
        Ok(keys) => {
            tracing::info!(%keys, "reloaded the JWT keys (HTTP API)");
            Ok(Json(ReloadedKeys { keys }))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "KEYS_NOT_RELOADED",
            format!("{e}; the previous keys stay in use"),
        )),
    }
}
